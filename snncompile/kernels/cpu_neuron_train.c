/* CPU training kernels (IF / LIF), float32: a forward that also saves h = v - theta at every
 * step, and the BPTT backward through the whole T loop, for the autograd path of the "cpu"
 * backend. The same equations and the same backward as the CUDA kernels (cuda_source.py):
 *
 *   u_t = charge(v_{t-1}, x_t);  h_t = u_t - theta;  s_t = (h_t >= 0);  v_t = reset(u_t, s_t)
 *
 * walked backwards t = T-1..0 carrying gv = dL/dv_t. The surrogate's derivative is the macro
 * SURROGATE_GRAD(x, alpha), defined by the build (one library per surrogate, see cpu_train.py).
 *
 * Layout as in cpu_neuron.c: x is [T, M] (sequence) or [M] (static), spikes/h [T, M], v [M];
 * neuron i uses theta[(i / inner) % n_theta]. A block of SNN_TRAIN_BLOCK neurons runs all T
 * steps with its state in local arrays; blocks are shared out over OpenMP threads. kind, reset
 * and the input kind are compile-time constants in each instantiation (always_inline), so the
 * inner loops are branch-free and gcc vectorises them.
 *
 * The forward's float operations follow neuron_reference one for one (division by tau, spike
 * test (v - theta) >= 0, value reset s * v_reset + (1 - s) * v); built with -ffp-contract=off,
 * its spikes and v equal the reference's bit for bit. The backward agrees with autograd on the
 * reference to float rounding (the sums run in another order).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#ifndef SURROGATE_GRAD
#error "define SURROGATE_GRAD(x, alpha): the surrogate's derivative at x = v - theta"
#endif

#ifndef SNN_TRAIN_BLOCK
#define SNN_TRAIN_BLOCK 1024
#endif

#define KIND_IF 0
#define KIND_LIF_SJ 1
#define KIND_LIF_SNNTORCH 2
#define RESET_SUBTRACT 0

typedef struct {
    float v_init, v_reset, tau, beta, v_rest, alpha;
} snn_train_params;

static inline __attribute__((always_inline)) float
load_theta(const float *theta, int64_t n_theta, int64_t inner, int64_t i)
{
    return n_theta == 1 ? theta[0] : theta[(i / inner) % n_theta];
}

/* One step for n neurons: charge with x_t, spike, reset; writes s_t and h_t. */
static inline __attribute__((always_inline)) void
fwd_step(const float *restrict xt, float *restrict st, float *restrict ht, float *restrict v,
         const float *restrict th, int64_t n, snn_train_params p, const int kind, const int reset)
{
    for (int64_t j = 0; j < n; j++) {
        float u;
        if (kind == KIND_IF)
            u = v[j] + xt[j];
        else if (kind == KIND_LIF_SJ)
            u = v[j] + (xt[j] - (v[j] - p.v_rest)) / p.tau;
        else
            u = p.beta * v[j] + xt[j];
        const float hh = u - th[j];
        const float s = hh >= 0.0f ? 1.0f : 0.0f;
        v[j] = reset == RESET_SUBTRACT ? u - s * th[j] : s * p.v_reset + (1.0f - s) * u;
        st[j] = s;
        ht[j] = hh;
    }
}

/* One backward step for n neurons: from dL/ds_t (gst, may be NULL) and the carried
 * gv = dL/dv_t, give dL/dx_t (into gxt, or added into gxs for a static input), dL/dv_{t-1}
 * (into gv) and add the threshold's part into gt. */
