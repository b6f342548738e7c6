"""The CUDA C++ text of the neuron kernels: a prelude and three kernel loops, family-agnostic.

cuda_source.py fills them in: ``${STEP}`` is the family's step rendered from its record
(snncompile/neurons) by ``CAlgebra(cuda=True)`` -- ``neuron_step`` (charge, fire, reset) for the
forward kernels, ``bptt_step`` for the backward one -- and ``${PARAMS_STRUCT}``/``${PARAM_ARGS}``
/``${PARAM_INIT}`` carry the family's float parameters (each with its host-computed fp32
reciprocal ``<name>_inv``) as one ``Params P``. Nothing here names a family.
"""
from __future__ import annotations

__all__ = ["DTYPES", "TYPES", "PRELUDE", "FORWARD", "POOLED_FORWARD", "BACKWARD", "KMAX"]

#: torch dtype name -> (CUDA storage type, neurons per thread on the 16-byte vectorised path)
DTYPES = {"float32": ("float", 4), "float16": ("__half", 8), "bfloat16": ("bf16_t", 8)}
#: the largest sum-pool window the fused kernel keeps in registers (k*k membranes per thread)
KMAX = 4

TYPES = {
    "float32": "",
    "float16": r"""SNN_HD float to_f32(__half a) { return __half2float(a); }
template <> SNN_HD __half from_f32<__half>(float a) { return __float2half_rn(a); }
""",
    # bfloat16 by hand: NVRTC under CuPy has no <cuda_bf16.h>. Round to nearest even like torch.
    "bfloat16": r"""struct alignas(2) bf16_t { unsigned short bits; };
SNN_HD float to_f32(bf16_t a) { return bits_f32((unsigned)a.bits << 16); }
template <> SNN_HD bf16_t from_f32<bf16_t>(float a) {
  const unsigned u = f32_bits(a);
  bf16_t r;
  r.bits = (u & 0x7fffffffu) > 0x7f800000u ? 0x7fc0 : (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  return r;
}
""",
}

