"""CUDA C++ source of the neuron kernels: one template per neuron family, specialised by text.

A :class:`Specialisation` names one kernel: family (IF, LIF in SpikingJelly or snnTorch form), I/O
dtype (fp32, fp16, bf16; state and arithmetic always fp32), threshold (scalar / per channel),
input (sequence [T, N, ...] / static [N, ...] read once), reset (subtract / to value) and mode
(``infer``: spikes + final v; ``train``: also saves h; ``backward``: BPTT with a surrogate).
``render_source(spec)`` is its complete source, ``list_specialisations()`` lists them all::

    from snncompile.kernels.cuda_source import Specialisation, render_source
    print(render_source(Specialisation("lif", "snntorch", "float16", mode="backward", surrogate="atan")))

Each source has one ``extern "C"`` kernel, ``spec.kernel_name`` (its signature is in the source):
a thread runs ``spec.vec`` neighbouring neurons (one 16-byte access of the I/O dtype, or element
by element when the launcher finds the tensors unaligned) through the whole T loop, state in
registers. Neuron ``i`` of a step has threshold ``theta[(i / inner) % C]`` (C = dim 1 of a step,
inner = product of the dims after it). Training saves ``h = v - theta`` before each spike with the
spike in its sign bit, so rounding h to fp16/bf16 never changes which steps spiked. A gradient
output passed as a null pointer is omitted (not computed); ``grad_theta`` gets per-neuron partial
sums for the caller to reduce. Each source keeps its helpers in its own namespace, so sources
concatenate into one file. Only ``<cuda_fp16.h>`` is included (CuPy bundles it for NVRTC); bf16
is converted by hand (``bf16_t``, round to nearest even like torch).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from string import Template

from ..errors import KernelError
from ..surrogate import SURROGATES, get_surrogate

__all__ = ["Specialisation", "render_source", "list_specialisations", "TEMPLATES", "DTYPES"]

#: torch dtype name -> (CUDA storage type, neurons per thread on the 16-byte vectorised path)
DTYPES = {"float32": ("float", 4), "float16": ("__half", 8), "bfloat16": ("bf16_t", 8)}
FORMS = {"if": ("none",), "lif": ("spikingjelly", "snntorch")}
MODES = ("infer", "train", "backward")

_TYPES = {
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

_PRELUDE = r"""// snncompile neuron kernel ${NAME}: ${SUMMARY}
${INCLUDES}#define SNN_HD __host__ __device__ __forceinline__
namespace ${NAME}_impl {
// Exact fp32 steps: PTX with .rn and no .ftz, so nothing fuses into an FMA or flushes to zero
// (CuPy adds -ftz=true) and spikes match PyTorch's op-by-op arithmetic bit for bit.
#ifdef __CUDA_ARCH__
#define SNN_PTX_OP(name, op) __device__ __forceinline__ float name(float a, float b) { \
  float r; asm(op " %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
SNN_PTX_OP(f32_add, "add.rn.f32") SNN_PTX_OP(f32_sub, "sub.rn.f32") SNN_PTX_OP(f32_mul, "mul.rn.f32")
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
inline bool f32_ge0(float a) { return a >= 0.0f; }
inline unsigned f32_bits(float a) { union { float f; unsigned u; } c; c.f = a; return c.u; }
inline float bits_f32(unsigned u) { union { unsigned u; float f; } c; c.u = u; return c.f; }
#endif
SNN_HD float to_f32(float a) { return a; }
template <typename T> SNN_HD T from_f32(float a);
template <> SNN_HD float from_f32<float>(float a) { return a; }
${TYPE_SUPPORT}
typedef ${IO_T} io_t;  // x, spikes and grad_x in memory; state and arithmetic are fp32
typedef ${H_T} h_t;  // saved h = v - theta before the spike (training)
constexpr int VEC = ${VEC};  // neurons per thread: one 16-byte access of io_t
constexpr bool PER_CHANNEL = ${PER_CHANNEL};  // theta[(i / inner) % C], else theta[0]
constexpr bool STATIC_INPUT = ${STATIC_INPUT};  // x is one step [N...]: read once, used T times
constexpr bool RESET_SUBTRACT = ${RESET_SUBTRACT};  // on a spike v -= theta, else v = v_reset
struct Params { float v_init, v_reset, inv_tau, beta, v_rest, alpha; bool detach_reset; };

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
"""

_IF_DYNAMICS = r"""
// ---- IF: v <- v + x ---------------------------------------------------------------------
SNN_HD float charge(float v, float x, const Params& p) { return f32_add(v, x); }
SNN_HD float charge_grad_v(float g, const Params& p) { return g; }  // dL/dv_prev from dL/du
SNN_HD float charge_grad_x(float g, const Params& p) { return g; }  // dL/dx from dL/du
"""

_LIF_DYNAMICS = r"""
// ---- LIF, ${FORM} form -------------------------------------------------------------------
//   spikingjelly: v <- v + (x - (v - v_rest)) / tau   (as * fp32(1/tau), like torch's CUDA division)
//   snntorch:     v <- beta * v + x
constexpr bool SNNTORCH_FORM = ${SNNTORCH_FORM};
SNN_HD float charge(float v, float x, const Params& p) {
  if (SNNTORCH_FORM) return f32_add(f32_mul(p.beta, v), x);
  return f32_add(v, f32_mul(f32_sub(x, f32_sub(v, p.v_rest)), p.inv_tau));
}
SNN_HD float charge_grad_v(float g, const Params& p) { return SNNTORCH_FORM ? p.beta * g : g - g * p.inv_tau; }
SNN_HD float charge_grad_x(float g, const Params& p) { return SNNTORCH_FORM ? g : g * p.inv_tau; }
"""

# One thread runs VEC neighbouring neurons through all T steps, state in registers.
_FORWARD = r"""
constexpr bool SAVE_H = ${SAVE_H};  // training forward: store h for the backward pass
extern "C" __global__ void __launch_bounds__(256) ${NAME}(const io_t* __restrict__ x,
    const float* __restrict__ theta, const float* __restrict__ v_in, io_t* __restrict__ spikes,
    float* __restrict__ v_out, h_t* __restrict__ h_out, long long N, int T, long long inner, int C,
    int vectorised, float v_init, float v_reset, float inv_tau, float beta, float v_rest) {
  const Params p = {v_init, v_reset, inv_tau, beta, v_rest, 0.0f, false};
  const long long i0 = (blockIdx.x * (long long)blockDim.x + threadIdx.x) * VEC;
  if (i0 >= N) return;
  const int n = N - i0 < VEC ? (int)(N - i0) : VEC;
  const bool vec = vectorised != 0;
  float th[VEC], v[VEC], xt[VEC], s[VEC], h[VEC];
  load_theta(theta, i0, inner, C, th);
  if (v_in) load(v_in, i0, n, vec, v);
  else for (int k = 0; k < VEC; ++k) v[k] = f32_mul(p.v_init, th[k]);
  if (STATIC_INPUT) load(x, i0, n, vec, xt);
  for (int t = 0; t < T; ++t) {
    const long long at = (long long)t * N + i0;
    if (!STATIC_INPUT) load(x, at, n, vec, xt);
    for (int k = 0; k < VEC; ++k) {
      v[k] = charge(v[k], xt[k], p);
      h[k] = f32_sub(v[k], th[k]);  // the surrogate's argument
      const bool fire = f32_ge0(h[k]);  // s = (v - theta >= 0), decided exactly as torch does
      s[k] = fire ? 1.0f : 0.0f;
      if (fire) v[k] = RESET_SUBTRACT ? f32_sub(v[k], th[k]) : p.v_reset;
      h[k] = bits_f32((f32_bits(h[k]) & 0x7fffffffu) | (fire ? 0u : 0x80000000u));  // sign = spike
    }
    store(spikes, at, n, vec, s);
    if (SAVE_H) store(h_out, at, n, vec, h);
  }
  store(v_out, i0, n, vec, v);
}
}  // namespace ${NAME}_impl
"""

_BACKWARD = r"""
// ---- surrogate ${SURROGATE_NAME}: d spike / d h at h = v - theta -----------------------------
SNN_HD float surrogate_grad(float x, float alpha) { return ${SURROGATE}; }

// BPTT: u_t = charge(v_{t-1}, x_t); s_t = H(u_t - theta); v_t = reset(u_t, s_t). Walk t = T-1..0
// carrying gv = dL/dv_t. Null outputs are skipped; grad_theta gets per-neuron partial sums.
extern "C" __global__ void __launch_bounds__(256) ${NAME}(const io_t* __restrict__ grad_spikes,
    const float* __restrict__ grad_v_out, const h_t* __restrict__ h, const float* __restrict__ theta,
    io_t* __restrict__ grad_x, float* __restrict__ grad_v_in, float* __restrict__ grad_theta,
    long long N, int T, long long inner, int C, int vectorised, int has_v_in, float v_init,
    float v_reset, float inv_tau, float beta, float v_rest, float alpha, int detach_reset) {
  const Params p = {v_init, v_reset, inv_tau, beta, v_rest, alpha, detach_reset != 0};
  const long long i0 = (blockIdx.x * (long long)blockDim.x + threadIdx.x) * VEC;
  if (i0 >= N) return;
  const int n = N - i0 < VEC ? (int)(N - i0) : VEC;
  const bool vec = vectorised != 0;
  float th[VEC], gv[VEC], gth[VEC], gx_sum[VEC], gs[VEC], hh[VEC], gx[VEC];
  load_theta(theta, i0, inner, C, th);
  for (int k = 0; k < VEC; ++k) { gv[k] = 0.0f; gth[k] = 0.0f; gx_sum[k] = 0.0f; gs[k] = 0.0f; }
  if (grad_v_out) load(grad_v_out, i0, n, vec, gv);
  for (int t = T - 1; t >= 0; --t) {
    const long long at = (long long)t * N + i0;
    if (grad_spikes) load(grad_spikes, at, n, vec, gs);
    load(h, at, n, vec, hh);
    for (int k = 0; k < VEC; ++k) {
      const bool fire = (f32_bits(hh[k]) >> 31) == 0u;
      const float sg = surrogate_grad(hh[k], p.alpha);
      float g_spike = gs[k];  // dL/ds_t
      float g_u;  // dL/du_t through the reset's direct path
      if (RESET_SUBTRACT) {  // v_t = u_t - s_t * theta
        if (!p.detach_reset) g_spike -= gv[k] * th[k];
        g_u = gv[k];
        if (fire) gth[k] -= gv[k];
      } else {  // v_t = s_t * v_reset + (1 - s_t) * u_t
        if (!p.detach_reset) g_spike += gv[k] * (p.v_reset - (hh[k] + th[k]));
        g_u = fire ? 0.0f : gv[k];
      }
      const float g_h = g_spike * sg;  // through s_t = H(u_t - theta)
      g_u += g_h;
      gth[k] -= g_h;
      gx[k] = charge_grad_x(g_u, p);
      gx_sum[k] += gx[k];
      gv[k] = charge_grad_v(g_u, p);
    }
    if (!STATIC_INPUT && grad_x) store(grad_x, at, n, vec, gx);
  }
  if (STATIC_INPUT && grad_x) store(grad_x, i0, n, vec, gx_sum);
  if (grad_v_in) store(grad_v_in, i0, n, vec, gv);
  if (grad_theta) {  // v_0 = v_init * theta unless a state was given
    if (!has_v_in) for (int k = 0; k < VEC; ++k) gth[k] += p.v_init * gv[k];
    store(grad_theta, i0, n, vec, gth);
  }
}
}  // namespace ${NAME}_impl
"""

#: One source template per neuron family; ``${KERNEL}`` is the forward or backward loop.
TEMPLATES = {"if": _PRELUDE + _IF_DYNAMICS + "${KERNEL}", "lif": _PRELUDE + _LIF_DYNAMICS + "${KERNEL}"}


@dataclass(frozen=True)
class Specialisation:
    """One compiled kernel, and the launcher's cache key.

    family "if" | "lif"; form "none" (IF) | "spikingjelly" | "snntorch"; dtype (of x and the
    spikes) "float32" | "float16" | "bfloat16"; threshold "scalar" | "channel"; input_kind
    "sequence" | "static"; reset "subtract" | "value"; mode "infer" | "train" | "backward";
    surrogate: a registered name (backward only); h_dtype: dtype of the saved h, "float32" or
    ``dtype`` (train and backward; defaults to "float32").
    """

    family: str = "if"
    form: str = "none"
    dtype: str = "float32"
    threshold: str = "scalar"
    input_kind: str = "sequence"
    reset: str = "subtract"
    mode: str = "infer"
    surrogate: str | None = None
    h_dtype: str | None = None

    def __post_init__(self):
        if self.mode != "infer" and self.h_dtype is None:
            object.__setattr__(self, "h_dtype", "float32")
        ok = (self.form in FORMS.get(self.family, ()) and self.dtype in DTYPES
              and self.threshold in ("scalar", "channel") and self.input_kind in ("sequence", "static")
              and self.reset in ("subtract", "value") and self.mode in MODES
              and (self.surrogate is not None) == (self.mode == "backward")
              and (self.h_dtype is None) == (self.mode == "infer")
              and self.h_dtype in (None, "float32", self.dtype))
        if not ok:
            raise KernelError(f"invalid kernel specialisation {self!r}; valid ones are listed by "
                              "snncompile.kernels.cuda_source.list_specialisations()")
        if self.surrogate is not None:
            get_surrogate(self.surrogate)

    @property
    def vec(self) -> int:
        """Neurons per thread (one 16-byte access of the I/O dtype)."""
        return DTYPES[self.dtype][1]

    @property
    def kernel_name(self) -> str:
        """The kernel's C name, unique per specialisation."""
        short = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
        parts = [{"none": "if", "spikingjelly": "lifsj", "snntorch": "lifst"}[self.form],
                 short[self.dtype], "chan" if self.threshold == "channel" else "scal",
                 self.input_kind[:3], self.reset[:3], self.mode]
        if self.surrogate is not None:
            parts.append(re.sub(r"\W", "_", self.surrogate))
        if self.h_dtype is not None:
            parts.append("h" + short[self.h_dtype])
        return "snn_" + "_".join(parts)

    @classmethod
    def for_neuron(cls, spec, dtype, per_channel: bool, mode: str, h_dtype=None) -> "Specialisation":
        """The specialisation that runs a ``NeuronSpec`` on ``dtype`` (torch dtype or name)."""
        name = str(dtype).replace("torch.", "")
        h = None if mode == "infer" else str(h_dtype or "float32").replace("torch.", "")
        return cls(spec.kind, "none" if spec.kind == "if" else spec.form, name,
                   "channel" if per_channel else "scalar", spec.input_kind, spec.reset, mode,
                   spec.surrogate if mode == "backward" else None, h)


