/* CPU training kernels (every neuron family), float32: a forward that also saves h = u - theta
 * at every step, and the BPTT backward through the whole T loop, for the autograd path of the
 * "cpu" backend. Built as: the generated family code (cpu_source.py: snn_step and snn_bwd per
 * variant, the latter written once for all families in family.bptt_step, the same step the CUDA
 * kernels run), then cpu_neuron_loops.h (snn_run), then this file:
 *
 *   u_t = charge(v_{t-1}, x_t);  h_t = u_t - theta (multi-spike: u_t / theta - 1);  s_t = fire(u_t);
 *   v_t = reset(u_t, s_t), walked backwards t = T-1..0 carrying gv = dL/dv_t. The surrogate's
 * derivative is the macro SURROGATE_GRAD(x, alpha), defined by the build (one library per
 * surrogate, see cpu_train.py).
 *
 * Layout as in cpu_neuron.c: x is [T, M] (sequence) or [M] (static), spikes/h [T, M], v [M];
 * neuron i uses theta[(i / inner) % n_theta]. A block of SNN_TRAIN_BLOCK neurons runs all T
 * steps with its state in local arrays; blocks are shared out over OpenMP threads. The variant
 * and the input kind are compile-time constants in each instantiation (always_inline), so the
 * inner loops are branch-free and gcc vectorises them. The forward's spikes and v equal the
 * reference's bit for bit; the backward agrees with autograd on the reference to float rounding.
 */
#ifndef SURROGATE_GRAD
#error "define SURROGATE_GRAD(x, alpha): the surrogate's derivative at x = v - theta"
#endif
#ifndef SNN_TRAIN_BLOCK
#define SNN_TRAIN_BLOCK 1024
#endif

static inline __attribute__((always_inline)) float
load_theta(const float *theta, int64_t n_theta, int64_t inner, int64_t i)
{
    return n_theta == 1 ? theta[0] : theta[(i / inner) % n_theta];
}

/* One backward step for n neurons: from dL/ds_t (gst, may be NULL) and the carried
 * gv = dL/dv_t, give dL/dx_t (into gxt, or added into gxs for a static input), dL/dv_{t-1}
 * (into gv) and add the threshold's part into gt. */
static inline __attribute__((always_inline)) void
bwd_run(const int variant, const float *restrict ht, const float *restrict gst,
        float *restrict gxt, float *restrict gxs, float *restrict gv, float *restrict gt,
        const float *restrict th, int64_t n, const float *restrict P, float keep, float alpha,
        const int is_static)
{
    for (int64_t j = 0; j < n; j++) {
        const snn_bwd_out o = snn_bwd(variant, ht[j], th[j], gst ? gst[j] : 0.0f, gv[j], gt[j], keep, alpha, P);
        gv[j] = o.gv;
        gt[j] = o.gt;
        if (is_static)
            gxs[j] += o.gx;
        else if (gxt)
            gxt[j] = o.gx;
    }
}

static inline __attribute__((always_inline)) void
init_state(float *restrict v, float *restrict th, const float *restrict v_in,
           const float *restrict theta, int64_t n_theta, int64_t inner, int64_t i0, int64_t n,
           float v_init)
{
    for (int64_t j = 0; j < n; j++) {
        th[j] = load_theta(theta, n_theta, inner, i0 + j);
        v[j] = v_in ? v_in[i0 + j] : 0.0f + v_init * th[j];
    }
}

static inline __attribute__((always_inline)) void
init_grads(float *restrict gv, float *restrict gt, float *restrict gxs, float *restrict th,
           const float *restrict gvo, const float *restrict theta, int64_t n_theta,
           int64_t inner, int64_t i0, int64_t n)
{
    for (int64_t j = 0; j < n; j++) {
        th[j] = load_theta(theta, n_theta, inner, i0 + j);
        gv[j] = gvo ? gvo[i0 + j] : 0.0f;
        gt[j] = 0.0f;
        gxs[j] = 0.0f;
    }
}

static inline __attribute__((always_inline)) void
finish_grads(float *restrict gx, float *restrict gv_in, float *restrict gth,
             const float *restrict gv, const float *restrict gt, const float *restrict gxs,
             int64_t i0, int64_t n, float v_init, int has_v, const int is_static)
{
    for (int64_t j = 0; j < n; j++) {
        if (is_static && gx) gx[i0 + j] = gxs[j];
        if (gv_in) gv_in[i0 + j] = gv[j];
        /* v_0 = v_init * theta unless a state was given */
        if (gth) gth[i0 + j] = has_v ? gt[j] : gt[j] + v_init * gv[j];
    }
}