PRELUDE = r"""// snncompile neuron kernel ${NAME}: ${SUMMARY}
${INCLUDES}#define SNN_HD __host__ __device__ __forceinline__
namespace ${NAME}_impl {
// Exact fp32 steps: PTX with .rn and no .ftz, so nothing fuses into an FMA or flushes to zero
// (CuPy adds -ftz=true) and spikes match PyTorch's op-by-op arithmetic bit for bit.
#ifdef __CUDA_ARCH__
#define SNN_PTX_OP(name, op) __device__ __forceinline__ float name(float a, float b) { \
  float r; asm(op " %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
SNN_PTX_OP(f32_add, "add.rn.f32") SNN_PTX_OP(f32_sub, "sub.rn.f32") SNN_PTX_OP(f32_mul, "mul.rn.f32")
SNN_PTX_OP(f32_div, "div.rn.f32")
__device__ __forceinline__ bool f32_ge0(float a) {  // a >= 0, IEEE (a denormal is not zero)
  unsigned r; asm("{ .reg .pred p; setp.ge.f32 p, %1, 0f00000000; selp.u32 %0, 1, 0, p; }" : "=r"(r) : "f"(a));
  return r != 0;
}
__device__ __forceinline__ unsigned f32_bits(float a) { return __float_as_uint(a); }
__device__ __forceinline__ float bits_f32(unsigned u) { return __uint_as_float(u); }
#else  // host build of the same source (the tests emulate the kernels on the CPU)
inline float f32_add(float a, float b) { return a + b; }
inline float f32_sub(float a, float b) { return a - b; }
inline float f32_mul(float a, float b) { return a * b; }
inline float f32_div(float a, float b) { return a / b; }
inline bool f32_ge0(float a) { return a >= 0.0f; }
inline unsigned f32_bits(float a) { union { float f; unsigned u; } c; c.f = a; return c.u; }
inline float bits_f32(unsigned u) { union { unsigned u; float f; } c; c.u = u; return c.f; }
#endif
SNN_HD float to_f32(float a) { return a; }
template <typename T> SNN_HD T from_f32(float a);
template <> SNN_HD float from_f32<float>(float a) { return a; }
${TYPE_SUPPORT}
typedef ${IO_T} io_t;  // x, spikes and grad_x in memory; state and arithmetic are fp32
typedef ${H_T} h_t;  // saved h of each step (u - theta, multi: u/theta - 1), sign bit = the +1 spike
constexpr int VEC = ${VEC};  // neurons per thread: one 16-byte access of io_t
constexpr bool PER_CHANNEL = ${PER_CHANNEL};  // theta[(i / inner) % C], else theta[0]
constexpr bool STATIC_INPUT = ${STATIC_INPUT};  // x is one step [N...]: read once, used T times
// The family's float parameters, each with its fp32 reciprocal (computed on the host).
struct Params { ${PARAMS_STRUCT} };

// VEC consecutive values at p[i..]: one vector access when `vec` (16-byte aligned, all valid),
// else element by element for the first n only (unaligned tensors, the tail of N).
template <typename T> struct alignas(sizeof(T) * VEC < 16 ? sizeof(T) * VEC : 16) Pack { T v[VEC]; };
template <typename T> SNN_HD void load(const T* __restrict__ p, long long i, int n, bool vec, float (&out)[VEC]) {
  if (vec) {
    const Pack<T> pk = *reinterpret_cast<const Pack<T>*>(p + i);
    for (int k = 0; k < VEC; ++k) out[k] = to_f32(pk.v[k]);
  } else {
    for (int k = 0; k < VEC; ++k) out[k] = k < n ? to_f32(p[i + k]) : 0.0f;
  }
}
template <typename T> SNN_HD void store(T* __restrict__ p, long long i, int n, bool vec, const float (&in)[VEC]) {
  if (vec) {
    Pack<T> pk;
    for (int k = 0; k < VEC; ++k) pk.v[k] = from_f32<T>(in[k]);
    *reinterpret_cast<Pack<T>*>(p + i) = pk;
  } else {
    for (int k = 0; k < VEC; ++k) if (k < n) p[i + k] = from_f32<T>(in[k]);
  }
}
// Thresholds of neurons i0 .. i0+VEC-1: theta[0], or theta[(i / inner) % C] (one division).
SNN_HD void load_theta(const float* __restrict__ theta, long long i0, long long inner, int C, float (&th)[VEC]) {
  const long long q = PER_CHANNEL ? i0 / inner : 0;
  long long r = i0 - q * inner;
  int c = PER_CHANNEL ? (int)(q % C) : 0;
  for (int k = 0; k < VEC; ++k) {
    th[k] = theta[c];
    if (PER_CHANNEL && ++r == inner) { r = 0; c = c + 1 == C ? 0 : c + 1; }
  }
}
SNN_HD float sign_spike(float h) {  // |h| with the sign bit set unless the +1 spike fired (h >= 0)
  return bits_f32((f32_bits(h) & 0x7fffffffu) | (f32_ge0(h) ? 0u : 0x80000000u));
}
${STEP}"""

# One thread runs VEC neighbouring neurons through all T steps, state in registers.
FORWARD = r"""
constexpr bool SAVE_H = ${SAVE_H};  // training forward: store h for the backward pass
extern "C" __global__ void __launch_bounds__(256) ${NAME}(const io_t* __restrict__ x,
    const float* __restrict__ theta, const float* __restrict__ v_in, io_t* __restrict__ spikes,
    float* __restrict__ v_out, h_t* __restrict__ h_out, long long N, int T, long long inner, int C,
    int vectorised${PARAM_ARGS}) {
  const Params P = {${PARAM_INIT}};
  const long long i0 = (blockIdx.x * (long long)blockDim.x + threadIdx.x) * VEC;
  if (i0 >= N) return;
  const int n = N - i0 < VEC ? (int)(N - i0) : VEC;
  const bool vec = vectorised != 0;
  float th[VEC], v[VEC], xt[VEC], s[VEC], h[VEC];
  load_theta(theta, i0, inner, C, th);
  if (v_in) load(v_in, i0, n, vec, v);
  else for (int k = 0; k < VEC; ++k) v[k] = f32_add(0.0f, f32_mul(P.v_init, th[k]));
  if (STATIC_INPUT) load(x, i0, n, vec, xt);
  for (int t = 0; t < T; ++t) {
    const long long at = (long long)t * N + i0;
    if (!STATIC_INPUT) load(x, at, n, vec, xt);
    for (int k = 0; k < VEC; ++k) neuron_step(v[k], xt[k], th[k], P, v[k], s[k], h[k]);
    store(spikes, at, n, vec, s);
    if (SAVE_H) store(h_out, at, n, vec, h);
  }
  store(v_out, i0, n, vec, v);
}
}  // namespace ${NAME}_impl
"""

