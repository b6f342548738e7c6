"""ONNX layer ops -> canonical IR steps: Conv, Gemm, MatMul, BatchNormalization, Relu, Clip, the
pools, Add/Sub (residuals, or a constant folded into the bias before it), Mul/Div by a number,
Max/Min against a number (clamps), Dropout, Identity and float Casts.

A handler takes an ``OnnxNode`` and returns the steps of its first output (see canonical.py:
``(op, inputs, attrs, params)``, ``PREV`` chaining), or an IR Node that already computes it.
ONNX defaults differ from torch's in places (MaxPool's stride is 1, AveragePool excludes padding
by default), so every attribute is set explicitly.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from .canonical import PREV, batchnorm_steps, clip_steps, global_avgpool_steps, mul_const_steps, pool_steps
from .onnx_fold import axes_of
from .onnx_node import OnnxNode, as_param

__all__ = ["LAYER_OPS", "spatial_pads", "fpad_order"]

_FLT_MAX = 3.4028234663852886e38  # Clip's defaults in opsets < 11 are +-FLT_MAX: no bound


def spatial_pads(n: OnnxNode, spatial, kernel, strides, dilations):
    """``(begin, end)`` pads per spatial dim from ``pads`` or ``auto_pad`` (NOTSET, VALID,
    SAME_UPPER: the extra pixel at the end, SAME_LOWER: at the start)."""
    k = len(spatial)
    auto = n.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = n.ints("pads", (0,) * 2 * k)
        if any(p < 0 for p in pads):
            raise n.unsupported(f"has negative pads {list(pads)}", "crop the input with a Slice instead")
        return list(pads[:k]), list(pads[k:])
    if auto == "VALID":
        return [0] * k, [0] * k
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise n.unsupported(f"has auto_pad={auto!r}", "use NOTSET, VALID, SAME_UPPER or SAME_LOWER")
    begin, end = [], []
    for size, kk, s, d in zip(spatial, kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (kk - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin, end


def fpad_order(begin, end) -> tuple[int, ...]:
    """ONNX per-dim ``(begin, end)`` pads -> F.pad's order: last dim first."""
    return tuple(p for b, e in reversed(list(zip(begin, end))) for p in (b, e))


def _conv(n: OnnxNode):
    x, w = n.tensor(0), n.const(1, "weight")
    k = w.ndim - 2
    if k not in (1, 2, 3):
        raise n.unsupported(f"is a {k}-D convolution", "snncompile has 1-D, 2-D and 3-D convolutions")
    in_shape = n.shape(0)
    strides, dil = n.ints("strides", (1,) * k), n.ints("dilations", (1,) * k)
    begin, end = spatial_pads(n, in_shape[1:], w.shape[2:], strides, dil)
    params = {"weight": as_param(w)}
    if n.has_input(2):
        params["bias"] = as_param(n.const(2, "bias"))
    # the symmetric part of the pads stays in the conv; what is left over is an explicit zero pad
    sym = [min(b, e) for b, e in zip(begin, end)]
    extra = fpad_order([b - m for b, m in zip(begin, sym)], [e - m for e, m in zip(end, sym)])
    steps, src = [], x
    if any(extra):
        steps, src = [("pad", [x], {"pads": extra}, {})], PREV
    attrs = {"stride": strides, "padding": tuple(sym), "dilation": dil, "groups": int(n.attr("group", 1))}
    return steps + [(f"conv{k}d", [src], attrs, params)]


def _bias_vector(n: OnnxNode, c: np.ndarray, out: int, what: str) -> np.ndarray:
    try:
        return np.broadcast_to(c, (1, out))[0].astype(np.float32)
    except ValueError:
        raise n.unsupported(f"has a {what} of shape {list(c.shape)} that is not one value per output "
                            f"feature ({out})", "a per-sample bias cannot be a layer's bias") from None