static inline __attribute__((always_inline)) void
fwd_block(const float *restrict x, float *restrict spikes, float *restrict h,
          const float *restrict v_in, float *restrict v_out, const float *restrict theta,
          int64_t n_theta, int64_t inner, int64_t M, int64_t T, int64_t i0, int64_t n,
          float v_init, const float *restrict P, const int variant, const int is_static)
{
    float v[SNN_TRAIN_BLOCK], th[SNN_TRAIN_BLOCK];
    init_state(v, th, v_in, theta, n_theta, inner, i0, n, v_init);
    for (int64_t t = 0; t < T; t++)
        snn_run(variant, is_static ? x + i0 : x + t * M + i0, spikes + t * M + i0, h + t * M + i0, v,
                th, 1, n, P, 1);
    for (int64_t j = 0; j < n; j++) v_out[i0 + j] = v[j];
}

static inline __attribute__((always_inline)) void
bwd_block(const float *restrict gs, const float *restrict gvo, const float *restrict h,
          const float *restrict theta, float *restrict gx, float *restrict gv_in,
          float *restrict gth, int64_t n_theta, int64_t inner, int64_t M, int64_t T, int64_t i0,
          int64_t n, float v_init, float alpha, const float *restrict P, int has_v, int detach,
          const int variant, const int is_static)
{
    float gv[SNN_TRAIN_BLOCK], gt[SNN_TRAIN_BLOCK], gxs[SNN_TRAIN_BLOCK], th[SNN_TRAIN_BLOCK];
    const float keep = detach ? 0.0f : 1.0f; /* the reset's path into the spike's gradient */
    init_grads(gv, gt, gxs, th, gvo, theta, n_theta, inner, i0, n);
    for (int64_t t = T - 1; t >= 0; t--)
        bwd_run(variant, h + t * M + i0, gs ? gs + t * M + i0 : NULL,
                (gx && !is_static) ? gx + t * M + i0 : NULL, gxs, gv, gt, th, n, P, keep, alpha,
                is_static);
    finish_grads(gx, gv_in, gth, gv, gt, gxs, i0, n, v_init, has_v, is_static);
}

/* Fused with a k x k, stride-k sum pool (floor): one [H, W] plane at a time, each step's spikes
 * go to a plane buffer and are summed into pooled [T, NP, H/k, W/k] at once (the spike tensor
 * is never written); the backward reads the pooled gradient and spreads it over each window
 * (neurons in rows/columns no window covers get none). Scratch: 5 * H * W floats. */
static inline __attribute__((always_inline)) void
fwd_pool_plane(const float *restrict x, float *restrict pooled, float *restrict h,
               const float *restrict v_in, float *restrict v_out, const float *restrict theta,
               int64_t n_theta, int64_t NP, int64_t H, int64_t W, int64_t k, int64_t T, int64_t q,
               float v_init, const float *restrict P, float *restrict scratch, const int variant,
               const int is_static)
{
    const int64_t HW = H * W, M = NP * HW, Ho = H / k, Wo = W / k, i0 = q * HW;
    float *restrict v = scratch, *restrict th = scratch + HW, *restrict sb = scratch + 2 * HW;
    init_state(v, th, v_in, theta, n_theta, HW, i0, HW, v_init);
    for (int64_t t = 0; t < T; t++) {
        snn_run(variant, is_static ? x + i0 : x + t * M + i0, sb, h + t * M + i0, v, th, 1, HW, P, 1);
        float *restrict out = pooled + (t * NP + q) * Ho * Wo;
        for (int64_t oy = 0; oy < Ho; oy++) {
            float *restrict orow = out + oy * Wo;
            for (int64_t ox = 0; ox < Wo; ox++) orow[ox] = 0.0f;
            for (int64_t ky = 0; ky < k; ky++) {
                const float *restrict srow = sb + (oy * k + ky) * W;
                for (int64_t ox = 0; ox < Wo; ox++)
                    for (int64_t kx = 0; kx < k; kx++) orow[ox] += srow[ox * k + kx];
            }
        }
    }
    for (int64_t j = 0; j < HW; j++) v_out[i0 + j] = v[j];
}

