/* Loops shared by the CPU neuron kernels (inference: cpu_neuron.c, training: cpu_neuron_train.c).
 *
 * The neuron itself is not here: snn_step / snn_bwd are generated from the neuron-family records
 * (snncompile/kernels/cpu_source.py) and prepended to this file at build time. Every loop takes
 * the variant as a `const int` and is instantiated with literal variants (always_inline), so the
 * generated switch folds away and the loop body is branch-free: gcc -O3 -march=native
 * vectorises it (AVX2: 8 neurons per instruction; it needs -fno-trapping-math to if-convert
 * the spike comparison).
 *
 * Exactness: the generated float operations follow the torch reference one for one, in the same
 * order (division by tau, not multiplication by 1/tau; the spike test is (v - theta) >= 0; the
 * value reset is s * v_reset + (1 - s) * v). Build WITHOUT -ffast-math and WITH
 * -ffp-contract=off so that no multiply-add is fused; then results equal torch's bit for bit.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

/* One step for n neurons: x_t in, spikes (and with save_h, h = u - theta) out, v updated in
 * place. th holds one threshold per neuron, or (th_per_neuron == 0) one for all. THE neuron
 * loop: every kernel runs its neurons through this one. */
static inline __attribute__((always_inline)) void
snn_run(const int variant, const float *restrict xt, float *restrict st, float *restrict ht,
        float *restrict v, const float *restrict th, const int th_per_neuron, int64_t n,
        const float *restrict P, const int save_h)
{
    const float th0 = th[0];
    for (int64_t j = 0; j < n; j++) {
        const snn_step_out o = snn_step(variant, v[j], xt[j], th_per_neuron ? th[j] : th0, P);
        v[j] = o.v;
        st[j] = o.s;
        if (save_h) ht[j] = o.h;
    }
}

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

/* Ask for transparent huge pages on a large, freshly allocated output before the first write.
 * A big torch.empty is a fresh mmap, and faulting it in 4 KiB pages costs far more than writing
 * it (several us a page under a hypervisor); with 2 MiB pages the first touch is ~10x cheaper.
 * Only a hint: content is untouched, and where THP is off it does nothing. */
static inline void snn_advise_hugepages(void *ptr, int64_t bytes)
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

