"""The canonical op table: every op's inputs, attrs, params, how it runs and its shape rule.

One OpDef per op. The emitter calls ``opdef.target`` with ``opdef.bind(...)``; the verifier runs
the same call on meta tensors to check shapes, so what is checked is what runs. Ops that see time
(``temporal``) get T after their inputs. Neurons are emitted as modules (see emit.py), so their
target is None. Users add an op with ``register_op``.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import functional as SF
from .errors import ConfigError

__all__ = ["REQUIRED", "OpDef", "OPS", "register_op", "get_op", "NEURON_OPS", "STATEFUL_OPS", "infer_shape"]

REQUIRED = object()


def _default_bind(inputs, attrs, params, T=None):
    args = list(inputs) + ([T] if T is not None else []) + list(params.values())
    return tuple(args), dict(attrs)


@dataclass(frozen=True)
class OpDef:
    """Schema of one op. ``arity`` None means any number (at least one)."""

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

    def bind_call(self, inputs, node_attrs, node_params, T=None):
        """Arguments for ``target``: inputs, T (temporal ops), params in schema order, attrs."""
        params = {k: node_params.get(k) for k in self.params + self.optional_params}
        attrs = {k: node_attrs.get(k, d) for k, d in self.attrs.items()}
        return self.bind(inputs, attrs, params, T) if self.temporal else self.bind(inputs, attrs, params)


OPS: dict[str, OpDef] = {}
NEURON_OPS = ("if_neuron", "lif_neuron")
STATEFUL_OPS = NEURON_OPS + ("spike_maxpool2d", "synapse_filter", "recurrent")  # emitted as modules that keep state between steps


def register_op(op: OpDef) -> OpDef:
    """Add (or replace) an op in the table."""
    OPS[op.name] = op
    return op


def get_op(name: str) -> OpDef:
    """The OpDef for ``name``; ConfigError if the table has none."""
    try:
        return OPS[name]
    except KeyError:
        raise ConfigError(f"unknown op {name!r}; register it with snncompile.ops.register_op") from None


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


_conv_attrs = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}
_neuron_attrs = {"v_init": 0.0, "reset": "subtract", "v_reset": 0.0, "input_kind": "sequence",
                 "surrogate": None, "alpha": None, "detach_reset": False, "sumpool": None,
                 "learn_threshold": False, "learn_leak": False}


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


for _op in [
    OpDef("input", 0, {"index": 0, "kind": "static"}, shape_rule=_no_shape,
          doc="a graph input; kind 'static' (the same every step), 'sequence' ([T, N, ...]) or "
              "'state' (a recurrent body's fed-back output)"),
    OpDef("output", None, shape_rule=_same_shape, doc="the graph's result(s)"),
    OpDef("conv1d", 1, dict(_conv_attrs), ("weight",), ("bias",), F.conv1d),
    OpDef("conv2d", 1, dict(_conv_attrs), ("weight",), ("bias",), F.conv2d),
    OpDef("linear", 1, {}, ("weight",), ("bias",), F.linear),
    OpDef("batchnorm", 1, {"eps": 1e-5}, ("running_mean", "running_var"), ("weight", "bias"),
          F.batch_norm, _bind_bn, doc="inference batch norm over dim 1"),
    OpDef("relu", 1, {}, target=F.relu),
    OpDef("clamp", 1, {"min": None, "max": None}, target=torch.clamp),
    OpDef("avgpool2d", 1, {"kernel_size": REQUIRED, "stride": None, "padding": 0, "ceil_mode": False,
                           "count_include_pad": True, "divisor_override": None}, target=F.avg_pool2d),
    OpDef("sumpool2d", 1, {"kernel_size": REQUIRED, "stride": None, "padding": 0}, target=SF.sum_pool2d,
          doc="sum over each window: avgpool without its 1/k^2"),
    OpDef("maxpool2d", 1, {"kernel_size": REQUIRED, "stride": None, "padding": 0, "dilation": 1,
                           "ceil_mode": False}, target=F.max_pool2d),
    OpDef("spike_maxpool2d", 1, {"kernel_size": REQUIRED, "stride": None, "padding": 0, "dilation": 1,
                                 "ceil_mode": False}, target=F.max_pool2d, temporal=True,
          bind=lambda i, a, p, T=None: ((i[0],), dict(a)),
          doc="max pool of spike trains: each window passes the spikes of its most active neuron so far"),
    OpDef("adaptive_avgpool2d", 1, {"output_size": REQUIRED}, target=F.adaptive_avg_pool2d),
    OpDef("flatten", 1, {"start_dim": 1, "end_dim": -1}, target=SF.flatten_batch),
    OpDef("reshape", 1, {"shape": REQUIRED}, target=SF.reshape_batch, doc="per-sample shape"),
    OpDef("add", 2, target=operator.add),
    OpDef("cat", None, {"dim": 1}, target=torch.cat, bind=_bind_cat),
    OpDef("mul_const", 1, {"value": REQUIRED}, target=SF.mul_const),
    OpDef("scale", 1, {}, ("factor",), target=SF.scale, doc="x * factor, factor per sample-broadcast"),
    OpDef("dropout", 1, {"p": 0.5}, target=SF.identity, bind=lambda i, a, p, T=None: (tuple(i), {})),
    OpDef("identity", 1, target=SF.identity),
    OpDef("if_neuron", 1, dict(_neuron_attrs), ("threshold",), temporal=True, shape_rule=_neuron_shape,
          doc="integrate-and-fire over T steps (DESIGN.md equations)"),
    OpDef("lif_neuron", 1, dict(_neuron_attrs, tau=2.0, beta=0.9, form="spikingjelly", v_rest=0.0),
          ("threshold",), temporal=True, shape_rule=_neuron_shape, doc="leaky integrate-and-fire"),
    OpDef("encode", 1, {"method": "direct"}, target=SF.encode, temporal=True, shape_rule=_same_shape,
          doc="input -> T steps folded into the batch: direct current, Poisson spikes, or a given "
              "sequence [T, N, ...]"),
    OpDef("synapse_filter", 1, {"tau": 2.0, "learnable": False}, temporal=True, shape_rule=_same_shape,
          doc="first-order low-pass on the synaptic current: i <- i - i/tau + x"),
    OpDef("recurrent", 1, {"body": REQUIRED, "kind": "linear"}, temporal=True, shape_rule=_recurrent_shape,
          doc="a neuron whose output is fed back (through the body graph) into its next step"),
    OpDef("repeat_time", 1, {}, target=SF.repeat_time, temporal=True, shape_rule=_same_shape),
    OpDef("readout", 1, {"mode": "mean"}, target=SF.unfold_time, temporal=True, shape_rule=_same_shape,
          bind=lambda i, a, p, T=None: ((i[0], T), {}),
          doc="the non-spiking output layer's values at every step; the runtime averages them "
              "(mode 'mean') or keeps the last step (mode 'last')"),
    OpDef("opaque", None, {"target": REQUIRED, "name": "", "kwargs": None, "linear": False,
                           "stateless": False}, bind=_bind_opaque, shape_rule=_no_shape,
          doc="an op outside the table; passes refuse to cross it unless declared linear/stateless"),
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
