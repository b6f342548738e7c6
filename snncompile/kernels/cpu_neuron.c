/* Fused CPU neuron kernel (every neuron family), float32 in and out.
 *
 * Built as: the generated family code (cpu_source.py: snn_step per variant), then
 * cpu_neuron_loops.h (snn_run, the sum-pool plane helpers), then this file.
 *
 * One pass per neuron over all T steps: the membrane of a block of contiguous neurons lives in a
 * small per-thread array (L1/L2) while the T loop runs inside the block, so the state is read
 * once and written once and each step only streams x[t] in and s[t] out, one contiguous run of
 * `block` floats per step (long enough for the hardware prefetcher). Blocks are shared out over
 * OpenMP threads.
 *
 * Layout: x is [T, M] (sequence) or [M] (static: read once, the same current every step),
 * spikes is [T, M], v_in / v_out are [M] (v_in may be NULL: v starts at 0 + v_init * theta).
 * theta has n_theta values; neuron i uses theta[(i / inner) % n_theta] (per channel: n_theta = C
 * and inner = the size of one channel plane; scalar: n_theta = inner = 1). P is the family's
 * float parameters (abi.param_vector).
 *
 * Fused neuron + 2-D sum pool (snn_neuron_sumpool_f32): the step is [P = N*C planes, H, W] and
 * what comes out is not the spikes but their k x k window sums (stride k, padding 0, floor:
 * trailing rows/columns that fill no window are simulated but not pooled), [T, P, H/k, W/k].
 * A plane at a time: its H*W membranes live in a per-thread array (L1), and each step the plane
 * is updated (snn_run, the plane's threshold one value) into an H*W spike array that is pooled
 * at once into out[t, p]; the spike tensor is never written. A thread takes a group of
 * consecutive planes (about SNN_POOL_GROUP_BYTES of membrane) and runs the T loop outside the
 * plane loop, so each step reads and writes one run of g planes, not g short runs far apart.
 * Sums of up to k*k spike values (0/1, or multi-spike counts up to max_spikes <= 2^16) are exact
 * in fp32 in any order, so the result equals
 * avg_pool2d(spikes, k, k, divisor_override=1) of the reference's spikes, and v is the
 * reference's bit for bit.
 */

/* Default neurons per block: 3 arrays of 8192 floats (96 KiB) stay in L2 on current x86. */
#ifndef SNN_BLOCK
#define SNN_BLOCK 8192
#endif

/* Fused neuron + sum pool: planes per group are chosen so that their membranes fill about this
 * many bytes (L1-resident with the input planes they read). */
#ifndef SNN_POOL_GROUP_BYTES
#define SNN_POOL_GROUP_BYTES 16384
#endif

/* One block of n neurons starting at i0, all T steps; v, th, xs are n-float scratch arrays. */
static inline __attribute__((always_inline)) void
snn_block(const float *restrict x, float *restrict spikes, const float *restrict v_in,
          float *restrict v_out, const float *restrict theta, int64_t n_theta, int64_t inner,
          int64_t M, int64_t T, int64_t i0, int64_t n, float v_init, const float *restrict P,
          float *restrict v, float *restrict th, float *restrict xs, const int variant,
          const int is_static)
{
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
    for (int64_t t = 0; t < T; t++)
        snn_run(variant, is_static ? xs : x + t * M + i0, spikes + t * M + i0, NULL, v, th, 1, n, P, 0);
    for (int64_t j = 0; j < n; j++) v_out[i0 + j] = v[j];
}

#define SNN_ARGS                                                                                 \
    const float *restrict x, float *restrict spikes, const float *restrict v_in,                 \
        float *restrict v_out, const float *restrict theta, int64_t n_theta, int64_t inner,      \
        int64_t M, int64_t T, int64_t i0, int64_t n, float v_init, const float *restrict P,      \
        float *restrict v, float *restrict th, float *restrict xs
