/* Fused CPU neuron kernel (IF / LIF), float32 in and out.
 *
 * One pass per neuron over all T steps: the membrane of a block of contiguous neurons lives in a
 * small per-thread array (L1/L2) while the T loop runs inside the block, so the state is read
 * once and written once and each step only streams x[t] in and s[t] out, one contiguous run of
 * `block` floats per step (long enough for the hardware prefetcher). Blocks are shared out over
 * OpenMP threads. The inner loop is written so that gcc -O3 -march=native vectorises it (AVX2:
 * 8 neurons per instruction; it needs -fno-trapping-math to if-convert the spike comparison).
 *
 * Exactness: the float operations follow snncompile.neurons.neuron_reference one for one, in the
 * same order (division by tau, not multiplication by 1/tau; the spike test is (v - theta) >= 0;
 * value reset is s * v_reset + (1 - s) * v). Build WITHOUT -ffast-math and WITH
 * -ffp-contract=off so that no multiply-add is fused; then results equal torch's bit for bit.
 *
 * Layout: x is [T, M] (sequence) or [M] (static: read once, the same current every step),
 * spikes is [T, M], v_in / v_out are [M] (v_in may be NULL: v starts at 0 + v_init * theta).
 * theta has n_theta values; neuron i uses theta[(i / inner) % n_theta] (per channel: n_theta = C
 * and inner = the size of one channel plane; scalar: n_theta = inner = 1).
 *
 * Fused neuron + 2-D sum pool (snn_neuron_sumpool_f32): the step is [P = N*C planes, H, W] and
 * what comes out is not the spikes but their k x k window sums (stride k, padding 0, floor:
 * trailing rows/columns that fill no window are simulated but not pooled), [T, P, H/k, W/k].
 * One plane at a time: its H*W membranes live in a per-thread array (L1), and for each step the
 * plane is updated (the same vectorised loop, the plane's threshold a constant) into a spike
 * array that is then pooled straight into out[t, p]. The spike tensor is never written.
 * Sums of up to k*k zeros and ones are exact in fp32 in any order, so the result equals
 * avg_pool2d(spikes, k, k, divisor_override=1) of the reference's spikes.
 */
#define _DEFAULT_SOURCE /* madvise, posix_memalign */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

/* Default neurons per block: 3 arrays of 8192 floats (96 KiB) stay in L2 on current x86. */
#ifndef SNN_BLOCK
#define SNN_BLOCK 8192
#endif

#define KIND_IF 0
#define KIND_LIF_SJ 1
#define KIND_LIF_SNNTORCH 2
#define RESET_SUBTRACT 0
#define RESET_VALUE 1

typedef struct {
    float v_init, v_reset, tau, beta, v_rest;
} snn_params;

/* One block of n neurons starting at i0, all T steps; v, th, xs are n-float scratch arrays.
 * kind/reset/is_static are compile-time constants after inlining, so each instantiation has a
 * branch-free inner loop. */
static inline __attribute__((always_inline)) void
snn_block(const float *restrict x, float *restrict spikes, const float *restrict v_in,
          float *restrict v_out, const float *restrict theta, int64_t n_theta, int64_t inner,
          int64_t M, int64_t T, int64_t i0, int64_t n, snn_params p, float *restrict v,
          float *restrict th, float *restrict xs, const int kind, const int reset,
          const int is_static)
{
    const float v_init = p.v_init, v_reset = p.v_reset, tau = p.tau, beta = p.beta;
    const float v_rest = p.v_rest;

    if (n_theta == 1) {
        for (int64_t j = 0; j < n; j++) th[j] = theta[0];
    } else {
        for (int64_t j = 0; j < n; j++) th[j] = theta[((i0 + j) / inner) % n_theta];
    }
    if (v_in) {
        for (int64_t j = 0; j < n; j++) v[j] = v_in[i0 + j];
    } else {
        for (int64_t j = 0; j < n; j++) v[j] = 0.0f + v_init * th[j];
    }
    if (is_static) {
        for (int64_t j = 0; j < n; j++) xs[j] = x[i0 + j];
    }
    for (int64_t t = 0; t < T; t++) {
        const float *restrict xt = is_static ? xs : x + t * M + i0;
        float *restrict st = spikes + t * M + i0;
        for (int64_t j = 0; j < n; j++) {
            float vv = v[j];
            const float xv = xt[j];
            if (kind == KIND_IF) {
                vv = vv + xv;
            } else if (kind == KIND_LIF_SJ) {
                vv = vv + (xv - (vv - v_rest)) / tau;
            } else {
                vv = beta * vv + xv;
            }
            const float d = vv - th[j];
            const float s = (d >= 0.0f) ? 1.0f : 0.0f;
            if (reset == RESET_SUBTRACT) {
                vv = vv - s * th[j];
            } else {
                vv = s * v_reset + (1.0f - s) * vv;
            }
            v[j] = vv;
            st[j] = s;
        }
    }
    for (int64_t j = 0; j < n; j++) v_out[i0 + j] = v[j];
}

