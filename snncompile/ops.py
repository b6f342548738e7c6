"""The canonical op table: every op's inputs, attrs, params, traits, how it runs and its shape rule.

One OpDef per op. The emitter calls ``opdef.target`` with ``opdef.bind(...)``; the verifier runs
the same call on meta tensors to check shapes, so what is checked is what runs. Ops that see time
(``temporal``) get T after their inputs. Neurons are emitted as modules (see emit.py), so their
target is None. Users add an op with ``register_op``.

Attributes have schemas: ``OpDef.attrs`` maps each name to an ``Attr`` (type, default, allowed
values or range) or, for short, to a plain default (then only the default's type is checked).
Traits say what an op is (``weighted``, ``scale_transparent``, ``neuron``, ...; see ``TRAITS``);
passes ask ``has_trait(node, "weighted")`` instead of keeping their own lists of op names.
"""
from __future__ import annotations

import numbers
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import functional as SF
from .errors import ConfigError

__all__ = ["REQUIRED", "Attr", "OpDef", "OPS", "TRAITS", "ACTIVATIONS", "register_op", "get_op", "has_trait",
           "ops_with", "NEURON_OPS", "STATEFUL_OPS", "infer_shape"]

REQUIRED = object()

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


_TYPE_NAMES = {int: ("an int", "ints"), float: ("a number", "numbers"), bool: ("a bool", "bools"),
               str: ("a string", "strings"), tuple: ("a tuple", "tuples"), dict: ("a dict", "dicts")}


def _is_type(v, t) -> bool:
    if t is None:
        return True
    if isinstance(t, tuple):
        return any(_is_type(v, e) for e in t)
    if t is bool:
        return isinstance(v, bool)
    if t is int:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)
    if t is float:
        return isinstance(v, numbers.Real) and not isinstance(v, bool)
    if t is tuple:
        return isinstance(v, (tuple, list))
    return isinstance(v, t)


def _type_name(t, plural: bool) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(e, plural) for e in t)
    if t in _TYPE_NAMES:
        return _TYPE_NAMES[t][plural]
    name = getattr(t, "__name__", str(t))
    return f"{name}s" if plural else f"a {name}"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return repr(v)