# Fused neuron + k x k, stride-k sum pool. One thread per window: it runs the window's k*k
# neurons (k <= KMAX, membranes in registers) through the T loop and writes one sum a step; the
# spikes never reach memory. The windows tile each [H, W] plane as ceil(H/k) x ceil(W/k): those
# cut by the bottom or right edge run their neurons too (v and h are outputs) but write no sum
# (floor pooling). Neighbouring threads take neighbouring windows of a row, so a warp reads and
# writes contiguous spans of every row; a window lies in one channel, so one threshold a thread.
POOLED_FORWARD = r"""
constexpr bool SAVE_H = ${SAVE_H};  // training forward: store h for the backward pass
constexpr int KMAX = ${KMAX};
extern "C" __global__ void __launch_bounds__(256) ${NAME}(const io_t* __restrict__ x,
    const float* __restrict__ theta, const float* __restrict__ v_in, io_t* __restrict__ pooled,
    float* __restrict__ v_out, h_t* __restrict__ h_out, long long planes, int H, int W, int k,
    int T, int C${PARAM_ARGS}) {
  const Params P = {${PARAM_INIT}};
  const int WY = (H + k - 1) / k, WX = (W + k - 1) / k, Ho = H / k, Wo = W / k;
  const long long w = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (w >= planes * WY * WX) return;
  const long long plane = w / ((long long)WY * WX);
  const int r = (int)(w - plane * WY * WX), wy = r / WX, wx = r - wy * WX;
  const int ny = H - wy * k < k ? H - wy * k : k, nx = W - wx * k < k ? W - wx * k : k;
  const long long hw = (long long)H * W, N = planes * hw, Np = planes * Ho * Wo;
  const long long base = plane * hw + (long long)wy * k * W + (long long)wx * k;
  const long long out_at = (plane * Ho + wy) * Wo + wx;
  const bool full = wy < Ho && wx < Wo;
  const float th = theta[PER_CHANNEL ? (int)(plane % C) : 0];
  float v[KMAX * KMAX], xs[KMAX * KMAX];
#pragma unroll
  for (int j = 0; j < KMAX * KMAX; ++j) {
    const int dy = j / KMAX, dx = j % KMAX;
    v[j] = 0.0f;
    xs[j] = 0.0f;
    if (dy < ny && dx < nx) {
      const long long i = base + (long long)dy * W + dx;
      v[j] = v_in ? v_in[i] : f32_add(0.0f, f32_mul(P.v_init, th));
      if (STATIC_INPUT) xs[j] = to_f32(x[i]);
    }
  }
  for (int t = 0; t < T; ++t) {
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < KMAX * KMAX; ++j) {
      const int dy = j / KMAX, dx = j % KMAX;
      if (dy < ny && dx < nx) {
        const long long at = (long long)t * N + base + (long long)dy * W + dx;
        float s, h;
        neuron_step(v[j], STATIC_INPUT ? xs[j] : to_f32(x[at]), th, P, v[j], s, h);
        sum = f32_add(sum, s);
        if (SAVE_H) h_out[at] = from_f32<h_t>(h);
      }
    }
    if (full) pooled[(long long)t * Np + out_at] = from_f32<io_t>(sum);
  }
#pragma unroll
  for (int j = 0; j < KMAX * KMAX; ++j) {
    const int dy = j / KMAX, dx = j % KMAX;
    if (dy < ny && dx < nx) v_out[base + (long long)dy * W + dx] = v[j];
  }
}
}  // namespace ${NAME}_impl
"""