static inline __attribute__((always_inline)) void
bwd_step(const float *restrict ht, const float *restrict gst, float *restrict gxt,
         float *restrict gxs, float *restrict gv, float *restrict gt, const float *restrict th,
         int64_t n, snn_train_params p, float keep, const int kind, const int reset,
         const int is_static)
{
    for (int64_t j = 0; j < n; j++) {
        const float hh = ht[j];
        const float fire = hh >= 0.0f ? 1.0f : 0.0f;
        const float sg = SURROGATE_GRAD(hh, p.alpha);
        float g_spike = gst ? gst[j] : 0.0f;
        float g_u;
        if (reset == RESET_SUBTRACT) { /* v_t = u_t - s_t * theta */
            g_spike -= keep * gv[j] * th[j];
            g_u = gv[j];
            gt[j] -= fire * gv[j];
        } else { /* v_t = s_t * v_reset + (1 - s_t) * u_t */
            g_spike += keep * gv[j] * (p.v_reset - (hh + th[j]));
            g_u = (1.0f - fire) * gv[j];
        }
        const float g_h = g_spike * sg; /* through s_t = H(u_t - theta) */
        g_u += g_h;
        gt[j] -= g_h;
        float g_x;
        if (kind == KIND_IF) {
            g_x = g_u;
            gv[j] = g_u;
        } else if (kind == KIND_LIF_SJ) {
            g_x = g_u / p.tau;
            gv[j] = g_u - g_u / p.tau;
        } else {
            g_x = g_u;
            gv[j] = p.beta * g_u;
        }
        if (is_static)
            gxs[j] += g_x;
        else if (gxt)
            gxt[j] = g_x;
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
          snn_train_params p, const int kind, const int reset, const int is_static)
{
    float v[SNN_TRAIN_BLOCK], th[SNN_TRAIN_BLOCK];
    init_state(v, th, v_in, theta, n_theta, inner, i0, n, p.v_init);
    for (int64_t t = 0; t < T; t++)
        fwd_step(is_static ? x + i0 : x + t * M + i0, spikes + t * M + i0, h + t * M + i0, v, th,
                 n, p, kind, reset);
    for (int64_t j = 0; j < n; j++) v_out[i0 + j] = v[j];
}

static inline __attribute__((always_inline)) void
bwd_block(const float *restrict gs, const float *restrict gvo, const float *restrict h,
          const float *restrict theta, float *restrict gx, float *restrict gv_in,
          float *restrict gth, int64_t n_theta, int64_t inner, int64_t M, int64_t T, int64_t i0,
          int64_t n, snn_train_params p, int has_v, int detach, const int kind, const int reset,
          const int is_static)
{
    float gv[SNN_TRAIN_BLOCK], gt[SNN_TRAIN_BLOCK], gxs[SNN_TRAIN_BLOCK], th[SNN_TRAIN_BLOCK];
    const float keep = detach ? 0.0f : 1.0f; /* the reset's path into the spike's gradient */
    init_grads(gv, gt, gxs, th, gvo, theta, n_theta, inner, i0, n);
    for (int64_t t = T - 1; t >= 0; t--)
        bwd_step(h + t * M + i0, gs ? gs + t * M + i0 : NULL,
                 (gx && !is_static) ? gx + t * M + i0 : NULL, gxs, gv, gt, th, n, p, keep, kind,
                 reset, is_static);
    finish_grads(gx, gv_in, gth, gv, gt, gxs, i0, n, p.v_init, has_v, is_static);
}

/* Fused with a k x k, stride-k sum pool (floor): one [H, W] plane at a time, each step's spikes
 * go to a plane buffer and are summed into pooled [T, P, H/k, W/k] at once (the spike tensor is
 * never written); the backward reads the pooled gradient and spreads it over each window
 * (neurons in rows/columns no window covers get none). Scratch: 4 * H * W floats. */
static inline __attribute__((always_inline)) void
fwd_pool_plane(const float *restrict x, float *restrict pooled, float *restrict h,
               const float *restrict v_in, float *restrict v_out, const float *restrict theta,
               int64_t n_theta, int64_t P, int64_t H, int64_t W, int64_t k, int64_t T, int64_t q,
               snn_train_params p, float *restrict scratch, const int kind, const int reset,
               const int is_static)
{
    const int64_t HW = H * W, M = P * HW, Ho = H / k, Wo = W / k, i0 = q * HW;
    float *restrict v = scratch, *restrict th = scratch + HW, *restrict sb = scratch + 2 * HW;
    init_state(v, th, v_in, theta, n_theta, HW, i0, HW, p.v_init);
    for (int64_t t = 0; t < T; t++) {
        fwd_step(is_static ? x + i0 : x + t * M + i0, sb, h + t * M + i0, v, th, HW, p, kind,
                 reset);
        float *restrict out = pooled + (t * P + q) * Ho * Wo;
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
               float *restrict gth, int64_t n_theta, int64_t P, int64_t H, int64_t W, int64_t k,
               int64_t T, int64_t q, snn_train_params p, int has_v, int detach,
               float *restrict scratch, const int kind, const int reset, const int is_static)
{
    const int64_t HW = H * W, M = P * HW, Ho = H / k, Wo = W / k, i0 = q * HW;
    float *restrict gv = scratch, *restrict gt = scratch + HW, *restrict gxs = scratch + 2 * HW;
    float *restrict gsb = scratch + 3 * HW, *restrict th = scratch + 4 * HW;
    const float keep = detach ? 0.0f : 1.0f;
    init_grads(gv, gt, gxs, th, gvo, theta, n_theta, HW, i0, HW);
    for (int64_t j = 0; j < HW; j++) gsb[j] = 0.0f; /* uncovered rows/columns stay 0 */
    for (int64_t t = T - 1; t >= 0; t--) {
        if (gpooled) {
            const float *restrict g = gpooled + (t * P + q) * Ho * Wo;
            for (int64_t oy = 0; oy < Ho; oy++)
                for (int64_t ky = 0; ky < k; ky++) {
                    float *restrict grow = gsb + (oy * k + ky) * W;
                    for (int64_t ox = 0; ox < Wo; ox++)
                        for (int64_t kx = 0; kx < k; kx++) grow[ox * k + kx] = g[oy * Wo + ox];
                }
        }
        bwd_step(h + t * M + i0, gpooled ? gsb : NULL, (gx && !is_static) ? gx + t * M + i0 : NULL,
                 gxs, gv, gt, th, HW, p, keep, kind, reset, is_static);
    }
    finish_grads(gx, gv_in, gth, gv, gt, gxs, i0, HW, p.v_init, has_v, is_static);
}

#ifdef _OPENMP
#include <omp.h>
#define SNN_PARALLEL_FOR _Pragma("omp parallel for schedule(static) num_threads(n_threads)")
#define SNN_POOL_PARALLEL _Pragma("omp parallel num_threads(n_threads)")
#define SNN_OMP_FOR _Pragma("omp for schedule(static)")
#else
#define SNN_PARALLEL_FOR
#define SNN_POOL_PARALLEL
#define SNN_OMP_FOR
#endif

/* One forward and one backward per (kind, reset, input kind), the three constant-folded. */
#define FWD_ARGS                                                                                \
    const float *x, float *spikes, float *h, const float *v_in, float *v_out, const float *theta, \
        int64_t n_theta, int64_t inner, int64_t M, int64_t T, snn_train_params p, int n_threads
#define BWD_ARGS                                                                                \
    const float *gs, const float *gvo, const float *h, const float *theta, float *gx,          \
        float *gv_in, float *gth, int64_t n_theta, int64_t inner, int64_t M, int64_t T,         \
        snn_train_params p, int has_v, int detach, int n_threads
#define VARIANT(K, R, S)                                                                        \
    static void fwd_##K##R##S(FWD_ARGS)                                                         \
    {                                                                                           \
        const int64_t n_blocks = (M + SNN_TRAIN_BLOCK - 1) / SNN_TRAIN_BLOCK;                   \
        (void)n_threads;                                                                        \
        SNN_PARALLEL_FOR                                                                        \
        for (int64_t b = 0; b < n_blocks; b++) {                                                \
            const int64_t i0 = b * SNN_TRAIN_BLOCK;                                             \
            const int64_t n = M - i0 < SNN_TRAIN_BLOCK ? M - i0 : SNN_TRAIN_BLOCK;              \
            fwd_block(x, spikes, h, v_in, v_out, theta, n_theta, inner, M, T, i0, n, p, K, R, S); \
        }                                                                                       \
    }                                                                                           \
    static void bwd_##K##R##S(BWD_ARGS)                                                         \
    {                                                                                           \
        const int64_t n_blocks = (M + SNN_TRAIN_BLOCK - 1) / SNN_TRAIN_BLOCK;                   \
        (void)n_threads;                                                                        \
        SNN_PARALLEL_FOR                                                                        \
        for (int64_t b = 0; b < n_blocks; b++) {                                                \
            const int64_t i0 = b * SNN_TRAIN_BLOCK;                                             \
            const int64_t n = M - i0 < SNN_TRAIN_BLOCK ? M - i0 : SNN_TRAIN_BLOCK;              \
            bwd_block(gs, gvo, h, theta, gx, gv_in, gth, n_theta, inner, M, T, i0, n, p, has_v, \
                      detach, K, R, S);                                                         \
        }                                                                                       \
    }

#define POOL_FWD_ARGS                                                                           \
    const float *x, float *pooled, float *h, const float *v_in, float *v_out, const float *theta, \
        int64_t n_theta, int64_t P, int64_t H, int64_t W, int64_t k, int64_t T, snn_train_params p, \
        int n_threads, int *failed
#define POOL_BWD_ARGS                                                                           \
    const float *gpooled, const float *gvo, const float *h, const float *theta, float *gx,     \
        float *gv_in, float *gth, int64_t n_theta, int64_t P, int64_t H, int64_t W, int64_t k,   \
        int64_t T, snn_train_params p, int has_v, int detach, int n_threads, int *failed
#define POOL_VARIANT(K, R, S)                                                                   \
    static void pfwd_##K##R##S(POOL_FWD_ARGS)                                                   \
    {                                                                                           \
        (void)n_threads;                                                                        \
        SNN_POOL_PARALLEL                                                                       \
        {                                                                                       \
            float *scratch = malloc((size_t)(5 * H * W) * sizeof(float));                       \
            if (!scratch) *failed = 1;                                                          \
            SNN_OMP_FOR                                                                         \
            for (int64_t q = 0; q < P; q++)                                                     \
                if (scratch)                                                                    \
                    fwd_pool_plane(x, pooled, h, v_in, v_out, theta, n_theta, P, H, W, k, T, q, \
                                   p, scratch, K, R, S);                                        \
            free(scratch);                                                                      \
        }                                                                                       \
    }                                                                                           \
    static void pbwd_##K##R##S(POOL_BWD_ARGS)                                                   \
    {                                                                                           \
        (void)n_threads;                                                                        \
        SNN_POOL_PARALLEL                                                                       \
        {                                                                                       \
            float *scratch = malloc((size_t)(5 * H * W) * sizeof(float));                       \
            if (!scratch) *failed = 1;                                                          \
            SNN_OMP_FOR                                                                         \
            for (int64_t q = 0; q < P; q++)                                                     \
                if (scratch)                                                                    \
                    bwd_pool_plane(gpooled, gvo, h, theta, gx, gv_in, gth, n_theta, P, H, W, k, \
                                   T, q, p, has_v, detach, scratch, K, R, S);                   \
            free(scratch);                                                                      \
        }                                                                                       \
    }

VARIANT(0, 0, 0) VARIANT(0, 0, 1) VARIANT(0, 1, 0) VARIANT(0, 1, 1)
VARIANT(1, 0, 0) VARIANT(1, 0, 1) VARIANT(1, 1, 0) VARIANT(1, 1, 1)
VARIANT(2, 0, 0) VARIANT(2, 0, 1) VARIANT(2, 1, 0) VARIANT(2, 1, 1)

POOL_VARIANT(0, 0, 0) POOL_VARIANT(0, 0, 1) POOL_VARIANT(0, 1, 0) POOL_VARIANT(0, 1, 1)
POOL_VARIANT(1, 0, 0) POOL_VARIANT(1, 0, 1) POOL_VARIANT(1, 1, 0) POOL_VARIANT(1, 1, 1)
POOL_VARIANT(2, 0, 0) POOL_VARIANT(2, 0, 1) POOL_VARIANT(2, 1, 0) POOL_VARIANT(2, 1, 1)

typedef void (*fwd_fn)(FWD_ARGS);
typedef void (*bwd_fn)(BWD_ARGS);
/* indexed by kind * 4 + reset * 2 + is_static */
static const fwd_fn FWD[12] = {fwd_000, fwd_001, fwd_010, fwd_011, fwd_100, fwd_101,
                               fwd_110, fwd_111, fwd_200, fwd_201, fwd_210, fwd_211};
static const bwd_fn BWD[12] = {bwd_000, bwd_001, bwd_010, bwd_011, bwd_100, bwd_101,
                               bwd_110, bwd_111, bwd_200, bwd_201, bwd_210, bwd_211};
typedef void (*pfwd_fn)(POOL_FWD_ARGS);
typedef void (*pbwd_fn)(POOL_BWD_ARGS);
static const pfwd_fn PFWD[12] = {pfwd_000, pfwd_001, pfwd_010, pfwd_011, pfwd_100, pfwd_101,
                                 pfwd_110, pfwd_111, pfwd_200, pfwd_201, pfwd_210, pfwd_211};
static const pbwd_fn PBWD[12] = {pbwd_000, pbwd_001, pbwd_010, pbwd_011, pbwd_100, pbwd_101,
                                 pbwd_110, pbwd_111, pbwd_200, pbwd_201, pbwd_210, pbwd_211};

static int bad(int64_t M, int64_t T, int64_t n_theta, int64_t inner, int kind, int reset)
{
    return M < 0 || T < 0 || n_theta < 1 || inner < 1 || kind < 0 || kind > 2 || reset < 0 ||
           reset > 1;
}

/* Returns 0, or -1 for a bad argument. */
int snn_train_forward_f32(const float *x, float *spikes, float *h, const float *v_in, float *v_out,
                          const float *theta, int64_t n_theta, int64_t inner, int64_t M, int64_t T,
                          int kind, int reset, int is_static, float v_init, float v_reset, float tau,
                          float beta, float v_rest, int n_threads)
{
    if (bad(M, T, n_theta, inner, kind, reset)) return -1;
    const snn_train_params p = {v_init, v_reset, tau, beta, v_rest, 0.0f};
    FWD[kind * 4 + reset * 2 + (is_static != 0)](x, spikes, h, v_in, v_out, theta, n_theta, inner,
                                                 M, T, p, n_threads);
    return 0;
}

/* gs, gvo, gx, gv_in, gth may be NULL (a zero incoming gradient / an output not needed). gth
 * receives per-neuron partial sums [M]; the caller reduces them to the threshold's shape. */
int snn_train_backward_f32(const float *gs, const float *gvo, const float *h, const float *theta,
                           float *gx, float *gv_in, float *gth, int64_t n_theta, int64_t inner,
                           int64_t M, int64_t T, int kind, int reset, int is_static, int has_v,
                           int detach, float v_init, float v_reset, float tau, float beta,
                           float v_rest, float alpha, int n_threads)
{
    if (bad(M, T, n_theta, inner, kind, reset)) return -1;
    const snn_train_params p = {v_init, v_reset, tau, beta, v_rest, alpha};
    BWD[kind * 4 + reset * 2 + (is_static != 0)](gs, gvo, h, theta, gx, gv_in, gth, n_theta, inner,
                                                 M, T, p, has_v, detach, n_threads);
    return 0;
}

/* The neuron fused with a k x k, stride-k sum pool: the step is [P = N*C planes, H, W]; pooled
 * is [T, P, H/k, W/k] (window sums of the spikes), h [T, P, H, W]; theta per plane is
 * theta[q % n_theta] (n_theta = 1 or C). Returns 0, -1 for a bad argument, -2 out of memory. */
int snn_train_forward_pool_f32(const float *x, float *pooled, float *h, const float *v_in,
                               float *v_out, const float *theta, int64_t n_theta, int64_t P,
                               int64_t H, int64_t W, int64_t k, int64_t T, int kind, int reset,
                               int is_static, float v_init, float v_reset, float tau, float beta,
                               float v_rest, int n_threads)
{
    if (bad(P * H * W, T, n_theta, 1, kind, reset) || k < 1 || H < k || W < k) return -1;
    const snn_train_params p = {v_init, v_reset, tau, beta, v_rest, 0.0f};
    int failed = 0;
    PFWD[kind * 4 + reset * 2 + (is_static != 0)](x, pooled, h, v_in, v_out, theta, n_theta, P, H,
                                                  W, k, T, p, n_threads, &failed);
    return failed ? -2 : 0;
}

/* gpooled is the gradient of the pooled output [T, P, H/k, W/k] (may be NULL); the rest as in
 * snn_train_backward_f32. */
int snn_train_backward_pool_f32(const float *gpooled, const float *gvo, const float *h,
                                const float *theta, float *gx, float *gv_in, float *gth,
                                int64_t n_theta, int64_t P, int64_t H, int64_t W, int64_t k,
                                int64_t T, int kind, int reset, int is_static, int has_v,
                                int detach, float v_init, float v_reset, float tau, float beta,
                                float v_rest, float alpha, int n_threads)
{
    if (bad(P * H * W, T, n_theta, 1, kind, reset) || k < 1 || H < k || W < k) return -1;
    const snn_train_params p = {v_init, v_reset, tau, beta, v_rest, alpha};
    int failed = 0;
    PBWD[kind * 4 + reset * 2 + (is_static != 0)](gpooled, gvo, h, theta, gx, gv_in, gth, n_theta,
                                                  P, H, W, k, T, p, has_v, detach, n_threads,
                                                  &failed);
    return failed ? -2 : 0;
}