#define SNN_ARGS                                                                                 \
    const float *restrict x, float *restrict spikes, const float *restrict v_in,                 \
        float *restrict v_out, const float *restrict theta, int64_t n_theta, int64_t inner,      \
        int64_t M, int64_t T, int64_t i0, int64_t n, snn_params p, float *restrict v,            \
        float *restrict th, float *restrict xs
#define SNN_INSTANCE(NAME, KIND, RESET, STATIC)                                                  \
    static void NAME(SNN_ARGS)                                                                   \
    {                                                                                            \
        snn_block(x, spikes, v_in, v_out, theta, n_theta, inner, M, T, i0, n, p, v, th, xs,      \
                  KIND, RESET, STATIC);                                                          \
    }

SNN_INSTANCE(blk_if_sub_seq, KIND_IF, RESET_SUBTRACT, 0)
SNN_INSTANCE(blk_if_sub_sta, KIND_IF, RESET_SUBTRACT, 1)
SNN_INSTANCE(blk_if_val_seq, KIND_IF, RESET_VALUE, 0)
SNN_INSTANCE(blk_if_val_sta, KIND_IF, RESET_VALUE, 1)
SNN_INSTANCE(blk_sj_sub_seq, KIND_LIF_SJ, RESET_SUBTRACT, 0)
SNN_INSTANCE(blk_sj_sub_sta, KIND_LIF_SJ, RESET_SUBTRACT, 1)
SNN_INSTANCE(blk_sj_val_seq, KIND_LIF_SJ, RESET_VALUE, 0)
SNN_INSTANCE(blk_sj_val_sta, KIND_LIF_SJ, RESET_VALUE, 1)
SNN_INSTANCE(blk_st_sub_seq, KIND_LIF_SNNTORCH, RESET_SUBTRACT, 0)
SNN_INSTANCE(blk_st_sub_sta, KIND_LIF_SNNTORCH, RESET_SUBTRACT, 1)
SNN_INSTANCE(blk_st_val_seq, KIND_LIF_SNNTORCH, RESET_VALUE, 0)
SNN_INSTANCE(blk_st_val_sta, KIND_LIF_SNNTORCH, RESET_VALUE, 1)

typedef void (*snn_block_fn)(SNN_ARGS);

static const snn_block_fn SNN_TABLE[3][2][2] = {
    {{blk_if_sub_seq, blk_if_sub_sta}, {blk_if_val_seq, blk_if_val_sta}},
    {{blk_sj_sub_seq, blk_sj_sub_sta}, {blk_sj_val_seq, blk_sj_val_sta}},
    {{blk_st_sub_seq, blk_st_sub_sta}, {blk_st_val_seq, blk_st_val_sta}},
};

/* ---------------------------------------------------------------------------------------- */
/* Fused neuron + k x k sum pool (stride k), one plane of H*W neurons at a time.              */

/* Sum the k x k windows of one plane's spikes s [H, W] into o [H/k, W/k]; vs is scratch of
 * (H/k) * (W/k) * k floats. Two passes, each a long vectorisable loop: the k rows of each window
 * row are summed into vs [H/k, (W/k) * k] (the columns that fill no window are skipped, so vs is
 * dense), then each run of k consecutive vs values is summed into o, flat over the whole plane.
 * K is a compile-time window size (2, 3) or 0 for "use k". */
