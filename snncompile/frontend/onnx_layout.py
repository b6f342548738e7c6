"""ONNX layout ops -> canonical IR steps: Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Concat,
Split, Slice and Pad.

Canonical layout ops never touch dim 0, the batch: a reshape target is per sample, a permute
keeps the batch first, slices and concats run along other dims. So each handler checks that the
ONNX op keeps the batch where it is, and says so, naming the node, when it does not.
"""
from __future__ import annotations

import math

import numpy as np

from .canonical import PREV, flatten_steps
from .onnx_fold import axes_of
from .onnx_node import BATCH, UNKNOWN, OnnxNode
from .onnx_ops import fpad_order

__all__ = ["LAYOUT_OPS"]


def _axis(n: OnnxNode, axis: int, rank: int, what: str) -> int:
    """``axis`` normalized for a rank-``rank`` tensor; dim 0 (the batch) is refused."""
    a = axis % rank
    if a == 0:
        raise n.unsupported(f"{what} along axis {axis}, the batch dim", "snncompile keeps the batch dim as it is")
    return a


def _flatten(n: OnnxNode):
    shape = n.shape(0)
    rank = 1 + len(shape)
    axis = int(n.attr("axis", 1))
    a = axis % rank if axis < 0 else axis
    if a == 0:
        raise n.unsupported("has axis=0 (it flattens the batch dim into one row)", "use axis >= 1")
    if math.prod(shape[:a - 1]) != 1:  # ONNX Flatten is 2-D: dims before the axis fold into dim 0
        raise n.unsupported(f"has axis={axis} on a [N,{','.join(map(str, shape))}] input: the dims before the "
                            f"axis fold into the batch dim", "use axis=1")
    return flatten_steps(n.tensor(0), 1)


def _reshape_to(n: OnnxNode, per_sample: list[int]):
    if any(d < 1 for d in per_sample):
        raise n.unsupported(f"gives a per-sample shape {per_sample} with an empty dim", "check the target shape")
    return [("reshape", [n.tensor(0)], {"shape": tuple(int(d) for d in per_sample)}, {})]