# BPTT, one thread per VEC neurons, t = T-1..0 carrying gv = dL/dv_t. Null outputs are skipped;
# grad_theta gets per-neuron partial sums. POOLED: the layer was fused with a pool_k x pool_k sum
# pool over [pool_h, pool_w] planes; grad_spikes is then the pooled gradient [T, planes, H/k, W/k]
# and neuron (plane, y, x) reads its window's value, 0 outside every window (window offsets are
# worked out once, before the T loop; h and grad_x keep the vectorised path).
BACKWARD = r"""
constexpr bool POOLED = ${POOLED};
extern "C" __global__ void __launch_bounds__(256) ${NAME}(const io_t* __restrict__ grad_spikes,
    const float* __restrict__ grad_v_out, const h_t* __restrict__ h, const float* __restrict__ theta,
    io_t* __restrict__ grad_x, float* __restrict__ grad_v_in, float* __restrict__ grad_theta,
    long long N, int T, long long inner, int C, int vectorised, int has_v_in, float alpha, float keep,
    int pool_k, int pool_h, int pool_w${PARAM_ARGS}) {
  const Params P = {${PARAM_INIT}};
  const long long i0 = (blockIdx.x * (long long)blockDim.x + threadIdx.x) * VEC;
  if (i0 >= N) return;
  const int n = N - i0 < VEC ? (int)(N - i0) : VEC;
  const bool vec = vectorised != 0;
  float th[VEC], gv[VEC], gth[VEC], gx_sum[VEC], gs[VEC], hh[VEC], gx[VEC];
  load_theta(theta, i0, inner, C, th);
  for (int k = 0; k < VEC; ++k) { gv[k] = 0.0f; gth[k] = 0.0f; gx_sum[k] = 0.0f; gs[k] = 0.0f; }
  if (grad_v_out) load(grad_v_out, i0, n, vec, gv);
  long long pbase = 0, Np = 0;  // sum pool: the window of neuron i0+k is at pbase + rel[k] of a step
  int rel[VEC];
  if (POOLED) {
    const int Ho = pool_h / pool_k, Wo = pool_w / pool_k;
    const long long hw = (long long)pool_h * pool_w;
    long long plane = i0 / hw;
    int y = (int)((i0 - plane * hw) / pool_w), xx = (int)(i0 - plane * hw - (long long)y * pool_w);
    Np = N / hw * Ho * Wo;
    pbase = plane * Ho * Wo;
    for (int k = 0; k < VEC; ++k) {  // -1: in no window (the rows and columns floor pooling drops)
      const bool in = k < n && y < Ho * pool_k && xx < Wo * pool_k;
      rel[k] = in ? (int)((plane * Ho + y / pool_k) * Wo + xx / pool_k - pbase) : -1;
      if (++xx == pool_w) { xx = 0; if (++y == pool_h) { y = 0; ++plane; } }
    }
  }
  for (int t = T - 1; t >= 0; --t) {
    const long long at = (long long)t * N + i0;
    if (POOLED && grad_spikes) {
      const io_t* g = grad_spikes + (long long)t * Np + pbase;
      for (int k = 0; k < VEC; ++k) gs[k] = rel[k] >= 0 ? to_f32(g[rel[k]]) : 0.0f;
    } else if (grad_spikes) {
      load(grad_spikes, at, n, vec, gs);
    }
    load(h, at, n, vec, hh);
    for (int k = 0; k < VEC; ++k) {
      bptt(hh[k], th[k], gs[k], gv[k], gth[k], keep, alpha, P, gx[k], gv[k], gth[k]);
      gx_sum[k] = f32_add(gx_sum[k], gx[k]);
    }
    if (!STATIC_INPUT && grad_x) store(grad_x, at, n, vec, gx);
  }
  if (STATIC_INPUT && grad_x) store(grad_x, i0, n, vec, gx_sum);
  if (grad_v_in) store(grad_v_in, i0, n, vec, gv);
  if (grad_theta) {  // v_0 = v_init * theta unless a state was given
    if (!has_v_in) for (int k = 0; k < VEC; ++k) gth[k] = f32_add(gth[k], f32_mul(P.v_init, gv[k]));
    store(grad_theta, i0, n, vec, gth);
  }
}
}  // namespace ${NAME}_impl
"""