static inline __attribute__((always_inline)) void
snn_pool_plane(const float *restrict s, float *restrict o, int64_t H, int64_t W, int64_t k,
               float *restrict vs, const int K)
{
    if (K) k = K;
    const int64_t Ho = H / k, Wo = W / k, Wk = Wo * k;
    for (int64_t oh = 0; oh < Ho; oh++) {
        const float *restrict r = s + oh * k * W;
        float *restrict q = vs + oh * Wk;
        if (K == 2) {
            for (int64_t w = 0; w < Wk; w++) q[w] = r[w] + r[W + w];
        } else if (K == 3) {
            for (int64_t w = 0; w < Wk; w++) q[w] = r[w] + r[W + w] + r[2 * W + w];
        } else {
            for (int64_t w = 0; w < Wk; w++) q[w] = r[w];
            for (int64_t i = 1; i < k; i++) {
                const float *restrict ri = r + i * W;
                for (int64_t w = 0; w < Wk; w++) q[w] += ri[w];
            }
        }
    }
    const int64_t n_out = Ho * Wo;
    if (K == 2) {
        for (int64_t j = 0; j < n_out; j++) o[j] = vs[2 * j] + vs[2 * j + 1];
    } else if (K == 3) {
        for (int64_t j = 0; j < n_out; j++) o[j] = vs[3 * j] + vs[3 * j + 1] + vs[3 * j + 2];
    } else {
        for (int64_t j = 0; j < n_out; j++) {
            const float *restrict q = vs + j * k;
            float acc = q[0];
            for (int64_t i = 1; i < k; i++) acc += q[i];
            o[j] = acc;
        }
    }
}

/* Plane p (of P) over all T steps: x is [T, P, H, W] (or [P, H, W] static), out [T, P, Ho, Wo];
 * v, sp and rs are H*W-float scratch arrays. */
static inline __attribute__((always_inline)) void
snn_pool_block(const float *restrict x, float *restrict out, const float *restrict v_in,
               float *restrict v_out, float th, int64_t P, int64_t H, int64_t W, int64_t k,
               int64_t T, int64_t p, snn_params prm, float *restrict v, float *restrict sp,
               float *restrict rs, const int kind, const int reset, const int is_static)
{
    const float v_init = prm.v_init, v_reset = prm.v_reset, tau = prm.tau, beta = prm.beta;
    const float v_rest = prm.v_rest;
    const int64_t n = H * W, M = P * n, HoWo = (H / k) * (W / k);
    const int64_t i0 = p * n;

    if (v_in) {
        for (int64_t j = 0; j < n; j++) v[j] = v_in[i0 + j];
    } else {
        const float v0 = 0.0f + v_init * th;
        for (int64_t j = 0; j < n; j++) v[j] = v0;
    }
    for (int64_t t = 0; t < T; t++) {
        const float *restrict xt = is_static ? x + i0 : x + t * M + i0;
        for (int64_t j = 0; j < n; j++) {
            float vv = v[j];
            const float xv = xt[j];
            if (kind == KIND_IF) {
                vv = vv + xv;
            } else if (kind == KIND_LIF_SJ) {
                vv = vv + (xv - (vv - v_rest)) / tau;
            } else {
                vv = beta * vv + xv;
            }
            const float d = vv - th;
            const float s = (d >= 0.0f) ? 1.0f : 0.0f;
            if (reset == RESET_SUBTRACT) {
                vv = vv - s * th;
            } else {
                vv = s * v_reset + (1.0f - s) * vv;
            }
            v[j] = vv;
            sp[j] = s;
        }
        float *restrict ot = out + (t * P + p) * HoWo;
        if (k == 2)
            snn_pool_plane(sp, ot, H, W, k, rs, 2);
        else if (k == 3)
            snn_pool_plane(sp, ot, H, W, k, rs, 3);
        else
            snn_pool_plane(sp, ot, H, W, k, rs, 0);
    }
    for (int64_t j = 0; j < n; j++) v_out[i0 + j] = v[j];
}

#define SNN_POOL_ARGS                                                                            \
    const float *restrict x, float *restrict out, const float *restrict v_in,                    \
        float *restrict v_out, float th, int64_t P, int64_t H, int64_t W, int64_t k, int64_t T,  \
        int64_t p, snn_params prm, float *restrict v, float *restrict sp, float *restrict rs
