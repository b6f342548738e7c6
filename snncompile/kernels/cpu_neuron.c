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
 * A plane at a time: its H*W membranes live in a per-thread array (L1), and each step the plane
 * is updated (the same vectorised loop, the plane's threshold a constant) into an H*W spike
 * array that is pooled at once into out[t, p]; the spike tensor is never written. A thread
 * takes a group of consecutive planes (about SNN_POOL_GROUP_BYTES of membrane) and runs the T
 * loop outside the plane loop, so each step reads and writes one run of g planes, not g short
 * runs far apart (1.4-1.9x faster than plane by plane on 26 x 26 planes). Sums of up to k*k
 * zeros and ones are exact in fp32 in any order, so the result equals
 * avg_pool2d(spikes, k, k, divisor_override=1) of the reference's spikes, and v is the
 * reference's bit for bit.
 */
#define _DEFAULT_SOURCE /* madvise, posix_memalign */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

/* Default neurons per block: 3 arrays of 8192 floats (96 KiB) stay in L2 on current x86. */
#ifndef SNN_BLOCK
#define SNN_BLOCK 8192
#endif

/* Fused neuron + sum pool: planes per group are chosen so that their membranes fill about this
 * many bytes (L1-resident with the input planes they read). */
#ifndef SNN_POOL_GROUP_BYTES
#define SNN_POOL_GROUP_BYTES 16384
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

/* 8-float vectors (GCC/clang vector extensions; lowered to whatever SIMD the target has, or to
 * scalar code) for the 2 x 2 pool, whose rows are too short for the auto-vectoriser to do well.
 * Only used inside one function (no vector arguments or returns, so no ABI questions). */
typedef float snn_v8f __attribute__((vector_size(32)));
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define SNN_SHUF2(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
typedef int snn_v8i __attribute__((vector_size(32)));
#define SNN_SHUF2(a, b, ...) __builtin_shuffle(a, b, (snn_v8i){__VA_ARGS__})
#endif

/* 2 x 2 sum pool of one plane s [H, W] into o [H/2, W/2]. Each output row is done 8 outputs
 * (a 2 x 16 patch) at a time; a row whose length is not a multiple of 8 ends with a chunk that
 * overlaps the one before (it writes the same sums again), so there is no scalar tail. The
 * horizontal pair sums are in-lane shuffles + one 64-bit permute (2 x vshufps, vaddps, vpermpd
 * with AVX2), cheaper than a full even/odd split (4 cross-lane permutes). */
static inline __attribute__((always_inline)) void
snn_pool2_plane(const float *restrict s, float *restrict o, int64_t H, int64_t W)
{
    const int64_t Ho = H / 2, Wo = W / 2;
    for (int64_t oh = 0; oh < Ho; oh++) {
        const float *restrict r0 = s + 2 * oh * W;
        const float *restrict r1 = r0 + W;
        float *restrict ot = o + oh * Wo;
        if (Wo >= 8) {
            for (int64_t ow = 0;; ow += 8) {
                if (ow > Wo - 8) ow = Wo - 8;
                snn_v8f a0, a1, b0, b1;
                memcpy(&a0, r0 + 2 * ow, sizeof a0);
                memcpy(&a1, r1 + 2 * ow, sizeof a1);
                memcpy(&b0, r0 + 2 * ow + 8, sizeof b0);
                memcpy(&b1, r1 + 2 * ow + 8, sizeof b1);
                const snn_v8f a = a0 + a1, b = b0 + b1; /* vertical pairs, 16 columns */
                const snn_v8f e = SNN_SHUF2(a, b, 0, 2, 8, 10, 4, 6, 12, 14);
                const snn_v8f d = SNN_SHUF2(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
                const snn_v8f h = e + d; /* a01 a23 b01 b23 | a45 a67 b45 b67 */
                const snn_v8f r = SNN_SHUF2(h, h, 0, 1, 4, 5, 2, 3, 6, 7);
                memcpy(ot + ow, &r, sizeof r);
                if (ow == Wo - 8) break;
            }
        } else {
            for (int64_t ow = 0; ow < Wo; ow++)
                ot[ow] = (r0[2 * ow] + r1[2 * ow]) + (r0[2 * ow + 1] + r1[2 * ow + 1]);
        }
    }
}

/* k x k sum pool (any k) of one plane s [H, W] into o [H/k, W/k]; vs is scratch of at least
 * (H/k) * (W/k) * k floats. Two vectorisable passes: the k rows of each window row are summed
 * into vs [H/k, (W/k) * k] (the columns that fill no window are skipped, so vs is dense), then
 * each run of k consecutive vs values is summed into o, in one loop over the whole plane.
 * K is a compile-time window size (3) or 0 for "use k". */
static inline __attribute__((always_inline)) void
snn_pool_plane(const float *restrict s, float *restrict o, int64_t H, int64_t W, int64_t k,
               float *restrict vs, const int K)
{
    if (K) k = K;
    const int64_t Ho = H / k, Wo = W / k, Wk = Wo * k;
    for (int64_t oh = 0; oh < Ho; oh++) {
        const float *restrict r = s + oh * k * W;
        float *restrict q = vs + oh * Wk;
        if (K == 3) {
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
    if (K == 3) {
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

/* Planes p0 .. p0+g-1 (of P) over all T steps: x is [T, P, H, W] (or [P, H, W] static), out
 * [T, P, Ho, Wo]. The T loop is outside the plane loop, so each step reads g consecutive input
 * planes and writes g consecutive output planes (one run of g * Ho * Wo floats). v is g*H*W
 * floats of scratch, sp and rs H*W each. */
static inline __attribute__((always_inline)) void
snn_pool_block(const float *restrict x, float *restrict out, const float *restrict v_in,
               float *restrict v_out, const float *restrict theta, int64_t n_theta, int64_t P,
               int64_t H, int64_t W, int64_t k, int64_t T, int64_t p0, int64_t g, snn_params prm,
               float *restrict v, float *restrict sp, float *restrict rs, const int kind,
               const int reset, const int is_static, const int pool2)
{
    const float v_init = prm.v_init, v_reset = prm.v_reset, tau = prm.tau, beta = prm.beta;
    const float v_rest = prm.v_rest;
    const int64_t n = H * W, M = P * n, HoWo = (H / k) * (W / k);
    const int64_t i0 = p0 * n;

    if (v_in) {
        for (int64_t j = 0; j < g * n; j++) v[j] = v_in[i0 + j];
    } else {
        for (int64_t q = 0; q < g; q++) {
            const float v0 = 0.0f + v_init * theta[n_theta == 1 ? 0 : (p0 + q) % n_theta];
            for (int64_t j = 0; j < n; j++) v[q * n + j] = v0;
        }
    }
    for (int64_t t = 0; t < T; t++) {
        for (int64_t q = 0; q < g; q++) {
            const float th = theta[n_theta == 1 ? 0 : (p0 + q) % n_theta];
            const float *restrict xt = (is_static ? x : x + t * M) + i0 + q * n;
            float *restrict vq = v + q * n;
            for (int64_t j = 0; j < n; j++) {
                float vv = vq[j];
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
                vq[j] = vv;
                sp[j] = s;
            }
            float *restrict ot = out + (t * P + p0 + q) * HoWo;
            if (pool2)
                snn_pool2_plane(sp, ot, H, W);
            else if (k == 3)
                snn_pool_plane(sp, ot, H, W, k, rs, 3);
            else
                snn_pool_plane(sp, ot, H, W, k, rs, 0);
        }
    }
    for (int64_t j = 0; j < g * n; j++) v_out[i0 + j] = v[j];
}

#define SNN_POOL_ARGS                                                                            \
    const float *restrict x, float *restrict out, const float *restrict v_in,                    \
        float *restrict v_out, const float *restrict theta, int64_t n_theta, int64_t P,          \
        int64_t H, int64_t W, int64_t k, int64_t T, int64_t p0, int64_t g, snn_params prm,       \
        float *restrict v, float *restrict sp, float *restrict rs
#define SNN_POOL_INSTANCE(NAME, KIND, RESET, STATIC, POOL2)                                      \
    static void NAME(SNN_POOL_ARGS)                                                              \
    {                                                                                            \
        snn_pool_block(x, out, v_in, v_out, theta, n_theta, P, H, W, k, T, p0, g, prm, v, sp, rs, \
                       KIND, RESET, STATIC, POOL2);                                              \
    }
/* One instance per (kind, reset, input) for k = 2 (2 x 2 vector pool) and one for any k. */
#define SNN_POOL_INSTANCES(NAME, KIND, RESET, STATIC)                                            \
    SNN_POOL_INSTANCE(NAME##_k2, KIND, RESET, STATIC, 1)                                         \
    SNN_POOL_INSTANCE(NAME##_kn, KIND, RESET, STATIC, 0)

SNN_POOL_INSTANCES(pool_if_sub_seq, KIND_IF, RESET_SUBTRACT, 0)
SNN_POOL_INSTANCES(pool_if_sub_sta, KIND_IF, RESET_SUBTRACT, 1)
SNN_POOL_INSTANCES(pool_if_val_seq, KIND_IF, RESET_VALUE, 0)
SNN_POOL_INSTANCES(pool_if_val_sta, KIND_IF, RESET_VALUE, 1)
SNN_POOL_INSTANCES(pool_sj_sub_seq, KIND_LIF_SJ, RESET_SUBTRACT, 0)
SNN_POOL_INSTANCES(pool_sj_sub_sta, KIND_LIF_SJ, RESET_SUBTRACT, 1)
SNN_POOL_INSTANCES(pool_sj_val_seq, KIND_LIF_SJ, RESET_VALUE, 0)
SNN_POOL_INSTANCES(pool_sj_val_sta, KIND_LIF_SJ, RESET_VALUE, 1)
SNN_POOL_INSTANCES(pool_st_sub_seq, KIND_LIF_SNNTORCH, RESET_SUBTRACT, 0)
SNN_POOL_INSTANCES(pool_st_sub_sta, KIND_LIF_SNNTORCH, RESET_SUBTRACT, 1)
SNN_POOL_INSTANCES(pool_st_val_seq, KIND_LIF_SNNTORCH, RESET_VALUE, 0)
SNN_POOL_INSTANCES(pool_st_val_sta, KIND_LIF_SNNTORCH, RESET_VALUE, 1)

typedef void (*snn_pool_fn)(SNN_POOL_ARGS);

/* [kind][reset][static][k == 2] */
static const snn_pool_fn SNN_POOL_TABLE[3][2][2][2] = {
    {{{pool_if_sub_seq_kn, pool_if_sub_seq_k2}, {pool_if_sub_sta_kn, pool_if_sub_sta_k2}},
     {{pool_if_val_seq_kn, pool_if_val_seq_k2}, {pool_if_val_sta_kn, pool_if_val_sta_k2}}},
    {{{pool_sj_sub_seq_kn, pool_sj_sub_seq_k2}, {pool_sj_sub_sta_kn, pool_sj_sub_sta_k2}},
     {{pool_sj_val_seq_kn, pool_sj_val_seq_k2}, {pool_sj_val_sta_kn, pool_sj_val_sta_k2}}},
    {{{pool_st_sub_seq_kn, pool_st_sub_seq_k2}, {pool_st_sub_sta_kn, pool_st_sub_sta_k2}},
     {{pool_st_val_seq_kn, pool_st_val_seq_k2}, {pool_st_val_sta_kn, pool_st_val_sta_k2}}},
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
 * in channel p % C). Groups of `group` consecutive planes (0: as many as fill
 * SNN_POOL_GROUP_BYTES of membrane) are shared out over up to n_threads threads. Returns 0 on
 * success, -1..-3 on a bad argument, -4 when out of memory. */
int snn_neuron_sumpool_f32(const float *x, float *out, const float *v_in, float *v_out,
                           const float *theta, int64_t n_theta, int64_t P, int64_t H, int64_t W,
                           int64_t k, int64_t T, int is_static, int kind, int reset, float v_init,
                           float v_reset, float tau, float beta, float v_rest, int64_t group,
                           int n_threads)
{
    if (kind < 0 || kind > 2) return -1;
    if (reset < 0 || reset > 1) return -2;
    if (P < 0 || H < 1 || W < 1 || k < 1 || k > H || k > W || T < 0 || n_theta < 1 || group < 0)
        return -3;
    if (P == 0) return 0;
    const snn_pool_fn fn = SNN_POOL_TABLE[kind][reset][is_static ? 1 : 0][k == 2];
    const snn_params prm = {v_init, v_reset, tau, beta, v_rest};
    const int64_t n = H * W, HoWo = (H / k) * (W / k);
    snn_advise_hugepages(out, T * P * HoWo * (int64_t)sizeof(float));
    int nt = n_threads < 1 ? 1 : n_threads;
    if ((T + 1) * P * n < 65536) nt = 1; /* threads only pay off beyond ~64k neuron-steps */
    if (nt > P) nt = (int)P;
    /* Planes per group: as many as keep the group's membranes within SNN_POOL_GROUP_BYTES. */
    int64_t G = group > 0 ? group : SNN_POOL_GROUP_BYTES / (n * (int64_t)sizeof(float));
    if (G < 1) G = 1;
    if (G > (P + nt - 1) / nt) G = (P + nt - 1) / nt;
    const int64_t n_groups = (P + G - 1) / G;
    const int64_t stride = (n + 15) / 16 * 16;
    int failed = 0;
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(| : failed)
#endif
    {
        void *buf = NULL;
        if (posix_memalign(&buf, 64, (size_t)((G + 2) * stride) * sizeof(float)) != 0)
            buf = NULL;
        float *sp = (float *)buf;
        float *rs = sp + stride;
        float *v = rs + stride;
        failed |= (buf == NULL);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t b = 0; b < n_groups; b++) {
            if (buf == NULL) continue;
            const int64_t p0 = b * G;
            const int64_t g = (P - p0) < G ? (P - p0) : G;
            fn(x, out, v_in, v_out, theta, n_theta, P, H, W, k, T, p0, g, prm, v, sp, rs);
        }
        free(buf);
    }
    return failed ? -4 : 0;
}
