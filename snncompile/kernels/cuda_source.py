"""CUDA C++ source of the neuron kernels, generated from the neuron family records.

A :class:`Specialisation` names one kernel: the family and the values of its variant parameters
(IF's ``reset``; LIF's ``reset`` and ``form``; any registered family's own), the I/O dtype (fp32,
fp16, bf16; state and arithmetic always fp32), threshold (scalar / per channel), input
(sequence [T, N, ...] / static [N, ...] read once), mode (``infer``: spikes + final v; ``train``:
also saves h; ``backward``: BPTT with a surrogate), the saved h's dtype, and ``pooled`` (the
forward fused with a k x k sum pool). ``render_source(spec)`` is its complete source,
``list_specialisations()`` lists them for every registered family::

    from snncompile.kernels.cuda_source import Specialisation, render_source
    print(render_source(Specialisation("lif", {"form": "snntorch"}, "float16", mode="backward", surrogate="atan")))

The step is the family's own: ``charge``, then ``fire`` and ``reset`` (snncompile/neurons/family.py)
rendered by ``CAlgebra(cuda=True)`` into ``neuron_step``; the backward renders ``bptt_step``.
The family's float parameters reach the kernel as one ``float`` argument each plus its fp32
reciprocal (``p_<name>``, ``p_<name>_inv``; :func:`kernel_signature` lists them), so a
registered family needs no edit here (an int parameter, a multi-spike family's ``max_spikes``,
comes as an exact float). Each source has one ``extern "C"`` kernel, ``spec.kernel_name``; see
cuda_templates.py for the thread mapping. Training saves fire's ``h`` (``u - theta``; a
multi-spike family's ``u/theta - 1``) with the +1 spike in its sign bit, so rounding h to
fp16/bf16 never changes which steps spiked. Each source keeps its helpers in its own namespace,
so sources concatenate.
Only ``<cuda_fp16.h>`` is included (CuPy bundles it for NVRTC); bf16 is converted by hand.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from string import Template

from ..errors import ConfigError, KernelError
from ..neurons import CAlgebra, ParamView, Sym, get_family, neuron_families
from ..neurons.family import bptt_step, fire, reset
from ..surrogate import SURROGATES, get_surrogate
from . import cuda_templates as tpl
from .cuda_templates import DTYPES, KMAX

__all__ = ["Specialisation", "render_source", "list_specialisations", "kernel_signature", "render_step",
           "DTYPES", "MODES", "KMAX"]

MODES = ("infer", "train", "backward")
_SHORT = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
_FWD_ARGS = ("const io_t* x", "const float* theta", "const float* v_in", "io_t* spikes", "float* v_out",
             "h_t* h_out", "long long N", "int T", "long long inner", "int C", "int vectorised")
_POOL_ARGS = ("const io_t* x", "const float* theta", "const float* v_in", "io_t* pooled", "float* v_out",
              "h_t* h_out", "long long planes", "int H", "int W", "int k", "int T", "int C")
_BWD_ARGS = ("const io_t* grad_spikes", "const float* grad_v_out", "const h_t* h", "const float* theta",
             "io_t* grad_x", "float* grad_v_in", "float* grad_theta", "long long N", "int T",
             "long long inner", "int C", "int vectorised", "int has_v_in", "float alpha", "float keep",
             "int pool_k", "int pool_h", "int pool_w")


@dataclass(frozen=True)
class Specialisation:
    """One compiled kernel, and the launcher's cache key.

    ``family``: a registered family name; ``variant``: its variant parameters' values (a dict or
    ``((name, value), ...)``; missing ones take the family's defaults; stored as a tuple in the
    family's parameter order); ``dtype`` (of x and the spikes) "float32" | "float16" | "bfloat16";
    ``threshold`` "scalar" | "channel"; ``input_kind`` "sequence" | "static"; ``mode`` "infer" |
    "train" | "backward"; ``surrogate``: a registered name (backward only); ``h_dtype``: dtype of
    the saved h, "float32" or ``dtype`` (train and backward; defaults to "float32"); ``pooled``:
    the layer fused with a k x k, stride-k sum pool (k given at run time; the forward fuses
    k <= KMAX, the backward reads the window sums' gradient for any k).
    """

    family: str = "if"
    variant: tuple | dict = ()
    dtype: str = "float32"
    threshold: str = "scalar"
    input_kind: str = "sequence"
    mode: str = "infer"
    surrogate: str | None = None
    h_dtype: str | None = None
    pooled: bool = False

    def __post_init__(self):
        try:
            fam = get_family(self.family)
            given = dict(self.variant)
            for name in given:
                if not fam.param(name).variant:
                    raise ConfigError(f"{name} is a runtime parameter of {fam.name!r}, not a variant")
            values = {p.name: p.check(given.get(p.name, p.default)) for p in fam.variant_params}
        except (ConfigError, TypeError, ValueError) as e:
            raise KernelError(f"invalid kernel specialisation {self!r}: {e}") from None
        object.__setattr__(self, "variant", tuple(values.items()))
        if self.mode != "infer" and self.h_dtype is None:
            object.__setattr__(self, "h_dtype", "float32")
        ok = (self.dtype in DTYPES and self.threshold in ("scalar", "channel")
              and self.input_kind in ("sequence", "static") and self.mode in MODES
              and (self.surrogate is not None) == (self.mode == "backward")
              and (self.h_dtype is None) == (self.mode == "infer")
              and self.h_dtype in (None, "float32", self.dtype)
              and isinstance(self.pooled, bool))
        if not ok:
            raise KernelError(f"invalid kernel specialisation {self!r}; valid ones are listed by "
                              "snncompile.kernels.cuda_source.list_specialisations()")
        if self.surrogate is not None:
            get_surrogate(self.surrogate)

    @property
    def values(self) -> dict:
        """The variant parameters' values by name."""
        return dict(self.variant)

    @property
    def vec(self) -> int:
        """Neurons per thread (one 16-byte access of the I/O dtype); the fused sum-pool forward
        runs one window a thread instead."""
        return DTYPES[self.dtype][1]

    @property
    def kernel_name(self) -> str:
        """The kernel's C name, unique per specialisation."""
        fam = get_family(self.family)
        parts = [fam.short or fam.name]
        for name, value in self.variant:
            parts.append(f"{name}{int(value)}" if isinstance(value, bool) else str(value))
        parts += [_SHORT[self.dtype], "chan" if self.threshold == "channel" else "scal",
                  self.input_kind[:3], self.mode + ("pool" if self.pooled else "")]
        if self.surrogate is not None:
            parts.append(self.surrogate)
        if self.h_dtype is not None:
            parts.append("h" + _SHORT[self.h_dtype])
        return "snn_" + "_".join(re.sub(r"\W", "_", p) for p in parts)

    @classmethod
    def for_neuron(cls, spec, dtype, per_channel: bool, mode: str, h_dtype=None,
                   pooled: bool = False) -> "Specialisation":
        """The specialisation that runs a ``NeuronSpec`` on ``dtype`` (torch dtype or name)."""
        name = str(dtype).replace("torch.", "")
        h = None if mode == "infer" else str(h_dtype or "float32").replace("torch.", "")
        values = spec.params()
        variant = tuple((p.name, values[p.name]) for p in spec.family.variant_params)
        return cls(spec.kind, variant, name, "channel" if per_channel else "scalar", spec.input_kind,
                   mode, spec.surrogate if mode == "backward" else None, h, pooled)


def kernel_signature(spec: Specialisation) -> list[tuple[str, str]]:
    """The kernel's parameters as ``(C type, name)``, in order: the fixed ones of its mode, then
    ``p_<name>, p_<name>_inv`` (float) for each of the family's float parameters."""
    fixed = _BWD_ARGS if spec.mode == "backward" else _POOL_ARGS if spec.pooled else _FWD_ARGS
    out = [tuple(a.rsplit(" ", 1)) for a in fixed]
    for p in get_family(spec.family).float_params:
        out += [("float", f"p_{p.name}"), ("float", f"p_{p.name}_inv")]
    return out


def _param_view(spec: Specialisation) -> ParamView:
    """Variant parameters as Python values, float ones as the symbols ``P.<name>``."""
    fam = get_family(spec.family)
    values = {p.name: p.default for p in fam.params}
    values.update(spec.values)
    values.update({p.name: Sym(f"P.{p.name}", param=p.name) for p in fam.float_params})
    return ParamView(values)


def render_step(spec: Specialisation) -> str:
    """The family's step as a device function, rendered from its record: ``neuron_step`` (charge,
    fire, reset; outputs v, the spike and the h to save) or, for the backward, ``bptt``."""
    fam, p, A = get_family(spec.family), _param_view(spec), CAlgebra(cuda=True)
    mode = spec.values["reset"]
    if spec.mode == "backward":
        g_x, g_v, g_th = bptt_step(A, Sym("hk"), Sym("thk"), Sym("gsk"), Sym("gvk"), Sym("gthk"), Sym("keep"),
                                   p, fam.spikes, mode, fam.charge_grad)
        head = ("SNN_HD void bptt(float hk, float thk, float gsk, float gvk, float gthk, float keep, "
                "float alpha, const Params& P, float& out_gx, float& out_gv, float& out_gth) {")
        tail = [f"out_gx = {g_x};", f"out_gv = {g_v};", f"out_gth = {g_th};"]
        comment = "// BPTT: dL/dx_t, dL/dv_{t-1} and the threshold's gradient from h_t, dL/ds_t and dL/dv_t"
    else:
        theta = Sym("theta")
        u = A.let("step_u", fam.charge(A, Sym("v_prev"), Sym("x_t"), p))
        h, s = fire(A, u, theta, fam.spikes, p)
        h, s = A.let("step_h", h), A.let("step_s", s)
        v = A.let("step_v", reset(A, u, s, theta, p, mode))
        head = ("SNN_HD void neuron_step(float v_prev, float x_t, float theta, const Params& P, "
                "float& out_v, float& out_s, float& out_h) {")
        tail = [f"out_v = {v};", f"out_s = {s};", f"out_h = sign_spike({h});"]
        comment = "// u = charge(v, x); (h, s) = fire(u); v = reset(u, s)"
    variant = ", ".join(f"{k}={v}" for k, v in spec.variant)
    return "\n".join([f"// ---- {fam.name} ({variant}), rendered from snncompile/neurons ----", comment, head]
                     + [f"  {line}" for line in A.lines + tail] + ["}"])


def render_source(spec: Specialisation) -> str:
    """Return the complete CUDA C++ source of one specialisation (what NVRTC compiles)."""
    fam = get_family(spec.family)
    h_dtype = spec.h_dtype or "float32"
    flag = lambda b: "true" if b else "false"  # noqa: E731
    fields = ", ".join(f"{p.name}, {p.name}_inv" for p in fam.float_params)
    summary = {"family": spec.family, **spec.values,
               **{k: v for k, v in vars(spec).items() if k not in ("family", "variant") and v not in (None, False)}}
    subs = dict(NAME=spec.kernel_name, VEC=spec.vec, KMAX=KMAX,
                SUMMARY=", ".join(f"{k}={v}" for k, v in summary.items()),
                INCLUDES="#include <cuda_fp16.h>\n" if "float16" in (spec.dtype, h_dtype) else "",
                TYPE_SUPPORT=tpl.TYPES[spec.dtype], IO_T=DTYPES[spec.dtype][0], H_T=DTYPES[h_dtype][0],
                PER_CHANNEL=flag(spec.threshold == "channel"), STATIC_INPUT=flag(spec.input_kind == "static"),
                SAVE_H=flag(spec.mode == "train"), POOLED=flag(spec.pooled), PARAMS_STRUCT=f"float {fields};",
                PARAM_ARGS="".join(f", float p_{p.name}, float p_{p.name}_inv" for p in fam.float_params),
                PARAM_INIT=", ".join(f"p_{p.name}, p_{p.name}_inv" for p in fam.float_params))
    step = render_step(spec)
    if spec.mode == "backward":
        sur = get_surrogate(spec.surrogate)
        step = (f"// ---- surrogate {sur.name}: d spike / d h at h = u - theta\n"
                f"SNN_HD float surrogate_grad(float x, float alpha) {{ return {sur.cuda}; }}\n{step}")
        kernel = tpl.BACKWARD
    else:
        kernel = tpl.POOLED_FORWARD if spec.pooled else tpl.FORWARD
    text = Template(tpl.PRELUDE).substitute(subs, STEP=step) + Template(kernel).substitute(subs)
    return text.replace("\n\n\n", "\n\n")


def list_specialisations(surrogates=None, families=None) -> list[Specialisation]:
    """Every kernel: each registered family's variants x dtypes x thresholds x inputs x modes.

    Train and backward come once per saved-h dtype (fp32, plus the I/O dtype when that is
    fp16/bf16), backward once per surrogate (default: every registered one); all of them once
    more fused with the sum pool. ``families`` narrows to some family names.
    """
    surrogates = sorted(SURROGATES) if surrogates is None else list(surrogates)
    out = []
    for name in (neuron_families() if families is None else families):
        for variant, dtype in itertools.product(get_family(name).variants(), DTYPES):
            for base in itertools.product([dtype], ("scalar", "channel"), ("sequence", "static")):
                hs = sorted({"float32", dtype}, key=lambda d: d != "float32")
                for pooled in (False, True):
                    out.append(Specialisation(name, variant, *base, "infer", pooled=pooled))
                    out.extend(Specialisation(name, variant, *base, "train", None, h, pooled) for h in hs)
                    out.extend(Specialisation(name, variant, *base, "backward", sur, h, pooled)
                               for h in hs for sur in surrogates)
    return out