def _gemm(n: OnnxNode):
    if n.attr("transA", 0):
        raise n.unsupported("has transA=1 (the activations transposed)",
                            "snncompile reads A as [batch, features]; re-export without transposing the input")
    x, b = n.tensor(0), n.const(1, "weight B")
    if b.ndim != 2 or len(n.shape(0)) != 1:
        raise n.unsupported(f"multiplies a {1 + len(n.shape(0))}-D input by a {b.ndim}-D B", "Gemm is 2-D by 2-D")
    w = (b if n.attr("transB", 0) else b.T) * float(n.attr("alpha", 1.0))  # linear weight is [out, in]
    params = {"weight": as_param(w)}
    if n.has_input(2):
        c = n.const(2, "bias C") * float(n.attr("beta", 1.0))
        params["bias"] = as_param(_bias_vector(n, c, w.shape[0], "C"))
    return [("linear", [x], {}, params)]


def _matmul(n: OnnxNode):
    if not n.is_tensor(0):
        raise n.unsupported("multiplies a constant by a graph tensor (x on the right)",
                            "snncompile's linear layer is x @ W with the activations x on the left")
    if n.is_tensor(1):
        raise n.unsupported("multiplies two graph tensors", "snncompile has layers with constant weights only")
    b = n.const(1, "weight B")
    if b.ndim != 2:
        raise n.unsupported(f"has a {b.ndim}-D weight B", "a linear layer's weight is 2-D [in, out]")
    return [("linear", [n.tensor(0)], {}, {"weight": as_param(b.T)})]