def _reshape(n: OnnxNode):
    shape, size = n.shape(0), math.prod(n.shape(0))
    v = n.value(1) if n.has_input(1) else None
    if not isinstance(v, np.ndarray):
        n.const(1, "target shape")  # raises: a graph tensor, a run-time value or missing
    target = [d if isinstance(d, type(BATCH)) else int(d) for d in v.reshape(-1)]  # plain ints: for messages
    if not target or any(d is UNKNOWN for d in target) or any(d is BATCH for d in target[1:]):
        raise n.unsupported(f"has a target shape {target} computed from the batch size in a way that does not keep "
                            "it as dim 0", "reshape with x.view(x.size(0), ...) or a constant per-sample shape")
    first, rest = target[0], [int(d) for d in target[1:]]
    if not n.attr("allowzero", 0):  # 0 copies the input's dim at that position
        rest = [shape[i] if d == 0 and i < len(shape) else d for i, d in enumerate(rest)]
        first = BATCH if first is not BATCH and int(first) == 0 else first
    have = f"[N,{','.join(map(str, shape))}]"
    if first is not BATCH and int(first) == -1 and -1 not in rest and math.prod(rest) == size:
        first = BATCH  # -1 then the per-sample size: the batch is what is left
    if first is not BATCH and (n.batch is None or int(first) != n.batch):
        raise n.unsupported(f"reshapes {have} to {target}, whose first dim {first} is not the batch",
                            "keep the batch dim first: shape[0] = 0, -1 (with the per-sample size after it) "
                            "or x.size(0)")
    if rest.count(-1) == 1:
        known = math.prod(d for d in rest if d != -1)
        rest = [size // known if d == -1 and known else d for d in rest]
    if math.prod(rest) != size or any(d < 1 for d in rest):
        raise n.unsupported(f"cannot reshape {have} to {target} per sample", "check the target shape")
    return _reshape_to(n, rest)


def _unsqueeze(n: OnnxNode):
    shape = list(n.shape(0))
    axes = axes_of(n)
    rank = 1 + len(shape) + len(axes)
    for a in sorted(_axis(n, a, rank, "inserts a dim") for a in axes):
        shape.insert(a - 1, 1)
    return _reshape_to(n, shape)


def _squeeze(n: OnnxNode):
    shape = n.shape(0)
    axes = axes_of(n)
    if axes is None and n.batch == 1:
        raise n.unsupported("squeezes every dim of size 1, and the batch is fixed at 1: the batch dim too",
                            "give Squeeze its axes")
    drop = {i + 1 for i, d in enumerate(shape) if d == 1} if axes is None else \
        {_axis(n, a, 1 + len(shape), "removes a dim") for a in axes}
    if any(shape[a - 1] != 1 for a in drop):
        raise n.unsupported(f"squeezes a dim that is not 1 in [N,{','.join(map(str, shape))}]", "fix the axes")
    return _reshape_to(n, [d for i, d in enumerate(shape) if i + 1 not in drop])


def _transpose(n: OnnxNode):
    rank = 1 + len(n.shape(0))
    perm = n.ints("perm", tuple(reversed(range(rank))))
    if perm[0] != 0:
        raise n.unsupported(f"has perm={list(perm)}, which moves the batch dim", "keep perm[0] = 0")
    if list(perm) == list(range(rank)):
        return [("identity", [n.tensor(0)], {}, {})]
    return [("permute", [n.tensor(0)], {"dims": tuple(perm[1:])}, {})]


def _concat(n: OnnxNode):
    ins = list(range(len(n.proto.input)))
    if not all(n.is_tensor(i) for i in ins):
        raise n.unsupported("concatenates a constant with graph tensors",
                            "snncompile concatenates tensors computed from the input only")
    dim = _axis(n, int(n.attr("axis")), 1 + len(n.shape(0)), "concatenates")
    return [("cat", [n.tensor(i) for i in ins], {"dim": dim}, {})]


def _split(n: OnnxNode):
    shape = n.shape(0)
    dim = _axis(n, int(n.attr("axis", 0)), 1 + len(shape), "splits")
    size = shape[dim - 1]
    sizes = n.attr("split") if n.opset < 13 else (n.const(1, "split").tolist() if n.has_input(1) else None)
    if sizes is None:  # equal parts; opset 18's num_outputs makes the last one smaller if need be
        parts = int(n.attr("num_outputs", len(n.proto.output)))
        each = -(-size // parts)
        sizes = [min(each, size - k * each) for k in range(parts)]
    if sum(sizes) != size or any(s < 1 for s in sizes) or len(sizes) != len(n.proto.output):
        raise n.unsupported(f"splits a dim of {size} into {list(sizes)} for {len(n.proto.output)} outputs",
                            "the parts must be non-empty and add up to the dim")
    starts = np.cumsum([0] + list(sizes[:-1]))
    return {k: [("slice", [n.tensor(0)], {"dim": dim, "start": int(s), "stop": int(s + sz), "step": 1}, {})]
            for k, (s, sz) in enumerate(zip(starts, sizes)) if n.used(k)}


def _slice(n: OnnxNode):
    shape = n.shape(0)
    rank = 1 + len(shape)
    if n.opset < 10:
        starts, ends = n.ints("starts", ()), n.ints("ends", ())
        axes, steps = n.ints("axes", range(len(starts))), (1,) * len(starts)
    else:
        starts, ends = (n.const(i, w).tolist() for i, w in ((1, "starts"), (2, "ends")))
        axes = n.const(3, "axes").tolist() if n.has_input(3) else list(range(len(starts)))
        steps = n.const(4, "steps").tolist() if n.has_input(4) else [1] * len(starts)
    out, src = [], n.tensor(0)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        a = axis % rank
        if a == 0 or step < 1:
            if a == 0 and step == 1 and start == 0 and end >= 2 ** 31 - 1:
                continue  # the whole batch: nothing to slice
            raise n.unsupported(f"slices axis {axis} with step {step}", "slice non-batch axes with a positive step")
        size = shape[a - 1]
        lo, hi = (min(max(v + size if v < 0 else v, 0), size) for v in (start, end))
        if (lo, hi, step) == (0, size, 1):
            continue
        if hi <= lo:
            raise n.unsupported(f"gives an empty slice of axis {axis}", "check starts/ends")
        out.append(("slice", [src], {"dim": a, "start": lo, "stop": hi, "step": int(step)}, {}))
        src = PREV
    return out or [("identity", [n.tensor(0)], {}, {})]


def _pad(n: OnnxNode):
    rank = 1 + len(n.shape(0))
    if n.attr("mode", "constant") != "constant":
        raise n.unsupported(f"pads in mode {n.attr('mode')!r}", "snncompile pads with zeros (mode constant)")
    if n.opset < 11:
        pads, value = list(n.ints("pads", ())), float(n.attr("value", 0.0))
    else:
        pads = n.const(1, "pads").tolist()
        fill = n.const(2, "constant_value") if n.has_input(2) else np.zeros(1)
        value = float(fill.reshape(-1)[0]) if fill.size else 0.0
    axes = axes_of(n, 3) if n.opset >= 18 else None
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    begin, end = [0] * rank, [0] * rank
    for k, a in enumerate(axes):
        begin[a], end[a] = int(pads[k]), int(pads[k + len(axes)])
    if value != 0.0:
        raise n.unsupported(f"pads with {value}", "snncompile pads with zeros")
    if begin[:2] != [0, 0] or end[:2] != [0, 0] or min(begin + end) < 0:
        raise n.unsupported(f"has pads {pads} (on the batch or channel dim, or negative)",
                            "snncompile pads the spatial dims (2 and up) with zeros")
    return [("pad", [n.tensor(0)], {"pads": fpad_order(begin[2:], end[2:])}, {})]


LAYOUT_OPS = {
    "Flatten": _flatten, "Reshape": _reshape, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Transpose": _transpose, "Concat": _concat, "Split": _split, "Slice": _slice, "Pad": _pad,
}
