"""How the IR prints: shapes as ``[N,32,11,11]``, tensors as ``f32[32,1,3,3]``, attributes
unless they equal the op's default."""
from __future__ import annotations

from typing import Any

import torch

from .ops import OPS

__all__ = ["format_shape"]


def format_shape(shape) -> str:
    """``(None, 32, 11, 11)`` -> ``[N,32,11,11]``."""
    if shape is None:
        return "[?]"
    return "[" + ",".join("N" if d is None else str(d) for d in shape) + "]"


def _format_value(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return _format_tensor(v)
    if getattr(v, "is_graph", False):  # a body graph (a recurrent container's)
        return f"<graph {len(v.nodes)} nodes, below>"
    if isinstance(v, (tuple, list)) and v and all(e == v[0] for e in v) and not isinstance(v[0], (tuple, list)):
        return _format_value(v[0])
    if isinstance(v, (tuple, list)):
        return "(" + ",".join(_format_value(e) for e in v) + ")"
    if isinstance(v, float):
        return f"{v:g}"
    if callable(v):
        return getattr(v, "__qualname__", None) or type(v).__name__
    return str(v)


_DTYPE_SHORT = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64",
                torch.int64: "i64", torch.int32: "i32", torch.bool: "bool"}


def _format_tensor(t: torch.Tensor) -> str:
    dt = _DTYPE_SHORT.get(t.dtype, str(t.dtype).replace("torch.", ""))
    if t.numel() == 1:
        return f"{t.item():g}" if t.dim() == 0 else f"{dt}[{t.reshape(()).item():g}]"
    return f"{dt}[{','.join(map(str, t.shape))}]"


_ALWAYS_SHOWN = {"stride", "padding", "kernel_size"}


def _shown(node, key: str, value) -> bool:
    """Print an attribute unless it equals the op's default (keeps lines short)."""
    if key in _ALWAYS_SHOWN:
        return True
    opdef = OPS.get(node.op)
    specs = None if opdef is None else opdef.specs_for(node)
    if specs is None or key not in specs:
        return True
    default = specs[key].default
    try:
        return not (value == default or (isinstance(value, tuple) and all(v == default for v in value)))
    except Exception:
        return True