def _batchnorm(n: OnnxNode):
    if n.attr("training_mode", 0) or any(n.used(k) for k in range(1, len(n.proto.output))):
        raise n.unsupported("runs in training mode (updates its statistics)", "export the model in eval mode")
    if not n.attr("spatial", 1):
        raise n.unsupported("has spatial=0 (statistics per position)", "snncompile's batch norm is per channel")
    scale, bias, mean, var = (n.const(i, w) for i, w in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
    return batchnorm_steps(n.tensor(0), as_param(mean), as_param(var), as_param(scale), as_param(bias),
                           float(n.attr("epsilon", 1e-5)))


def _clip(n: OnnxNode):
    if n.opset < 11:
        lo, hi = n.attr("min"), n.attr("max")
    else:
        lo, hi = (float(n.const(i, "bound").reshape(-1)[0]) if n.has_input(i) else None for i in (1, 2))
    lo = None if lo is None or lo <= -_FLT_MAX else lo
    hi = None if hi is None or hi >= _FLT_MAX else hi
    return clip_steps(n.tensor(0), lo, hi)


def _min_max(n: OnnxNode, is_max: bool):
    """Max(x, c) / Min(x, c) with a single-number constant: a clip on one side (torch.clamp as the
    dynamo exporter writes it)."""
    if len(n.proto.input) != 2 or n.is_tensor(0) == n.is_tensor(1):
        raise n.unsupported(f"takes the {'max' if is_max else 'min'} of {len(n.proto.input)} inputs",
                            "snncompile reads Max/Min only as a graph tensor against one constant (a clamp)")
    t = 0 if n.is_tensor(0) else 1
    c = n.const(1 - t, "bound")
    if c.size != 1:
        raise n.unsupported(f"clamps against a constant of shape {list(c.shape)}", "clamp against one number")
    bound = float(c.reshape(-1)[0])
    return clip_steps(n.tensor(t), bound if is_max else None, None if is_max else bound)


def _pool_len(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    """torch's pooled length (a ceil-mode window must start inside the input or left pad)."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    return out - 1 if ceil and (out - 1) * s >= size + p else out


def _end_pads_as_ceil(n: OnnxNode, spatial, kernel, strides, dil, begin, end, ceil: bool) -> bool:
    """The torch ceil_mode that gives the pool's ONNX output length with the end pads cut to the
    begin pads. Exporters write ceil_mode (opset < 10 has none) as extra end pads; a max pool,
    or an average that excludes pads, never reads a pad, so only the number of windows differs."""
    want = []
    for size, kk, s, b, e, d in zip(spatial, kernel, strides, begin, end, dil):
        span = size + b + e - d * (kk - 1) - 1
        want.append((-(-span // s) if ceil else span // s) + 1)
    for c in (ceil, not ceil):
        if [_pool_len(sz, kk, s, b, d, c) for sz, kk, s, b, d in zip(spatial, kernel, strides, begin, dil)] == want:
            return c
    raise n.unsupported(f"has asymmetric pads {list(begin) + list(end)} that no torch pool reproduces",
                        "use symmetric pads")


def _pool(n: OnnxNode, op2d: str):
    x, in_shape = n.tensor(0), n.shape(0)
    kernel = n.ints("kernel_shape", ())
    k = len(kernel)
    if k not in (1, 2) or len(in_shape) != k + 1:
        raise n.unsupported(f"pools {k}-D windows over a {1 + len(in_shape)}-D input", "snncompile has 1-D and 2-D pools")
    strides, dil = n.ints("strides", (1,) * k), n.ints("dilations", (1,) * k)
    ceil = bool(n.attr("ceil_mode", 0))
    begin, end = spatial_pads(n, in_shape[1:], kernel, strides, dil)
    is_max = op2d == "maxpool2d"
    count_pad = not is_max and bool(n.attr("count_include_pad", 0))
    if not is_max and any(d != 1 for d in dil):
        raise n.unsupported(f"has dilations {list(dil)}", "snncompile's average pool is not dilated")
    if is_max and n.used(1):
        raise n.unsupported("has its Indices output read", "snncompile's max pool gives values only")
    steps, src = [], x
    if begin != end and not count_pad and all(e >= b for b, e in zip(begin, end)):
        ceil = _end_pads_as_ceil(n, in_shape[1:], kernel, strides, dil, begin, end, ceil)
        end = begin
    limit = [((kk - 1) * d + 1) // 2 for kk, d in zip(kernel, dil)]  # torch pads at most half a window
    odd = begin != end or any(b > m for b, m in zip(begin, limit))
    if odd and count_pad and not ceil:  # padded zeros count: an explicit zero pad is the same
        steps, src = [("pad", [x], {"pads": fpad_order(begin, end)}, {})], PREV
        in_shape = tuple(in_shape[:1]) + tuple(s + b + e for s, b, e in zip(in_shape[1:], begin, end))
        begin = [0] * k
    elif odd:
        raise n.unsupported(f"has pads {list(begin) + list(end)} (asymmetric, or over half the window)"
                            + ("" if is_max else f" with count_include_pad={int(count_pad)}, ceil_mode={int(ceil)}"),
                            "use symmetric pads of at most half the window" + ("" if is_max else
                                                                              ", or count_include_pad=1 without ceil_mode"))
    attrs = {"kernel_size": kernel, "stride": strides, "padding": tuple(begin), "ceil_mode": ceil}
    attrs |= {"dilation": dil} if is_max else {"count_include_pad": count_pad, "divisor_override": None}
    out = (in_shape[0],) + tuple(_pool_len(sz, kk, s, p, d, ceil) for sz, kk, s, p, d in
                                 zip(in_shape[1:], kernel, strides, begin, dil))
    return steps + pool_steps(op2d, src, in_shape, out, attrs)


def _global_avgpool(n: OnnxNode):
    return global_avgpool_steps(n.tensor(0), n.shape(0))


def _reduce_mean(n: OnnxNode):
    in_shape = n.shape(0)
    rank = 1 + len(in_shape)
    axes = axes_of(n)
    if axes is None and n.attr("noop_with_empty_axes", 0):
        return [("identity", [n.tensor(0)], {}, {})]
    axes = sorted(a % rank for a in axes) if axes else list(range(rank))
    if axes != list(range(2, rank)) or rank not in (3, 4, 5):
        raise n.unsupported(f"takes the mean over axes {axes} of a {rank}-D tensor",
                            "snncompile reads ReduceMean only as a global average pool (the mean over all spatial dims)")
    steps = global_avgpool_steps(n.tensor(0), in_shape)
    if not n.attr("keepdims", 1):
        steps.append(("reshape", [PREV], {"shape": (in_shape[0],)}, {}))
    return steps


def _constant_add(n: OnnxNode, sign: float):
    """graph tensor + constant: the constant joins the bias of the Conv/Gemm/MatMul before it."""
    t = 0 if n.is_tensor(0) else 1
    if sign < 0 and t == 1:
        raise n.unsupported("subtracts a graph tensor from a constant", "only x - constant folds into a bias")
    x, c = n.tensor(t), n.const(1 - t, "constant operand") * sign
    name = n.proto.input[t]
    if x.op not in ("conv1d", "conv2d", "conv3d", "linear") or n.uses.get(name, 0) != 1:
        why = f"{name!r} comes from a {x.op}" if x.op not in ("conv1d", "conv2d", "conv3d", "linear") else \
            f"{name!r} is also read elsewhere"
        raise n.unsupported(f"adds a constant to a graph tensor, and {why}",
                            "snncompile folds a constant add only into the bias of the Conv/Gemm/MatMul directly "
                            "before it")
    out_shape = (1,) + tuple(x.shape[1:])
    channel = 1 if x.op.startswith("conv") else len(out_shape) - 1
    try:  # one row per position, one column per channel: a bias is the same in every row
        rows = np.moveaxis(np.broadcast_to(c, out_shape), channel, -1).reshape(-1, out_shape[channel])
    except ValueError:
        rows = None
    if rows is None or not np.all(rows == rows[:1]):
        raise n.unsupported(f"adds a constant of shape {list(c.shape)} that is not one value per channel of "
                            f"{name!r} {list(out_shape[1:])}", "only a per-channel constant folds into a bias")
    vec = rows[0].astype(np.float32)
    old = x.params.get("bias")
    x.params["bias"] = as_param(vec) + (old if old is not None else 0)
    return x


def _add(n: OnnxNode, sign: float = 1.0):
    if n.is_tensor(0) and n.is_tensor(1):
        if sign < 0:
            raise n.unsupported("subtracts one graph tensor from another", "snncompile adds graph tensors only")
        if n.shape(0) != n.shape(1):
            raise n.unsupported(f"adds tensors of shapes {list(n.shape(0))} and {list(n.shape(1))} (broadcasting)",
                                "snncompile adds tensors of the same shape")
        return [("add", [n.tensor(0), n.tensor(1)], {}, {})]
    return _constant_add(n, sign)


def _scale(n: OnnxNode, divide: bool):
    if n.is_tensor(0) and n.is_tensor(1):
        raise n.unsupported("multiplies two graph tensors", "snncompile scales by constants only")
    t = 0 if n.is_tensor(0) else 1
    if divide and t == 1:
        raise n.unsupported("divides a constant by a graph tensor", "only x / constant is a scale")
    c = n.const(1 - t, "constant operand")
    if c.size != 1:
        raise n.unsupported(f"multiplies by a constant of shape {list(c.shape)}", "snncompile scales by one number")
    value = float(c.reshape(()))
    if divide and value == 0:
        raise n.unsupported("divides by zero", "fix the model")
    return mul_const_steps(n.tensor(t), 1.0 / value if divide else value)


def _dropout(n: OnnxNode):
    if n.used(1) or n.has_input(2) and bool(n.const(2, "training_mode").reshape(())):
        raise n.unsupported("runs in training mode (or its mask is read)", "export the model in eval mode")
    ratio = float(n.const(1, "ratio").reshape(())) if n.has_input(1) else float(n.attr("ratio", 0.5))
    # an inference graph never drops; p only matters if the graph is trained, and must be in [0, 1)
    return [("dropout", [n.tensor(0)], {"p": min(max(ratio, 0.0), 0.99)}, {})]


def _cast(n: OnnxNode):
    if n.attr("to") != TensorProto.FLOAT:
        raise n.unsupported(f"casts a graph tensor to {TensorProto.DataType.Name(n.attr('to'))}",
                            "snncompile's graphs compute in float32")
    return [("identity", [n.tensor(0)], {}, {})]  # exporters' float -> float casts


LAYER_OPS = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "BatchNormalization": _batchnorm,
    "Relu": lambda n: [("relu", [n.tensor(0)], {}, {})], "Clip": _clip,
    "MaxPool": lambda n: _pool(n, "maxpool2d"), "AveragePool": lambda n: _pool(n, "avgpool2d"),
    "GlobalAveragePool": _global_avgpool, "ReduceMean": _reduce_mean,
    "Add": _add, "Sub": lambda n: _add(n, -1.0), "Mul": lambda n: _scale(n, False), "Div": lambda n: _scale(n, True),
    "Dropout": _dropout, "Identity": lambda n: [("identity", [n.tensor(0)], {}, {})],
    "Max": lambda n: _min_max(n, True), "Min": lambda n: _min_max(n, False), "Cast": _cast,
}
