"""The standard ops: their inputs, typed attributes, parameters, traits, torch targets and shape
rules, registered into the op table at import."""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from .. import functional as SF
from .attrs import REQUIRED, Attr
from .table import ACTIVATIONS, OpDef, register_op

__all__ = ["same_shape"]


def same_shape(shapes, node):
    """The shape rule of an op whose output has its (first) input's shape."""
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


def _permutation(v) -> str | None:
    return None if sorted(v) == list(range(1, len(v) + 1)) else "a permutation of 1..n (dim 0 is the batch)"


def _pads(v) -> str | None:
    return None if len(v) % 2 == 0 and all(p >= 0 for p in v) else "an even number of ints >= 0 (F.pad order)"


def _pad_shape(shapes, node):
    shape, pads = list(shapes[0]), node.attrs["pads"]
    for i in range(len(pads) // 2):
        d = len(shape) - 1 - i
        shape[d] = None if shape[d] is None else shape[d] + pads[2 * i] + pads[2 * i + 1]
    return tuple(shape)


def _is_graph(v) -> str | None:
    return None if getattr(v, "is_graph", False) else "a Graph (the recurrent body)"


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
def _recurrent_shape(shapes, node):
    return node.attrs["body"].output.inputs[0].shape


_LIN = {"linear", "scale_transparent"}
_MOVE = _LIN | {"rearrange"}
for _op in [
    OpDef("input", 0, {"index": Attr(int, 0, low=0),
                       "kind": Attr(str, "static", choices=("static", "sequence", "state"))}, shape_rule=_no_shape,
          doc="a graph input; kind 'static' (the same every step), 'sequence' ([T, N, ...]) or "
              "'state' (a recurrent body's fed-back output)"),
    OpDef("output", None, shape_rule=same_shape, doc="the graph's result(s)"),
    OpDef("conv1d", 1, dict(_conv_attrs), ("weight",), ("bias",), F.conv1d, traits={"weighted"}),
    OpDef("conv2d", 1, dict(_conv_attrs), ("weight",), ("bias",), F.conv2d, traits={"weighted"}),
    OpDef("conv3d", 1, dict(_conv_attrs), ("weight",), ("bias",), F.conv3d, traits={"weighted"},
          doc="3-D convolution (video, volumes); 3-D data converts with convs and global pools"),
    OpDef("linear", 1, {}, ("weight",), ("bias",), F.linear, traits={"weighted"}),
    OpDef("batchnorm", 1, {"eps": Attr(float, 1e-5, low=0.0)}, ("running_mean", "running_var"), ("weight", "bias"),
          F.batch_norm, _bind_bn, doc="inference batch norm over dim 1"),
    OpDef("relu", 1, {}, target=F.relu, traits={"activation", "elementwise", "scale_transparent"}),
    OpDef("clamp", 1, {"min": Attr(float, None), "max": Attr(float, None)}, (), ("ceiling",), target=SF.clamp,
          traits={"activation", "elementwise"},
          doc="min(max(x, min), max); a ``ceiling`` parameter (per channel, set by normalize on a capped "
              "ReLU) is the max instead"),
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
          traits=_MOVE | {"shape", "layout"}),
    OpDef("reshape", 1, {"shape": Attr(int, REQUIRED, tuple_only=True, check=_reshape_dims)}, target=SF.reshape_batch,
          traits=_MOVE | {"shape", "layout"}, doc="per-sample shape"),
    OpDef("slice", 1, {"dim": Attr(int, 1, check=_not_batch_dim), "start": Attr(int, 0, low=0),
                       "stop": Attr(int, REQUIRED, low=1), "step": Attr(int, 1, low=1)},
          target=SF.slice_dim, traits=_MOVE, doc="x[start:stop:step] along dim: one result of chunk/split"),
    OpDef("select", 1, {"dim": Attr(int, 1, check=_not_batch_dim), "index": Attr(int, 0, low=0)},
          target=SF.select_dim, traits=_MOVE, doc="x.select(dim, index): one result of unbind"),
    OpDef("permute", 1, {"dims": Attr(int, REQUIRED, tuple_only=True, check=_permutation)}, target=SF.permute_batch,
          traits=_MOVE, doc="permutes the per-sample dims (1..n; the batch stays first): transposes, "
                            "channel shuffles"),
    OpDef("pad", 1, {"pads": Attr(int, REQUIRED, tuple_only=True, check=_pads)}, target=SF.pad_zero,
          shape_rule=_pad_shape, traits=_LIN | {"pooling"},
          doc="zero padding of the spatial dims (F.pad order); the channel layout is kept"),
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
    OpDef("encode", 1, {"method": Attr(str, "direct", choices=("direct", "poisson", "sequence"))}, target=SF.encode,
          temporal=True, shape_rule=same_shape,
          doc="input -> T steps folded into the batch: direct current, Poisson spikes, or a given "
              "sequence [T, N, ...]"),
    OpDef("synapse_filter", 1, {"tau": Attr(float, 2.0, low=0.0, low_open=True), "learnable": Attr(bool, False)},
          temporal=True, shape_rule=same_shape, traits={"stateful"},
          doc="first-order low-pass on the synaptic current: i <- i - i/tau + x"),
    OpDef("recurrent", 1, {"body": Attr(None, REQUIRED, check=_is_graph),
                           "kind": Attr(str, "linear", choices=("linear", "elementwise"))},
          temporal=True, shape_rule=_recurrent_shape, traits={"stateful"},
          doc="a neuron whose output is fed back (through the body graph) into its next step"),
    OpDef("repeat_time", 1, {}, target=SF.repeat_time, temporal=True, shape_rule=same_shape),
    OpDef("readout", 1, {"mode": Attr(str, "mean", choices=("mean", "last"))}, target=SF.unfold_time,
          temporal=True, shape_rule=same_shape, bind=lambda i, a, p, T=None: ((i[0], T), {}),
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

