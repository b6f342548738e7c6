"""The op table's machinery: OpDef (an op's schema, traits, target and shape rule), the registry,
trait queries and shape inference. The standard ops are registered by ops/standard.py and the
neuron ops by ops/neuron.py."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import ConfigError
from .attrs import REQUIRED, Attr

__all__ = ["OpDef", "OPS", "TRAITS", "ACTIVATIONS", "register_op", "get_op", "has_trait", "ops_with", "NEURON_OPS",
           "STATEFUL_OPS", "infer_shape", "REQUIRED"]

# what each trait promises; an op may declare others (register_op adds them here)
TRAITS: dict[str, str] = {
    "weighted": "a layer with a weight [C_out, ...] (and optional bias) a pass can rescale or fold into",
    "linear": "a fixed linear map of its inputs: f(a*x + b*y) = a*f(x) + b*f(y) for all real a, b "
              "(no bias; every linear op is scale_transparent too)",
    "scale_transparent": "positively homogeneous: f(c*x) = c*f(x) for every scalar c > 0 (on all inputs "
                         "together), so a positive scale passes through it",
    "multiply": "multiplies by a constant of its own (attribute or parameter): a constant multiply "
                "merges into it rather than passing through it",
    "shape": "moves or keeps values without changing any (at inference): pure layout, dropout, identity",
    "layout": "changes only the per-sample shape (flatten, reshape): two in a row are one reshape",
    "rearrange": "each output element is a copy of one input element (layout ops, slices, permutes): a "
                 "per-element quantity such as an activation scale goes through the op itself",
    "elementwise": "each output element depends only on the same element of the input(s); the "
                   "channel layout is kept",
    "pooling": "a window over the spatial dims of each channel; the channel layout is kept",
    "activation": "a pointwise nonlinearity of the ANN (ReLU-like ops the conversion turns into neurons)",
    "neuron": "a spiking neuron: integrates its input over T steps and fires",
    "stateful": "keeps state between time steps (emitted as a module that is reset between inputs)",
    "temporal": "sees time: gets T after its inputs (OpDef.temporal)",
}

# the canonical names of the activations an IF neuron cannot rate-code; the frontends give an
# ``opaque`` node that computes one of them ``activation=<kind>`` (never guessed from a name)
ACTIVATIONS = ("gelu", "sigmoid", "tanh", "silu", "elu", "leaky_relu", "softplus", "hardswish", "mish",
               "selu", "celu", "hardsigmoid", "logsigmoid", "tanhshrink", "softsign", "prelu", "rrelu")


def _default_bind(inputs, attrs, params, T=None):
    args = list(inputs) + ([T] if T is not None else []) + list(params.values())
    return tuple(args), dict(attrs)


@dataclass(frozen=True)
class OpDef:
    """Schema of one op. ``arity`` None means any number (at least one). ``attrs`` maps each
    attribute to an ``Attr`` or a plain default; ``traits`` say what the op is (see TRAITS)."""

    name: str
    arity: int | None = 1
    attrs: dict[str, Any] = field(default_factory=dict)
    params: tuple[str, ...] = ()
    optional_params: tuple[str, ...] = ()
    target: Callable | None = None
    bind: Callable = _default_bind
    temporal: bool = False
    shape_rule: Callable | None = None  # (input shapes, node) -> shape; None: run target on meta
    doc: str = ""
    traits: frozenset = frozenset()
    attrs_of: Callable | None = None  # node -> {name: Attr}: schemas that depend on the node (neurons)
    attr_specs: dict = field(init=False, repr=False, compare=False)  # name -> Attr, from attrs

    def __post_init__(self):
        traits = frozenset([self.traits] if isinstance(self.traits, str) else self.traits)
        if self.temporal:
            traits |= {"temporal"}
        object.__setattr__(self, "traits", traits)
        object.__setattr__(self, "temporal", "temporal" in traits)
        object.__setattr__(self, "attr_specs", {k: Attr.from_default(v) for k, v in self.attrs.items()})

    @property
    def defaults(self) -> dict[str, Any]:
        """Each attribute's default (``REQUIRED`` where there is none)."""
        return {k: a.default for k, a in self.attr_specs.items()}

    def has_trait(self, trait: str) -> bool:
        return trait in self.traits

    def specs_for(self, node) -> dict:
        """The attribute schemas of ``node`` (its family's parameters for a neuron)."""
        return self.attr_specs if self.attrs_of is None else self.attrs_of(node)

    def bind_call(self, inputs, node_attrs, node_params, T=None):
        """Arguments for ``target``: inputs, T (temporal ops), params in schema order, attrs."""
        params = {k: node_params.get(k) for k in self.params + self.optional_params}
        attrs = {k: node_attrs.get(k, a.default) for k, a in self.attr_specs.items()}
        return self.bind(inputs, attrs, params, T) if self.temporal else self.bind(inputs, attrs, params)