#define SNN_POOL_INSTANCE(NAME, KIND, RESET, STATIC)                                             \
    static void NAME(SNN_POOL_ARGS)                                                              \
    {                                                                                            \
        snn_pool_block(x, out, v_in, v_out, th, P, H, W, k, T, p, prm, v, sp, rs, KIND, RESET,   \
                       STATIC);                                                                  \
    }

SNN_POOL_INSTANCE(pool_if_sub_seq, KIND_IF, RESET_SUBTRACT, 0)
SNN_POOL_INSTANCE(pool_if_sub_sta, KIND_IF, RESET_SUBTRACT, 1)
SNN_POOL_INSTANCE(pool_if_val_seq, KIND_IF, RESET_VALUE, 0)
SNN_POOL_INSTANCE(pool_if_val_sta, KIND_IF, RESET_VALUE, 1)
SNN_POOL_INSTANCE(pool_sj_sub_seq, KIND_LIF_SJ, RESET_SUBTRACT, 0)
SNN_POOL_INSTANCE(pool_sj_sub_sta, KIND_LIF_SJ, RESET_SUBTRACT, 1)
SNN_POOL_INSTANCE(pool_sj_val_seq, KIND_LIF_SJ, RESET_VALUE, 0)
SNN_POOL_INSTANCE(pool_sj_val_sta, KIND_LIF_SJ, RESET_VALUE, 1)
SNN_POOL_INSTANCE(pool_st_sub_seq, KIND_LIF_SNNTORCH, RESET_SUBTRACT, 0)
SNN_POOL_INSTANCE(pool_st_sub_sta, KIND_LIF_SNNTORCH, RESET_SUBTRACT, 1)
SNN_POOL_INSTANCE(pool_st_val_seq, KIND_LIF_SNNTORCH, RESET_VALUE, 0)
SNN_POOL_INSTANCE(pool_st_val_sta, KIND_LIF_SNNTORCH, RESET_VALUE, 1)

typedef void (*snn_pool_fn)(SNN_POOL_ARGS);

static const snn_pool_fn SNN_POOL_TABLE[3][2][2] = {
    {{pool_if_sub_seq, pool_if_sub_sta}, {pool_if_val_seq, pool_if_val_sta}},
    {{pool_sj_sub_seq, pool_sj_sub_sta}, {pool_sj_val_seq, pool_sj_val_sta}},
    {{pool_st_sub_seq, pool_st_sub_sta}, {pool_st_val_seq, pool_st_val_sta}},
};

/* Default block size (neurons); the Python side reports it. */
int snn_block_size(void) { return SNN_BLOCK; }

/* 1 when built with OpenMP, else 0. */
int snn_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* Ask for transparent huge pages on a large, freshly allocated output before the first write.
 * A big torch.empty is a fresh mmap, and faulting it in 4 KiB pages costs far more than writing
 * it (several us a page under a hypervisor); with 2 MiB pages the first touch is ~10x cheaper.
 * Only a hint: content is untouched, and where THP is off it does nothing. */
static void snn_advise_hugepages(void *ptr, int64_t bytes)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)1 << 21;
    if (bytes < (int64_t)(4 * huge)) return;
    const uintptr_t lo = ((uintptr_t)ptr + huge - 1) & ~(huge - 1);
    const uintptr_t hi = ((uintptr_t)ptr + (uintptr_t)bytes) & ~(huge - 1);
    if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#else
    (void)ptr;
    (void)bytes;
#endif
}

/* Run the neuron over T steps, `block` neurons at a time (0: SNN_BLOCK) on up to n_threads
 * threads. Returns 0 on success, -1..-3 on a bad argument, -4 when out of memory. */
