"""Constant folding for the ONNX frontend: ``Constant`` nodes, and nodes none of whose inputs is a
graph tensor (weight preprocessing, and the ``Shape -> Gather -> Unsqueeze -> Concat`` chains
that exporters write for ``x.view(x.size(0), -1)``).

Shape values of graph tensors hold the symbolic ``BATCH`` (see onnx_node.py); the ops such chains
use are evaluated here on numpy object arrays, so the batch entry survives to the Reshape that
reads it. Every other all-constant node runs in onnx's reference evaluator.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..ir import Node
from .onnx_node import BATCH, Dynamic, OnnxNode, has_marker

__all__ = ["constant_value", "fold", "axes_of", "FOLDED_ONLY"]

# ops that are only ever evaluated at import time (they have no graph-tensor form)
FOLDED_ONLY = ("Constant", "Shape", "Gather", "Cast", "Size", "ConstantOfShape", "Range")


def constant_value(n: OnnxNode) -> np.ndarray:
    """The value of a ``Constant`` node as a numpy array."""
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in n.attrs:
            v = n.attrs[key]
            if key == "value":
                return numpy_helper.to_array(v)
            return np.array(v, dtype=np.float32 if "float" in key else np.int64)
    raise n.unsupported(f"holds a {', '.join(n.attrs) or 'missing'} value", "snncompile reads dense numeric constants only")


def axes_of(n: OnnxNode, i: int = 1) -> list[int] | None:
    """The ``axes`` of Squeeze/Unsqueeze/Reduce*/Pad (not normalized): an attribute in old opsets,
    input ``i`` in new ones; None when not given."""
    axes = n.attrs.get("axes")
    if axes is None and n.has_input(i):
        axes = n.const(i, "axes").tolist()
    return None if axes is None else [int(a) for a in np.atleast_1d(axes)]


def _shape_of(n: OnnxNode, v) -> np.ndarray:
    """``Shape``: of a graph tensor, an object array whose first entry is BATCH."""
    if isinstance(v, Node):
        if v.shape is None or any(d is None for d in v.shape[1:]):
            return Dynamic(f"the shape of {n.proto.input[0]!r} (not known at import time)")
        dims = np.array([BATCH] + list(v.shape[1:]), dtype=object)
    else:
        dims = np.array(v.shape, dtype=np.int64)
    start, end = int(n.attr("start", 0)), n.attr("end")
    return dims[start:None if end is None else int(end)]


def _symbolic(n: OnnxNode, ins: list):
    """The ops of shape chains on (possibly symbolic) arrays; None when ``n`` is not one of them."""
    op, x = n.op_type, ins[0]
    if op == "Identity":
        return x
    if op == "Cast":
        return x if x.dtype == object else x.astype(helper.tensor_dtype_to_np_dtype(n.attr("to")))
    if op == "Gather":
        return np.take(x, np.asarray(ins[1]).astype(np.int64), axis=int(n.attr("axis", 0)))
    if op == "Unsqueeze":
        raw = axes_of(n)
        out = x
        for a in sorted(a % (x.ndim + len(raw)) for a in raw):  # axes index the output's dims
            out = np.expand_dims(out, a)
        return out
    if op == "Squeeze":
        axes = axes_of(n)
        return np.squeeze(x, axis=None if axes is None else tuple(a % x.ndim for a in axes))
    if op == "Concat":
        return np.concatenate([np.atleast_1d(a) for a in ins], axis=int(n.attr("axis")))
    if op == "Reshape":
        return x.reshape([int(d) for d in ins[1]])
    if op in ("Add", "Sub", "Mul", "Div"):
        fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.floor_divide}[op]
        return fn(ins[0], ins[1])
    if op == "Slice" and n.opset >= 10 and x.ndim == 1:
        start, stop = int(ins[1][0]), int(ins[2][0])
        step = int(ins[4][0]) if len(ins) > 4 and ins[4] is not None else 1
        return x[slice(start, stop, step)]
    return None


def _reference(n: OnnxNode, ins: list) -> list:
    """Run one all-constant node in onnx's reference evaluator, at the model's opset."""
    from onnx.reference import ReferenceEvaluator

    names = [name for name in n.proto.input if name]
    feeds = dict(zip(names, [a for a in ins if a is not None]))
    vis = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()]
    outs = [helper.make_value_info(o, onnx.TypeProto()) for o in n.proto.output if o]
    graph = helper.make_graph([n.proto], "fold", vis, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", n.opset)])
    return ReferenceEvaluator(model).run(None, feeds)


def _plain(v):
    """A shape value whose entries are all known again (``x.shape[1] // 2``) as int64: the
    reference evaluator and numpy arithmetic read it like any constant."""
    if isinstance(v, np.ndarray) and v.dtype == object and not has_marker(v):
        return v.astype(np.int64)
    return v


def fold(n: OnnxNode) -> list:
    """The values of ``n``'s outputs when none of its inputs is a graph tensor: numpy arrays,
    or Dynamic values (for shape arithmetic on the batch size, and inputs known only at run time)."""
    if n.op_type == "Constant":
        return [constant_value(n)]
    if n.op_type == "Shape":
        return [_shape_of(n, n.value(0))]
    if n.op_type == "Size" and isinstance(n.value(0), Node):
        return [Dynamic(f"the size of {n.proto.input[0]!r}, which grows with the batch")]
    ins = [_plain(n.value(i)) if n.has_input(i) else None for i in range(len(n.proto.input))]
    dyn = next((v for v in ins if isinstance(v, Dynamic)), None)
    if dyn is not None:
        return [Dynamic(f"{n.op_type} node {n.name!r} on {dyn.origin}")] * len(n.proto.output)
    if any(has_marker(v) for v in ins):
        try:
            out = _symbolic(n, ins)
            out = out if out is None or isinstance(out, np.ndarray) else np.array(out, dtype=object)
        except Exception:  # an odd form of the op on a shape value: not something we fold
            out = None
        if out is None:
            return [Dynamic(f"{n.op_type} node {n.name!r} on the batch size")] * len(n.proto.output)
        return [_plain(out)]
    if n.op_type in ("Identity", "Cast", "Gather", "Unsqueeze", "Squeeze", "Concat"):
        return [np.asarray(_symbolic(n, ins))]  # the fast path: no evaluator for the common shape ops
    try:
        return [np.asarray(v) for v in _reference(n, ins)]
    except Exception as e:  # an op (or form) onnx's reference evaluator lacks
        raise n.unsupported(f"reads only constants, but could not be evaluated at import time "
                            f"({type(e).__name__}: {e})", "fold it in the model (onnxsim, or export with "
                            "do_constant_folding=True)") from None