#define SNN_INSTANCE(NAME, VARIANT, STATIC)                                                      \
    static void NAME(SNN_ARGS)                                                                   \
    {                                                                                            \
        snn_block(x, spikes, v_in, v_out, theta, n_theta, inner, M, T, i0, n, v_init, P, v, th,  \
                  xs, VARIANT, STATIC);                                                          \
    }
#define SNN_BLOCK_INSTANCES(V) SNN_INSTANCE(blk_##V##_seq, V, 0) SNN_INSTANCE(blk_##V##_sta, V, 1)
SNN_FOR_EACH_VARIANT(SNN_BLOCK_INSTANCES)
typedef void (*snn_block_fn)(SNN_ARGS);
#define SNN_BLOCK_ROW(V) {blk_##V##_seq, blk_##V##_sta},
static const snn_block_fn SNN_TABLE[SNN_N_VARIANTS][2] = {SNN_FOR_EACH_VARIANT(SNN_BLOCK_ROW)};

/* Planes p0 .. p0+g-1 (of P) over all T steps: x is [T, P, H, W] (or [P, H, W] static), out
 * [T, P, Ho, Wo]. The T loop is outside the plane loop, so each step reads g consecutive input
 * planes and writes g consecutive output planes (one run of g * Ho * Wo floats). v is g*H*W
 * floats of scratch, sp and rs H*W each. */
