"""The neuron ops, generated from the neuron-family records.

One op, ``neuron``, for every family: the node's ``family`` attribute names it and the family's
typed parameters are the node's other attributes (checked by verify() with the family's own
``Param`` records), beside how it runs (``input_kind``, ``surrogate``, ...). The lowering stage's
``neuron_sumpool2d`` is a neuron fused with the k x k, stride-k sum pool that reads its spikes:
the same attributes plus ``kernel_size``; its output is the window sums.
"""
from __future__ import annotations

import math

from ..errors import ConfigError
from ..neurons import FAMILIES, INPUT_KINDS, NeuronSpec, Param
from .attrs import REQUIRED, Attr
from .table import OpDef, register_op

__all__ = ["NEURON_OP", "FUSED_NEURON_SUMPOOL", "neuron_attrs", "neuron_schema"]

NEURON_OP = "neuron"
FUSED_NEURON_SUMPOOL = "neuron_sumpool2d"


def _known_surrogate(v) -> str | None:
    from ..surrogate import SURROGATES

    return None if v in SURROGATES else "one of " + ", ".join(repr(k) for k in SURROGATES) + \
        " (or a surrogate added with snncompile.surrogate.register_surrogate)"


def _known_family(v) -> str | None:
    return None if v in FAMILIES else "one of " + ", ".join(repr(k) for k in FAMILIES) + \
        " (or a family added with snncompile.register_family)"


def _param_attr(p: Param) -> Attr:
    finite = (lambda v: None if math.isfinite(v) else "a finite number") if p.type is float else None
    return Attr(p.type, p.default, choices=p.choices or None, low=p.low, high=p.high, low_open=p.low_open,
                high_open=p.high_open, check=finite, doc=p.doc)


_RUN = {"input_kind": Attr(str, "sequence", choices=INPUT_KINDS),
        "surrogate": Attr(str, None, check=_known_surrogate),
        "alpha": Attr(float, None, low=0.0, low_open=True),
        "detach_reset": Attr(bool, False),
        "learn_threshold": Attr(bool, False), "learn_leak": Attr(bool, False)}
_COMMON = {"family": Attr(str, REQUIRED, check=_known_family)} | _RUN


def neuron_schema(node) -> dict:
    """The attribute schemas of a neuron node: ``family``, its family's parameters, the run fields
    (and ``kernel_size`` when fused with a sum pool)."""
    fam = FAMILIES.get(node.attrs.get("family"))
    out = dict(_COMMON)
    if fam is not None:
        out = {"family": out.pop("family"), **{p.name: _param_attr(p) for p in fam.params}, **out}
    if node.op == FUSED_NEURON_SUMPOOL:
        out["kernel_size"] = Attr(int, REQUIRED, low=1)
    return out


def neuron_attrs(spec: NeuronSpec, **extra) -> dict:
    """The attributes of a neuron node that runs ``spec`` (family first, as it prints)."""
    return {"family": spec.kind, **spec.attrs(), **extra}


def _fused_shape(shapes, node):
    k, s = node.attrs.get("kernel_size"), shapes[0]
    if s is None or len(s) != 4:
        raise ConfigError(f"a neuron fused with sum pooling needs [N, C, H, W] input, got {s}")
    return (s[0], s[1], s[2] // k, s[3] // k)


_TRAITS = frozenset({"neuron", "stateful", "temporal"})
register_op(OpDef(NEURON_OP, 1, dict(_COMMON), ("threshold",), temporal=True, shape_rule=lambda s, n: s[0],
                  traits=_TRAITS, attrs_of=neuron_schema,
                  doc="a spiking neuron of the family named by `family` over T steps (snncompile.neurons)"))
register_op(OpDef(FUSED_NEURON_SUMPOOL, 1, dict(_COMMON, kernel_size=Attr(int, REQUIRED, low=1)), ("threshold",),
                  temporal=True, shape_rule=_fused_shape, traits=_TRAITS | {"pooling"}, attrs_of=neuron_schema,
                  doc="a neuron fused with the k x k, stride-k sum pool of its spikes (lowering stage): "
                      "its output is the window sums; the spikes are never stored"))
