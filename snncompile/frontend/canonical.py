"""Meaning rewrites shared by every frontend: what a call computes -> the canonical IR op(s).

The fx frontend (fx_spellings.py) and the ONNX frontend (onnx.py) each read their own spelling of
a call, then ask here which canonical op computes it: ``clip(x, 0, inf)`` is ``relu`` whether it
was written ``torch.clamp(x, min=0)``, ``nn.ReLU6`` or ONNX ``Clip``. A rewrite returns a list
of *steps* ``(op, inputs, attrs, params)``; ``PREV`` in a step's inputs stands for the previous
step's result, so one call may become a short chain (a 1-D pool is a 2-D pool of height 1
between two reshapes). The frontend adds the steps in order; the last one is the call's value.
"""
from __future__ import annotations

import math
from typing import Any

__all__ = ["PREV", "Step", "clip_steps", "mul_const_steps", "pool_steps", "global_avgpool_steps",
           "flatten_steps", "batchnorm_steps"]

Step = tuple  # (op, inputs, attrs, params)


class _Prev:
    """The previous step's result, in a step's inputs."""

    def __repr__(self) -> str:
        return "<previous step>"


PREV = _Prev()


def clip_steps(x, lo: float | None, hi: float | None) -> list[Step]:
    """``min(max(x, lo), hi)``: ``relu`` when lo is 0 and there is no ceiling, ``identity`` when
    neither bound is set, ``clamp`` otherwise (a ReLU6 is ``clamp(0, 6)``: the conversion reads
    a floor of 0 with a ceiling as a capped ReLU). Infinite bounds are no bounds."""
    lo = None if lo is None or math.isinf(lo) and lo < 0 else float(lo)
    hi = None if hi is None or math.isinf(hi) and hi > 0 else float(hi)
    if lo is None and hi is None:
        return [("identity", [x], {}, {})]
    if lo == 0.0 and hi is None:
        return [("relu", [x], {}, {})]
    return [("clamp", [x], {"min": lo, "max": hi}, {})]


def mul_const_steps(x, value: float) -> list[Step]:
    """``x * value`` for a constant (a division is a multiply by 1/value); identity for 1."""
    value = float(value)
    return [("identity", [x], {}, {})] if value == 1.0 else [("mul_const", [x], {"value": value}, {})]


def pool_steps(op2d: str, x, in_shape: tuple, out_shape: tuple, attrs: dict[str, Any]) -> list[Step]:
    """A pool from ``in_shape`` to ``out_shape`` (one sample: ``(C, H, W)`` or ``(C, L)``). 2-D pools are one step;
    a 1-D pool (``attrs`` with one value per dim, ints or 1-tuples) runs as the 2-D pool of
    height 1 between two reshapes, so every pass and kernel that knows 2-D pools serves it.
    ``op2d`` is "maxpool2d", "avgpool2d" or "adaptive_avgpool2d"."""
    if len(in_shape) == 3:
        return [(op2d, [x], dict(attrs), {})]
    if len(in_shape) != 2:
        raise ValueError(f"a pool needs [N, C, L] or [N, C, H, W] inputs, got a per-sample shape {tuple(in_shape)}")
    c, length = in_shape
    two = {}
    for k, v in attrs.items():
        if k in ("kernel_size", "stride", "dilation", "output_size"):
            v = None if v is None else (1, _one(v))
        elif k == "padding":
            v = (0, _one(v))
        two[k] = v
    return [("reshape", [x], {"shape": (c, 1, length)}, {}),
            (op2d, [PREV], two, {}),
            ("reshape", [PREV], {"shape": tuple(out_shape)}, {})]


def _one(v) -> int:
    if isinstance(v, (tuple, list)):
        if len(v) != 1:
            raise ValueError(f"a 1-D pool takes one value per dim, got {tuple(v)}")
        v = v[0]
    return int(v)


def global_avgpool_steps(x, in_shape: tuple) -> list[Step]:
    """The mean over every spatial position, keeping the dims (``x.mean((2, 3), keepdim=True)``,
    ``nn.AdaptiveAvgPool2d(1)``, ONNX ``GlobalAveragePool``) -> adaptive pool to size 1."""
    out = (in_shape[0],) + (1,) * (len(in_shape) - 1)
    if len(in_shape) > 3:  # 3-D data: the mean over all positions, as a 2-D pool of one row of them
        c, positions = in_shape[0], math.prod(int(d) for d in in_shape[1:])
        return [("reshape", [x], {"shape": (c, 1, positions)}, {}),
                ("adaptive_avgpool2d", [PREV], {"output_size": (1, 1)}, {}),
                ("reshape", [PREV], {"shape": out}, {})]
    return pool_steps("adaptive_avgpool2d", x, in_shape, out, {"output_size": (1,) * (len(in_shape) - 1)})


def flatten_steps(x, start_dim: int, end_dim: int = -1) -> list[Step]:
    """``torch.flatten(x, start_dim, end_dim)`` with start_dim >= 1 (ONNX ``Flatten(axis=1)`` is
    ``flatten(1)``; a larger axis also folds dims into the batch, so it is that only when the
    dims between 1 and the axis are all 1)."""
    return [("flatten", [x], {"start_dim": int(start_dim), "end_dim": int(end_dim)}, {})]


def batchnorm_steps(x, mean, var, weight, bias, eps: float) -> list[Step]:
    """Inference batch norm over dim 1 (``fold-batchnorm`` folds it into the layer before it, or
    turns a lone one into a per-channel affine)."""
    params = {"running_mean": mean, "running_var": var}
    if weight is not None:
        params |= {"weight": weight, "bias": bias}
    return [("batchnorm", [x], {"eps": float(eps)}, params)]