static inline __attribute__((always_inline)) void
snn_pool_block(const float *restrict x, float *restrict out, const float *restrict v_in,
               float *restrict v_out, const float *restrict theta, int64_t n_theta, int64_t NP,
               int64_t H, int64_t W, int64_t k, int64_t T, int64_t p0, int64_t g, float v_init,
               const float *restrict P, float *restrict v, float *restrict sp, float *restrict rs,
               const int variant, const int is_static, const int pool2)
{
    const int64_t n = H * W, M = NP * n, HoWo = (H / k) * (W / k);
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
            const float *th = theta + (n_theta == 1 ? 0 : (p0 + q) % n_theta);
            const float *restrict xt = (is_static ? x : x + t * M) + i0 + q * n;
            snn_run(variant, xt, sp, NULL, v + q * n, th, 0, n, P, 0);
            float *restrict ot = out + (t * NP + p0 + q) * HoWo;
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
        float *restrict v_out, const float *restrict theta, int64_t n_theta, int64_t NP,         \
        int64_t H, int64_t W, int64_t k, int64_t T, int64_t p0, int64_t g, float v_init,         \
        const float *restrict P, float *restrict v, float *restrict sp, float *restrict rs
#define SNN_POOL_INSTANCE(NAME, VARIANT, STATIC, POOL2)                                          \
    static void NAME(SNN_POOL_ARGS)                                                              \
    {                                                                                            \
        snn_pool_block(x, out, v_in, v_out, theta, n_theta, NP, H, W, k, T, p0, g, v_init, P, v, \
                       sp, rs, VARIANT, STATIC, POOL2);                                          \
    }
/* One instance per (variant, input) for k = 2 (2 x 2 vector pool) and one for any k. */
#define SNN_POOL_INSTANCES(V)                                                                    \
    SNN_POOL_INSTANCE(pool_##V##_seq_kn, V, 0, 0) SNN_POOL_INSTANCE(pool_##V##_seq_k2, V, 0, 1)  \
    SNN_POOL_INSTANCE(pool_##V##_sta_kn, V, 1, 0) SNN_POOL_INSTANCE(pool_##V##_sta_k2, V, 1, 1)
SNN_FOR_EACH_VARIANT(SNN_POOL_INSTANCES)
typedef void (*snn_pool_fn)(SNN_POOL_ARGS);
/* [variant][static][k == 2] */
#define SNN_POOL_ROW(V) {{pool_##V##_seq_kn, pool_##V##_seq_k2}, {pool_##V##_sta_kn, pool_##V##_sta_k2}},
static const snn_pool_fn SNN_POOL_TABLE[SNN_N_VARIANTS][2][2] = {SNN_FOR_EACH_VARIANT(SNN_POOL_ROW)};

/* Default block size (neurons); the Python side reports it. */
int snn_block_size(void) { return SNN_BLOCK; }

/* The number of compiled variants (the Python side checks it matches its list). */
int snn_n_variants(void) { return SNN_N_VARIANTS; }

/* 1 when built with OpenMP, else 0. */
int snn_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* Run the neuron over T steps, `block` neurons at a time (0: SNN_BLOCK) on up to n_threads
 * threads. Returns 0 on success, -1 for an unknown variant, -3 on a bad size, -4 when out of
 * memory. */
int snn_neuron_f32(const float *x, float *spikes, const float *v_in, float *v_out,
                   const float *theta, int64_t n_theta, int64_t inner, int64_t M, int64_t T,
                   int is_static, int variant, float v_init, const float *P, int64_t block,
                   int n_threads)
{
    if (variant < 0 || variant >= SNN_N_VARIANTS) return -1;
    if (M < 0 || T < 0 || n_theta < 1 || inner < 1 || block < 0) return -3;
    if (M == 0) return 0;
    const snn_block_fn fn = SNN_TABLE[variant][is_static ? 1 : 0];
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
            fn(x, spikes, v_in, v_out, theta, n_theta, inner, M, T, i0, n, v_init, P, v, th, xs);
        }
        free(buf);
    }
    return failed ? -4 : 0;
}

/* Run the neuron over T steps on NP planes of H x W neurons and write the k x k window sums of
 * each step's spikes (stride k, floor) to out [T, NP, H/k, W/k]; the final membrane of every
 * neuron (pooled or not) goes to v_out [NP, H, W]. theta has n_theta values (1, or C with plane
 * p in channel p % C). Groups of `group` consecutive planes (0: as many as fill
 * SNN_POOL_GROUP_BYTES of membrane) are shared out over up to n_threads threads. Returns 0 on
 * success, -1 for an unknown variant, -3 on a bad size, -4 when out of memory. */
int snn_neuron_sumpool_f32(const float *x, float *out, const float *v_in, float *v_out,
                           const float *theta, int64_t n_theta, int64_t NP, int64_t H, int64_t W,
                           int64_t k, int64_t T, int is_static, int variant, float v_init,
                           const float *P, int64_t group, int n_threads)
{
    if (variant < 0 || variant >= SNN_N_VARIANTS) return -1;
    if (NP < 0 || H < 1 || W < 1 || k < 1 || k > H || k > W || T < 0 || n_theta < 1 || group < 0)
        return -3;
    if (NP == 0) return 0;
    const snn_pool_fn fn = SNN_POOL_TABLE[variant][is_static ? 1 : 0][k == 2];
    const int64_t n = H * W, HoWo = (H / k) * (W / k);
    snn_advise_hugepages(out, T * NP * HoWo * (int64_t)sizeof(float));
    int nt = n_threads < 1 ? 1 : n_threads;
    if ((T + 1) * NP * n < 65536) nt = 1; /* threads only pay off beyond ~64k neuron-steps */
    if (nt > NP) nt = (int)NP;
    /* Planes per group: as many as keep the group's membranes within SNN_POOL_GROUP_BYTES. */
    int64_t G = group > 0 ? group : SNN_POOL_GROUP_BYTES / (n * (int64_t)sizeof(float));
    if (G < 1) G = 1;
    if (G > (NP + nt - 1) / nt) G = (NP + nt - 1) / nt;
    const int64_t n_groups = (NP + G - 1) / G;
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
            const int64_t g = (NP - p0) < G ? (NP - p0) : G;
            fn(x, out, v_in, v_out, theta, n_theta, NP, H, W, k, T, p0, g, v_init, P, v, sp, rs);
        }
        free(buf);
    }
    return failed ? -4 : 0;
}