static inline __attribute__((always_inline)) void
bwd_pool_plane(const float *restrict gpooled, const float *restrict gvo, const float *restrict h,
               const float *restrict theta, float *restrict gx, float *restrict gv_in,
               float *restrict gth, int64_t n_theta, int64_t NP, int64_t H, int64_t W, int64_t k,
               int64_t T, int64_t q, float v_init, float alpha, const float *restrict P, int has_v,
               int detach, float *restrict scratch, const int variant, const int is_static)
{
    const int64_t HW = H * W, M = NP * HW, Ho = H / k, Wo = W / k, i0 = q * HW;
    float *restrict gv = scratch, *restrict gt = scratch + HW, *restrict gxs = scratch + 2 * HW;
    float *restrict gsb = scratch + 3 * HW, *restrict th = scratch + 4 * HW;
    const float keep = detach ? 0.0f : 1.0f;
    init_grads(gv, gt, gxs, th, gvo, theta, n_theta, HW, i0, HW);
    for (int64_t j = 0; j < HW; j++) gsb[j] = 0.0f; /* uncovered rows/columns stay 0 */
    for (int64_t t = T - 1; t >= 0; t--) {
        if (gpooled) {
            const float *restrict g = gpooled + (t * NP + q) * Ho * Wo;
            for (int64_t oy = 0; oy < Ho; oy++)
                for (int64_t ky = 0; ky < k; ky++) {
                    float *restrict grow = gsb + (oy * k + ky) * W;
                    for (int64_t ox = 0; ox < Wo; ox++)
                        for (int64_t kx = 0; kx < k; kx++) grow[ox * k + kx] = g[oy * Wo + ox];
                }
        }
        bwd_run(variant, h + t * M + i0, gpooled ? gsb : NULL, (gx && !is_static) ? gx + t * M + i0 : NULL,
                gxs, gv, gt, th, HW, P, keep, alpha, is_static);
    }
    finish_grads(gx, gv_in, gth, gv, gt, gxs, i0, HW, v_init, has_v, is_static);
}

#ifdef _OPENMP
#include <omp.h>
#define SNN_PARALLEL_FOR _Pragma("omp parallel for schedule(static) num_threads(n_threads)")
#define SNN_POOL_PARALLEL _Pragma("omp parallel num_threads(n_threads)")
#define SNN_OMP_FOR _Pragma("omp for schedule(static)")
#define SNN_ATOMIC _Pragma("omp atomic write")
#else
#define SNN_PARALLEL_FOR
#define SNN_POOL_PARALLEL
#define SNN_OMP_FOR
#define SNN_ATOMIC
#endif

/* One forward and one backward per (variant, input kind), both constant-folded. */
#define FWD_ARGS                                                                                \
    const float *x, float *spikes, float *h, const float *v_in, float *v_out, const float *theta, \
        int64_t n_theta, int64_t inner, int64_t M, int64_t T, float v_init, const float *P,      \
        int n_threads
#define BWD_ARGS                                                                                \
    const float *gs, const float *gvo, const float *h, const float *theta, float *gx,          \
        float *gv_in, float *gth, int64_t n_theta, int64_t inner, int64_t M, int64_t T,         \
        float v_init, float alpha, const float *P, int has_v, int detach, int n_threads
#define VARIANT(V, S)                                                                           \
    static void fwd_##V##_##S(FWD_ARGS)                                                         \
    {                                                                                           \
        const int64_t n_blocks = (M + SNN_TRAIN_BLOCK - 1) / SNN_TRAIN_BLOCK;                   \
        (void)n_threads;                                                                        \
        SNN_PARALLEL_FOR                                                                        \
        for (int64_t b = 0; b < n_blocks; b++) {                                                \
            const int64_t i0 = b * SNN_TRAIN_BLOCK;                                             \
            const int64_t n = M - i0 < SNN_TRAIN_BLOCK ? M - i0 : SNN_TRAIN_BLOCK;              \
            fwd_block(x, spikes, h, v_in, v_out, theta, n_theta, inner, M, T, i0, n, v_init, P, \
                      V, S);                                                                    \
        }                                                                                       \
    }                                                                                           \
    static void bwd_##V##_##S(BWD_ARGS)                                                         \
    {                                                                                           \
        const int64_t n_blocks = (M + SNN_TRAIN_BLOCK - 1) / SNN_TRAIN_BLOCK;                   \
        (void)n_threads;                                                                        \
        SNN_PARALLEL_FOR                                                                        \
        for (int64_t b = 0; b < n_blocks; b++) {                                                \
            const int64_t i0 = b * SNN_TRAIN_BLOCK;                                             \
            const int64_t n = M - i0 < SNN_TRAIN_BLOCK ? M - i0 : SNN_TRAIN_BLOCK;              \
            bwd_block(gs, gvo, h, theta, gx, gv_in, gth, n_theta, inner, M, T, i0, n, v_init,   \
                      alpha, P, has_v, detach, V, S);                                           \
        }                                                                                       \
    }