int snn_neuron_f32(const float *x, float *spikes, const float *v_in, float *v_out,
                   const float *theta, int64_t n_theta, int64_t inner, int64_t M, int64_t T,
                   int is_static, int kind, int reset, float v_init, float v_reset, float tau,
                   float beta, float v_rest, int64_t block, int n_threads)
{
    if (kind < 0 || kind > 2) return -1;
    if (reset < 0 || reset > 1) return -2;
    if (M < 0 || T < 0 || n_theta < 1 || inner < 1 || block < 0) return -3;
    if (M == 0) return 0;
    const snn_block_fn fn = SNN_TABLE[kind][reset][is_static ? 1 : 0];
    const snn_params p = {v_init, v_reset, tau, beta, v_rest};
    snn_advise_hugepages(spikes, T * M * (int64_t)sizeof(float));
    int nt = n_threads < 1 ? 1 : n_threads;
    if ((T + 1) * M < 65536) nt = 1; /* threads only pay off beyond ~64k neuron-steps */
    /* Blocks of `block` neurons; smaller ones (multiples of 16, at least 64) when that is what
     * it takes to give every thread work. */
    int64_t blk = block > 0 ? block : SNN_BLOCK;
    if (M < (int64_t)nt * blk) {
        int64_t even = ((M + nt - 1) / nt + 15) / 16 * 16;
        blk = even < 64 ? 64 : even < blk ? even : blk;
    }
    if (blk > M) blk = M;
    const int64_t n_blocks = (M + blk - 1) / blk;
    if (nt > n_blocks) nt = (int)n_blocks;
    int failed = 0;
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(| : failed)
#endif
    {
        void *buf = NULL;
        if (posix_memalign(&buf, 64, 3 * (size_t)((blk + 15) / 16 * 16) * sizeof(float)) != 0)
            buf = NULL;
        float *v = (float *)buf;
        float *th = v + (blk + 15) / 16 * 16;
        float *xs = th + (blk + 15) / 16 * 16;
        failed |= (buf == NULL);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t b = 0; b < n_blocks; b++) {
            if (buf == NULL) continue;
            const int64_t i0 = b * blk;
            const int64_t n = (M - i0) < blk ? (M - i0) : blk;
            fn(x, spikes, v_in, v_out, theta, n_theta, inner, M, T, i0, n, p, v, th, xs);
        }
        free(buf);
    }
    return failed ? -4 : 0;
}

/* Run the neuron over T steps on P planes of H x W neurons and write the k x k window sums of
 * each step's spikes (stride k, floor) to out [T, P, H/k, W/k]; the final membrane of every
 * neuron (pooled or not) goes to v_out [P, H, W]. theta has n_theta values (1, or C with plane p
 * in channel p % C). Planes are shared out over up to n_threads threads. Returns 0 on success,
 * -1..-3 on a bad argument, -4 when out of memory. */
int snn_neuron_sumpool_f32(const float *x, float *out, const float *v_in, float *v_out,
                           const float *theta, int64_t n_theta, int64_t P, int64_t H, int64_t W,
                           int64_t k, int64_t T, int is_static, int kind, int reset, float v_init,
                           float v_reset, float tau, float beta, float v_rest, int n_threads)
{
    if (kind < 0 || kind > 2) return -1;
    if (reset < 0 || reset > 1) return -2;
    if (P < 0 || H < 1 || W < 1 || k < 1 || k > H || k > W || T < 0 || n_theta < 1) return -3;
    if (P == 0) return 0;
    const snn_pool_fn fn = SNN_POOL_TABLE[kind][reset][is_static ? 1 : 0];
    const snn_params prm = {v_init, v_reset, tau, beta, v_rest};
    const int64_t n = H * W, HoWo = (H / k) * (W / k);
    snn_advise_hugepages(out, T * P * HoWo * (int64_t)sizeof(float));
    int nt = n_threads < 1 ? 1 : n_threads;
    if ((T + 1) * P * n < 65536) nt = 1; /* threads only pay off beyond ~64k neuron-steps */
    if (nt > P) nt = (int)P;
    const int64_t stride = (n + 15) / 16 * 16;
    int failed = 0;
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(| : failed)
#endif
    {
        void *buf = NULL;
        if (posix_memalign(&buf, 64, (size_t)(3 * stride) * sizeof(float)) != 0)
            buf = NULL;
        float *v = (float *)buf;
        float *sp = v + stride;
        float *rs = sp + stride;
        failed |= (buf == NULL);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t p = 0; p < P; p++) {
            if (buf == NULL) continue;
            const float th = theta[n_theta == 1 ? 0 : p % n_theta];
            fn(x, out, v_in, v_out, th, P, H, W, k, T, p, prm, v, sp, rs);
        }
        free(buf);
    }
    return failed ? -4 : 0;
}