OPS: dict[str, OpDef] = {}


def register_op(op: OpDef) -> OpDef:
    """Add (or replace) an op in the table; traits it declares that ``TRAITS`` lacks are added."""
    for t in op.traits:
        TRAITS.setdefault(t, f"declared by op {op.name!r}")
    OPS[op.name] = op
    return op


def get_op(name: str) -> OpDef:
    """The OpDef for ``name``; ConfigError if the table has none."""
    try:
        return OPS[name]
    except KeyError:
        raise ConfigError(f"unknown op {name!r}; register it with snncompile.ops.register_op") from None


def _known_trait(trait: str) -> None:
    if trait not in TRAITS:
        raise ConfigError(f"unknown op trait {trait!r}; the traits are {sorted(TRAITS)}")


def has_trait(op, trait: str) -> bool:
    """True when the op (a name, or a node: its ``op``) has ``trait``; False for an op the table
    lacks. ConfigError for a trait no op declares and TRAITS does not document (a typo)."""
    _known_trait(trait)
    opdef = OPS.get(op if isinstance(op, str) else op.op)
    return opdef is not None and trait in opdef.traits


def ops_with(trait: str) -> tuple[str, ...]:
    """The names of the ops with ``trait``, in table order (computed now: registered ops count)."""
    _known_trait(trait)
    return tuple(name for name, d in OPS.items() if trait in d.traits)


class _OpsWith(Sequence):
    """A live tuple-like view of ``ops_with(trait)`` (``op in NEURON_OPS`` sees registered ops)."""

    def __init__(self, trait: str):
        self.trait = trait

    def _names(self) -> tuple[str, ...]:
        return tuple(name for name, d in OPS.items() if self.trait in d.traits)

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name) -> bool:
        d = OPS.get(name) if isinstance(name, str) else None
        return d is not None and self.trait in d.traits

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    __hash__ = None

    def __add__(self, other) -> tuple:
        return self._names() + tuple(other)

    def __radd__(self, other) -> tuple:
        return tuple(other) + self._names()

    def __repr__(self) -> str:
        return repr(self._names())


NEURON_OPS = _OpsWith("neuron")      # the ops with trait "neuron"
STATEFUL_OPS = _OpsWith("stateful")  # emitted as modules that keep state between steps


_SHAPE_BATCH = 7  # an unusual batch size, so an op that changes the batch dimension shows up


def infer_shape(node, input_shapes: list) -> tuple | None:
    """The per-step shape ``node`` produces from its inputs' shapes (batch as None).

    Runs the op's own target on meta tensors unless the op has a shape rule.
    """
    opdef = get_op(node.op)
    if opdef.shape_rule is not None:
        return opdef.shape_rule(input_shapes, node)
    if any(s is None for s in input_shapes):
        return None
    metas = [torch.empty([_SHAPE_BATCH if d is None else d for d in s], device="meta") for s in input_shapes]
    params = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in node.params.items()}
    args, kwargs = opdef.bind_call(metas, node.attrs, params)
    out = opdef.target(*args, **kwargs)
    shape = list(out.shape)
    if not shape or shape[0] != _SHAPE_BATCH:
        raise ConfigError(f"{node.op} changes the batch dimension (gives {shape}); "
                          "snncompile keeps dim 0 as the batch")
    return (None,) + tuple(shape[1:])