#define POOL_FWD_ARGS                                                                           \
    const float *x, float *pooled, float *h, const float *v_in, float *v_out, const float *theta, \
        int64_t n_theta, int64_t NP, int64_t H, int64_t W, int64_t k, int64_t T, float v_init,   \
        const float *P, int n_threads, int *failed
#define POOL_BWD_ARGS                                                                           \
    const float *gpooled, const float *gvo, const float *h, const float *theta, float *gx,     \
        float *gv_in, float *gth, int64_t n_theta, int64_t NP, int64_t H, int64_t W, int64_t k,  \
        int64_t T, float v_init, float alpha, const float *P, int has_v, int detach,            \
        int n_threads, int *failed
/* A thread whose scratch allocation fails records it (an atomic write: every thread may). */
#define POOL_VARIANT(V, S)                                                                      \
    static void pfwd_##V##_##S(POOL_FWD_ARGS)                                                   \
    {                                                                                           \
        (void)n_threads;                                                                        \
        SNN_POOL_PARALLEL                                                                       \
        {                                                                                       \
            float *scratch = malloc((size_t)(5 * H * W) * sizeof(float));                       \
            if (!scratch) {                                                                     \
                SNN_ATOMIC                                                                      \
                *failed = 1;                                                                    \
            }                                                                                   \
            SNN_OMP_FOR                                                                         \
            for (int64_t q = 0; q < NP; q++)                                                    \
                if (scratch)                                                                    \
                    fwd_pool_plane(x, pooled, h, v_in, v_out, theta, n_theta, NP, H, W, k, T, q, \
                                   v_init, P, scratch, V, S);                                   \
            free(scratch);                                                                      \
        }                                                                                       \
    }                                                                                           \
    static void pbwd_##V##_##S(POOL_BWD_ARGS)                                                   \
    {                                                                                           \
        (void)n_threads;                                                                        \
        SNN_POOL_PARALLEL                                                                       \
        {                                                                                       \
            float *scratch = malloc((size_t)(5 * H * W) * sizeof(float));                       \
            if (!scratch) {                                                                     \
                SNN_ATOMIC                                                                      \
                *failed = 1;                                                                    \
            }                                                                                   \
            SNN_OMP_FOR                                                                         \
            for (int64_t q = 0; q < NP; q++)                                                    \
                if (scratch)                                                                    \
                    bwd_pool_plane(gpooled, gvo, h, theta, gx, gv_in, gth, n_theta, NP, H, W, k, \
                                   T, q, v_init, alpha, P, has_v, detach, scratch, V, S);       \
            free(scratch);                                                                      \
        }                                                                                       \
    }

#define TRAIN_INSTANCES(V) VARIANT(V, 0) VARIANT(V, 1) POOL_VARIANT(V, 0) POOL_VARIANT(V, 1)
SNN_FOR_EACH_VARIANT(TRAIN_INSTANCES)