@dataclass(frozen=True)
class Attr:
    """The schema of one attribute: its type, default and the values it may take.

    ``type``: the Python type the value (or each element, see ``tuple_ok``) must have (``float``
    accepts ints; ``int`` and ``float`` refuse bools); None for any. ``choices``: the allowed
    values (an enum). ``low``/``high``: an inclusive range (``low_open``/``high_open`` make it
    exclusive). ``optional``: None is allowed too (always when the default is None).
    ``tuple_ok``: a tuple/list of such values (one per dim) is allowed too; ``tuple_only``: the
    value must be one. ``also``: further values allowed as they are (conv padding "same").
    ``check``: one more rule, ``value -> None`` when fine or the words for what is allowed.
    """

    type: Any = None
    default: Any = REQUIRED
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    tuple_ok: bool = False
    tuple_only: bool = False
    also: tuple = ()
    check: Callable[[Any], str | None] | None = None
    doc: str = ""

    @staticmethod
    def from_default(default: Any) -> "Attr":
        """The schema of an attribute given only by its default: the default's type is checked
        (none when the default is None or REQUIRED)."""
        if isinstance(default, Attr):
            return default
        if default is REQUIRED or default is None:
            return Attr(None, default)
        for t in (bool, int, float, str):
            if _is_type(default, t):
                return Attr(t, default)
        if isinstance(default, (tuple, list)):
            return Attr(tuple, default)
        return Attr(type(default), default)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> str:
        """What the attribute may be, in words: ``an int >= 1 or a tuple of them``."""
        if self.choices is not None:
            base = "one of " + ", ".join(_fmt(c) for c in self.choices)
            plural = "values from " + ", ".join(_fmt(c) for c in self.choices)
        else:
            rng = self._range_words()
            base = (_type_name(self.type, False) if self.type is not None else "any value") + rng
            plural = (_type_name(self.type, True) if self.type is not None else "values") + rng
        if self.tuple_only:
            words = f"a tuple of {plural}"
        elif self.tuple_ok:
            words = f"{base} or a tuple of them"
        else:
            words = base
        if self.also:
            words += " or " + " or ".join(_fmt(a) for a in self.also)
        if self.optional or self.default is None:
            words += " or None"
        return words

    def _range_words(self) -> str:
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return f" in {'(' if self.low_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if self.high_open else ']'}"
        if lo is not None:
            return f" {'>' if self.low_open else '>='} {_fmt(lo)}"
        if hi is not None:
            return f" {'<' if self.high_open else '<='} {_fmt(hi)}"
        return ""

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else the words for what is (``describe()``)."""
        if value is None and (self.optional or self.default is None):
            return None
        try:
            if any(value == a and type(value) is type(a) for a in self.also):
                return None
        except Exception:
            pass
        if self.tuple_only or self.tuple_ok and isinstance(value, (tuple, list)):
            if not isinstance(value, (tuple, list)) or not value and not self.tuple_only:
                return self.describe()
            ok = all(self._one_ok(v) for v in value)
        else:
            ok = self._one_ok(value)
        if ok and self.check is not None:
            return self.check(value)
        return None if ok else self.describe()

    def _one_ok(self, v) -> bool:
        if self.choices is not None:
            try:
                return any(v == c and _is_type(v, type(c)) for c in self.choices)
            except Exception:
                return False
        if not _is_type(v, self.type):
            return False
        if self.low is not None and not (v > self.low if self.low_open else v >= self.low):
            return False
        if self.high is not None and not (v < self.high if self.high_open else v <= self.high):
            return False
        return True


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


def _same_shape(shapes, node):
    return shapes[0]


def _no_shape(shapes, node):
    return node.meta.get("shape")


def _bind_bn(inputs, attrs, params, T=None):
    return (inputs[0], params["running_mean"], params["running_var"], params["weight"], params["bias"]), \
        {"training": False, "momentum": 0.0, "eps": attrs["eps"]}


def _bind_cat(inputs, attrs, params, T=None):
    return (list(inputs),), {"dim": attrs["dim"]}


def _bind_opaque(inputs, attrs, params, T=None):
    return tuple(inputs), dict(attrs.get("kwargs") or {})


def _not_batch_dim(v) -> str | None:
    return "an int other than 0 (dim 0 is the batch)" if v == 0 else None


def _reshape_dims(v) -> str | None:
    if all(d >= 1 or d == -1 for d in v) and sum(d == -1 for d in v) <= 1:
        return None
    return "a tuple of ints >= 1 (one of them may be -1)"


def _is_graph(v) -> str | None:
    return None if getattr(v, "is_graph", False) else "a Graph (the recurrent body)"


def _known_surrogate(v) -> str | None:
    from .surrogate import SURROGATES

    return None if v in SURROGATES else "one of " + ", ".join(repr(k) for k in SURROGATES) + \
        " (or a surrogate added with snncompile.surrogate.register_surrogate)"


def _is_callable(v) -> str | None:
    return None if callable(v) else "a callable"


# typed schemas shared by several ops
def _dims(low: int, default=REQUIRED, **kw) -> Attr:
    """An int >= low, or one per spatial dim."""
    return Attr(int, default, low=low, tuple_ok=True, **kw)


_conv_attrs = {"stride": _dims(1, 1), "padding": _dims(0, 0, also=("same", "valid")),
               "dilation": _dims(1, 1), "groups": Attr(int, 1, low=1)}
_pool_attrs = {"kernel_size": _dims(1), "stride": _dims(1, None), "padding": _dims(0, 0)}
_maxpool_attrs = _pool_attrs | {"dilation": _dims(1, 1), "ceil_mode": Attr(bool, False)}
_neuron_attrs = {"v_init": Attr(float, 0.0), "reset": Attr(str, "subtract", choices=("subtract", "value")),
                 "v_reset": Attr(float, 0.0), "input_kind": Attr(str, "sequence", choices=("sequence", "static")),
                 "surrogate": Attr(str, None, check=_known_surrogate),
                 "alpha": Attr(float, None, low=0.0, low_open=True),
                 "detach_reset": Attr(bool, False), "sumpool": Attr(int, None, low=1),
                 "learn_threshold": Attr(bool, False), "learn_leak": Attr(bool, False)}
_lif_attrs = _neuron_attrs | {"tau": Attr(float, 2.0, low=0.0, low_open=True),
                              "beta": Attr(float, 0.9, low=0.0, high=1.0),
                              "form": Attr(str, "spikingjelly", choices=("spikingjelly", "snntorch")),
                              "v_rest": Attr(float, 0.0)}
_NEURON = frozenset({"neuron", "stateful", "temporal"})


def _neuron_shape(shapes, node):
    k = node.attrs.get("sumpool")
    s = shapes[0]
    if not k:
        return s
    if s is None or len(s) != 4:
        raise ConfigError(f"a neuron fused with sum pooling needs [N, C, H, W] input, got {s}")
    return (s[0], s[1], s[2] // k, s[3] // k)

def _recurrent_shape(shapes, node):
    return node.attrs["body"].output.inputs[0].shape


_LIN = {"linear", "scale_transparent"}
for _op in [
    OpDef("input", 0, {"index": Attr(int, 0, low=0),
                       "kind": Attr(str, "static", choices=("static", "sequence", "state"))}, shape_rule=_no_shape,
          doc="a graph input; kind 'static' (the same every step), 'sequence' ([T, N, ...]) or "
              "'state' (a recurrent body's fed-back output)"),
    OpDef("output", None, shape_rule=_same_shape, doc="the graph's result(s)"),
    OpDef("conv1d", 1, dict(_conv_attrs), ("weight",), ("bias",), F.conv1d, traits={"weighted"}),
    OpDef("conv2d", 1, dict(_conv_attrs), ("weight",), ("bias",), F.conv2d, traits={"weighted"}),
    OpDef("linear", 1, {}, ("weight",), ("bias",), F.linear, traits={"weighted"}),
    OpDef("batchnorm", 1, {"eps": Attr(float, 1e-5, low=0.0)}, ("running_mean", "running_var"), ("weight", "bias"),
          F.batch_norm, _bind_bn, doc="inference batch norm over dim 1"),
    OpDef("relu", 1, {}, target=F.relu, traits={"activation", "elementwise", "scale_transparent"}),
    OpDef("clamp", 1, {"min": Attr(float, None), "max": Attr(float, None)}, target=torch.clamp,
          traits={"activation", "elementwise"}),
    OpDef("avgpool2d", 1, _pool_attrs | {"ceil_mode": Attr(bool, False), "count_include_pad": Attr(bool, True),
                                         "divisor_override": Attr(int, None, low=1)},
          target=F.avg_pool2d, traits=_LIN | {"pooling"}),
    OpDef("sumpool2d", 1, dict(_pool_attrs), target=SF.sum_pool2d, traits=_LIN | {"pooling"},
          doc="sum over each window: avgpool without its 1/k^2"),
    OpDef("maxpool2d", 1, dict(_maxpool_attrs), target=F.max_pool2d, traits={"pooling", "scale_transparent"}),
    OpDef("spike_maxpool2d", 1, dict(_maxpool_attrs), target=F.max_pool2d, temporal=True,
          bind=lambda i, a, p, T=None: ((i[0],), dict(a)), traits={"pooling", "stateful"},
          doc="max pool of spike trains: each window passes the spikes of its most active neuron so far"),
    OpDef("adaptive_avgpool2d", 1, {"output_size": _dims(1)}, target=F.adaptive_avg_pool2d,
          traits=_LIN | {"pooling"}),
    OpDef("flatten", 1, {"start_dim": Attr(int, 1), "end_dim": Attr(int, -1)}, target=SF.flatten_batch,
          traits=_LIN | {"shape", "layout"}),
    OpDef("reshape", 1, {"shape": Attr(int, REQUIRED, tuple_only=True, check=_reshape_dims)}, target=SF.reshape_batch,
          traits=_LIN | {"shape", "layout"}, doc="per-sample shape"),
    OpDef("add", 2, target=operator.add, traits=_LIN | {"elementwise"}),
    OpDef("cat", None, {"dim": Attr(int, 1, check=_not_batch_dim)}, target=torch.cat, bind=_bind_cat,
          traits=_LIN),
    OpDef("mul_const", 1, {"value": Attr(float, REQUIRED)}, target=SF.mul_const,
          traits=_LIN | {"multiply", "elementwise"}),
    OpDef("scale", 1, {}, ("factor",), target=SF.scale, traits=_LIN | {"multiply", "elementwise"},
          doc="x * factor, factor per sample-broadcast"),
    OpDef("dropout", 1, {"p": Attr(float, 0.5, low=0.0, high=1.0, high_open=True)}, target=SF.identity,
          bind=lambda i, a, p, T=None: (tuple(i), {}), traits=_LIN | {"shape", "elementwise"}),
    OpDef("identity", 1, target=SF.identity, traits=_LIN | {"shape", "elementwise"}),
    OpDef("if_neuron", 1, dict(_neuron_attrs), ("threshold",), temporal=True, shape_rule=_neuron_shape,
          traits=_NEURON, doc="integrate-and-fire over T steps (DESIGN.md equations)"),
    OpDef("lif_neuron", 1, dict(_lif_attrs), ("threshold",), temporal=True, shape_rule=_neuron_shape,
          traits=_NEURON, doc="leaky integrate-and-fire"),
    OpDef("encode", 1, {"method": Attr(str, "direct", choices=("direct", "poisson", "sequence"))}, target=SF.encode,
          temporal=True, shape_rule=_same_shape,
          doc="input -> T steps folded into the batch: direct current, Poisson spikes, or a given "
              "sequence [T, N, ...]"),
    OpDef("synapse_filter", 1, {"tau": Attr(float, 2.0, low=0.0, low_open=True), "learnable": Attr(bool, False)},
          temporal=True, shape_rule=_same_shape, traits={"stateful"},
          doc="first-order low-pass on the synaptic current: i <- i - i/tau + x"),
    OpDef("recurrent", 1, {"body": Attr(None, REQUIRED, check=_is_graph),
                           "kind": Attr(str, "linear", choices=("linear", "elementwise"))},
          temporal=True, shape_rule=_recurrent_shape, traits={"stateful"},
          doc="a neuron whose output is fed back (through the body graph) into its next step"),
    OpDef("repeat_time", 1, {}, target=SF.repeat_time, temporal=True, shape_rule=_same_shape),
    OpDef("readout", 1, {"mode": Attr(str, "mean", choices=("mean", "last"))}, target=SF.unfold_time,
          temporal=True, shape_rule=_same_shape, bind=lambda i, a, p, T=None: ((i[0], T), {}),
          doc="the non-spiking output layer's values at every step; the runtime averages them "
              "(mode 'mean') or keeps the last step (mode 'last')"),
    OpDef("opaque", None, {"target": Attr(None, REQUIRED, check=_is_callable), "name": Attr(str, ""),
                           "kwargs": Attr(dict, None), "linear": Attr(bool, False), "stateless": Attr(bool, False),
                           "activation": Attr(str, None, choices=ACTIVATIONS)},
          bind=_bind_opaque, shape_rule=_no_shape,
          doc="an op outside the table; passes refuse to cross it unless declared linear/stateless; "
              "``activation`` names the known activation it computes (set by the frontend)"),
]:
    register_op(_op)

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