def render_source(spec: Specialisation) -> str:
    """Return the complete CUDA C++ source of one specialisation (what NVRTC compiles)."""
    h_dtype = spec.h_dtype or "float32"
    flag = lambda b: "true" if b else "false"  # noqa: E731
    subs = dict(NAME=spec.kernel_name, VEC=spec.vec, FORM=spec.form,
                SUMMARY=", ".join(f"{k}={v}" for k, v in vars(spec).items() if v is not None),
                INCLUDES="#include <cuda_fp16.h>\n" if "float16" in (spec.dtype, h_dtype) else "",
                TYPE_SUPPORT=_TYPES[spec.dtype], IO_T=DTYPES[spec.dtype][0], H_T=DTYPES[h_dtype][0],
                PER_CHANNEL=flag(spec.threshold == "channel"), STATIC_INPUT=flag(spec.input_kind == "static"),
                RESET_SUBTRACT=flag(spec.reset == "subtract"), SNNTORCH_FORM=flag(spec.form == "snntorch"),
                SAVE_H=flag(spec.mode == "train"))
    if spec.mode == "backward":
        sur = get_surrogate(spec.surrogate)
        kernel = Template(_BACKWARD).substitute(subs, SURROGATE_NAME=sur.name, SURROGATE=sur.cuda)
    else:
        kernel = Template(_FORWARD).substitute(subs)
    return Template(TEMPLATES[spec.family]).substitute(subs, KERNEL=kernel).replace("\n\n\n", "\n\n")


def list_specialisations(surrogates=None) -> list[Specialisation]:
    """Every kernel: families/forms x dtypes x thresholds x inputs x resets x modes.

    Train and backward come once per saved-h dtype (fp32, plus the I/O dtype when that is
    fp16/bf16), backward once per surrogate (default: every registered one).
    """
    surrogates = sorted(SURROGATES) if surrogates is None else list(surrogates)
    out = []
    for (family, forms), dtype in itertools.product(FORMS.items(), DTYPES):
        for base in itertools.product(forms, [dtype], ("scalar", "channel"), ("sequence", "static"),
                                      ("subtract", "value")):
            out.append(Specialisation(family, *base, "infer"))
            for h in sorted({"float32", dtype}, key=lambda d: d != "float32"):
                out.append(Specialisation(family, *base, "train", None, h))
                out.extend(Specialisation(family, *base, "backward", sur, h) for sur in surrogates)
    return out
