"""C source of the CPU neuron kernels, generated from the neuron-family records.

Every registered family contributes one *variant* per combination of its variant parameters
(``reset``, LIF's ``form``, ...). For each the generator renders, through
``snncompile.neurons.CAlgebra``, the family's charge and the shared fire / reset (``snn_step``)
and, for training, the shared BPTT step (``snn_bwd``), as ``switch (variant)`` cases inside
always-inline functions: the loops in cpu_neuron_loops.h are written once, and each loop
instance gets a literal variant so the switch folds away and gcc vectorises the body.

A kernel receives its family's float parameters as one array ``P``: for parameter k, ``P[2k]``
is its value and ``P[2k+1]`` its fp32 reciprocal (``abi.param_vector``; the C kernels divide for
real, as torch does on the CPU).
"""
from __future__ import annotations

from ..errors import KernelError
from ..neurons import FAMILIES, CAlgebra, ParamView, Sym, bptt_step, fire, registry_version, reset

__all__ = ["variants", "variant_index", "render_families"]


def variants() -> list[tuple[str, tuple]]:
    """``(family name, ((param, value), ...))`` for every compiled variant, in index order."""
    return list(_variant_table()[0])


def _variant_table() -> tuple[tuple, dict]:
    """The variant list and its index, rebuilt only when a family is registered (the lookup runs
    on every neuron call)."""
    if _cache.get("version") != registry_version():
        vs = tuple((fam.name, tuple(combo.items())) for fam in FAMILIES.values() for combo in fam.variants())
        _cache.update(version=registry_version(), table=(vs, {v: i for i, v in enumerate(vs)}))
    return _cache["table"]


_cache: dict = {}


def variant_index(spec) -> int:
    """The index of the variant that runs ``spec``."""
    fam = spec.family
    key = (fam.name, tuple((p.name, getattr(spec, p.name)) for p in fam.variant_params))
    try:
        return _variant_table()[1][key]
    except KeyError:
        raise KernelError(f"no compiled variant for {spec!r}") from None


def _param_syms(fam, values: dict, A: CAlgebra) -> ParamView:
    view = dict(values)  # the variant's fixed values (strings, bools)
    for k, p in enumerate(fam.float_params):
        A.lines.append(f"const float {p.name} = P[{2 * k}]; (void){p.name};")
        A.lines.append(f"const float {p.name}_inv = P[{2 * k + 1}]; (void){p.name}_inv;")
        view[p.name] = Sym(p.name, param=p.name)
    return ParamView(view)


def _case(i: int, name: str, values: tuple, body: list[str]) -> str:
    desc = ", ".join(f"{k}={v}" for k, v in values)
    inner = "\n".join("        " + ln for ln in body)
    return f"    case {i}: {{ /* {name}{': ' + desc if desc else ''} */\n{inner}\n    }}"


def _step_case(i, name, values) -> str:
    fam = FAMILIES[name]
    A = CAlgebra()
    p = _param_syms(fam, dict(values), A)
    u = A.let("u", fam.charge(A, Sym("v"), Sym("x"), p))
    h, s = fire(A, u, Sym("th"), fam.spikes, p)
    h, s = A.let("h", h), A.let("s", s)
    A.lines.append(f"o.v = {reset(A, u, s, Sym('th'), p, dict(values)['reset'])}; o.s = s; o.h = h; return o;")
    return _case(i, name, values, A.lines)


def _bwd_case(i, name, values) -> str:
    fam = FAMILIES[name]
    A = CAlgebra()
    p = _param_syms(fam, dict(values), A)
    gx, gv, gth = bptt_step(A, Sym("h"), Sym("th"), Sym("g_s"), Sym("g_v"), Sym("g_th"), Sym("keep"), p,
                            fam.spikes, dict(values)["reset"], fam.charge_grad)
    A.lines.append(f"o.gx = {gx}; o.gv = {gv}; o.gt = {gth}; return o;")
    return _case(i, name, values, A.lines)


def render_families(train: bool) -> str:
    """The generated part of a kernel source: the variant list, ``snn_step`` and (``train``)
    ``snn_bwd``, plus ``SNN_FOR_EACH_VARIANT(X)`` to instantiate loops per variant."""
    vs = variants()
    lines = ["/* ---- generated from the neuron families (snncompile/kernels/cpu_source.py) ---- */",
             "#define _DEFAULT_SOURCE /* madvise, posix_memalign */",
             "#include <math.h>", f"#define SNN_N_VARIANTS {len(vs)}",
             "#define SNN_FOR_EACH_VARIANT(X) " + " ".join(f"X({i})" for i in range(len(vs))),
             "typedef struct { float v, s, h; } snn_step_out;",
             "/* One neuron, one step: charge with x, fire, reset; v is the membrane before the step. */",
             "static inline __attribute__((always_inline)) snn_step_out",
             "snn_step(const int variant, const float v, const float x, const float th, const float *restrict P)",
             "{", "    snn_step_out o;", "    switch (variant) {"]
    lines += [_step_case(i, n, v) for i, (n, v) in enumerate(vs)]
    lines += ["    default: o.v = v; o.s = 0.0f; o.h = 0.0f; (void)x; (void)th; (void)P; return o;", "    }", "}"]
    if train:
        lines += ["typedef struct { float gx, gv, gt; } snn_bwd_out;",
                  "/* One neuron, one BPTT step: from the saved h, dL/ds_t and dL/dv_t give dL/dx_t, dL/dv_{t-1}",
                  " * and the threshold's running gradient. */",
                  "static inline __attribute__((always_inline)) snn_bwd_out",
                  "snn_bwd(const int variant, const float h, const float th, const float g_s, const float g_v,",
                  "        const float g_th, const float keep, const float alpha, const float *restrict P)",
                  "{", "    snn_bwd_out o;", "    switch (variant) {"]
        lines += [_bwd_case(i, n, v) for i, (n, v) in enumerate(vs)]
        lines += ["    default: o.gx = 0.0f; o.gv = g_v; o.gt = g_th; (void)h; (void)th; (void)g_s; (void)keep;"
                  " (void)alpha; (void)P; return o;", "    }", "}"]
    lines.append("/* ---- end of the generated part ---- */\n")
    return "\n".join(lines)