typedef void (*fwd_fn)(FWD_ARGS);
typedef void (*bwd_fn)(BWD_ARGS);
typedef void (*pfwd_fn)(POOL_FWD_ARGS);
typedef void (*pbwd_fn)(POOL_BWD_ARGS);
/* [variant][is_static] */
#define FWD_ROW(V) {fwd_##V##_0, fwd_##V##_1},
#define BWD_ROW(V) {bwd_##V##_0, bwd_##V##_1},
#define PFWD_ROW(V) {pfwd_##V##_0, pfwd_##V##_1},
#define PBWD_ROW(V) {pbwd_##V##_0, pbwd_##V##_1},
static const fwd_fn FWD[SNN_N_VARIANTS][2] = {SNN_FOR_EACH_VARIANT(FWD_ROW)};
static const bwd_fn BWD[SNN_N_VARIANTS][2] = {SNN_FOR_EACH_VARIANT(BWD_ROW)};
static const pfwd_fn PFWD[SNN_N_VARIANTS][2] = {SNN_FOR_EACH_VARIANT(PFWD_ROW)};
static const pbwd_fn PBWD[SNN_N_VARIANTS][2] = {SNN_FOR_EACH_VARIANT(PBWD_ROW)};

static int bad(int64_t M, int64_t T, int64_t n_theta, int64_t inner, int variant)
{
    return M < 0 || T < 0 || n_theta < 1 || inner < 1 || variant < 0 || variant >= SNN_N_VARIANTS;
}

/* Returns 0, or -1 for a bad argument. */
int snn_train_forward_f32(const float *x, float *spikes, float *h, const float *v_in, float *v_out,
                          const float *theta, int64_t n_theta, int64_t inner, int64_t M, int64_t T,
                          int variant, int is_static, float v_init, const float *P, int n_threads)
{
    if (bad(M, T, n_theta, inner, variant)) return -1;
    FWD[variant][is_static != 0](x, spikes, h, v_in, v_out, theta, n_theta, inner, M, T, v_init, P,
                                 n_threads);
    return 0;
}

/* gs, gvo, gx, gv_in, gth may be NULL (a zero incoming gradient / an output not needed). gth
 * receives per-neuron partial sums [M]; the caller reduces them to the threshold's shape. */
int snn_train_backward_f32(const float *gs, const float *gvo, const float *h, const float *theta,
                           float *gx, float *gv_in, float *gth, int64_t n_theta, int64_t inner,
                           int64_t M, int64_t T, int variant, int is_static, int has_v, int detach,
                           float v_init, float alpha, const float *P, int n_threads)
{
    if (bad(M, T, n_theta, inner, variant)) return -1;
    BWD[variant][is_static != 0](gs, gvo, h, theta, gx, gv_in, gth, n_theta, inner, M, T, v_init,
                                 alpha, P, has_v, detach, n_threads);
    return 0;
}

/* The neuron fused with a k x k, stride-k sum pool: the step is [NP = N*C planes, H, W]; pooled
 * is [T, NP, H/k, W/k] (window sums of the spikes), h [T, NP, H, W]; theta per plane is
 * theta[q % n_theta] (n_theta = 1 or C). Returns 0, -1 for a bad argument, -2 out of memory. */
int snn_train_forward_pool_f32(const float *x, float *pooled, float *h, const float *v_in,
                               float *v_out, const float *theta, int64_t n_theta, int64_t NP,
                               int64_t H, int64_t W, int64_t k, int64_t T, int variant,
                               int is_static, float v_init, const float *P, int n_threads)
{
    if (bad(NP * H * W, T, n_theta, 1, variant) || k < 1 || H < k || W < k) return -1;
    int failed = 0;
    PFWD[variant][is_static != 0](x, pooled, h, v_in, v_out, theta, n_theta, NP, H, W, k, T, v_init,
                                  P, n_threads, &failed);
    return failed ? -2 : 0;
}

/* gpooled is the gradient of the pooled output [T, NP, H/k, W/k] (may be NULL); the rest as in
 * snn_train_backward_f32. */
int snn_train_backward_pool_f32(const float *gpooled, const float *gvo, const float *h,
                                const float *theta, float *gx, float *gv_in, float *gth,
                                int64_t n_theta, int64_t NP, int64_t H, int64_t W, int64_t k,
                                int64_t T, int variant, int is_static, int has_v, int detach,
                                float v_init, float alpha, const float *P, int n_threads)
{
    if (bad(NP * H * W, T, n_theta, 1, variant) || k < 1 || H < k || W < k) return -1;
    int failed = 0;
    PBWD[variant][is_static != 0](gpooled, gvo, h, theta, gx, gv_in, gth, n_theta, NP, H, W, k, T,
                                  v_init, alpha, P, has_v, detach, n_threads, &failed);
    return failed ? -2 : 0;
}
