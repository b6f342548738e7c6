"""One fx call as the conversion rules see it (``Site``), and argument binding by signature."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

__all__ = ["Site", "bind"]


@dataclass
class Site:
    """One fx call: ``args``/``kwargs`` hold IR Nodes for graph tensors, constants otherwise."""

    node: Any
    args: tuple
    kwargs: dict
    out: Any  # the concrete output value from running the example
    is_ir: Any  # callable: is this value an IR node?
    batch: int = -1  # the example's batch size


def _bind(sig_fn, args, kwargs) -> dict:
    ba = inspect.signature(sig_fn).bind(*args, **kwargs)
    ba.apply_defaults()
    return dict(ba.arguments)


def bind(sig_fn, args, kwargs) -> dict:
    """``args``/``kwargs`` bound to ``sig_fn``'s parameters, defaults applied (TypeError if they do not fit)."""
    ba = inspect.signature(sig_fn).bind(*args, **kwargs)
    ba.apply_defaults()
    return dict(ba.arguments)
