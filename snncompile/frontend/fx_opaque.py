"""Opaque calls: a call the op table lacks, kept as it is, with the graph's tensors as its inputs.

An ``OpaqueCall`` holds the callable and its arguments with a hole (``_HOLE``) wherever a graph
tensor goes, also inside lists and keyword arguments (``torch.cat([token, x], 1)``); calling it
with the node's inputs fills the holes in order. ``Item`` takes one element of a call that
returns a tuple (an attention layer's output and weights).
"""
from __future__ import annotations

from ..ir import Node

__all__ = ["OpaqueCall", "Item", "holes", "fill"]


class OpaqueCall:
    """A call the op table lacks, with its constant arguments baked in; inputs fill the holes."""

    def __init__(self, fn, template: tuple, kwargs: dict, name: str):
        self.fn, self.template, self.kwargs, self.__qualname__ = fn, template, kwargs, name

    def __call__(self, *inputs):
        it = iter(inputs)
        args = fill(self.template, it)
        return self.fn(*args, **fill(self.kwargs, it))

    def __repr__(self) -> str:
        return self.__qualname__


class _Hole:
    """Where an input goes in an opaque call's arguments; one object, kept by copy/deepcopy
    (``Graph.copy`` deep-copies attrs) and by pickling."""

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return "_HOLE"

    def __repr__(self) -> str:
        return "<input>"


_HOLE = _Hole()


def fill(template, it):
    """``template`` with each _HOLE (also inside lists, tuples and dicts) replaced by the next input."""
    if template is _HOLE:
        return next(it)
    if isinstance(template, (list, tuple)):
        return type(template)(fill(t, it) for t in template)
    if isinstance(template, dict):
        return {k: fill(v, it) for k, v in template.items()}
    return template


def holes(value, found: list):
    """``value`` with every IR node (also inside lists, tuples and dicts) a _HOLE, appending the nodes to ``found``."""
    if isinstance(value, Node):
        found.append(value)
        return _HOLE
    if isinstance(value, (list, tuple)):
        return type(value)(holes(v, found) for v in value)
    if isinstance(value, dict):
        return {k: holes(v, found) for k, v in value.items()}
    return value


class Item:
    """Element ``index`` of what a tuple-valued call returns (one opaque node per element used)."""

    def __init__(self, call, index: int):
        self.call, self.index, self.__qualname__ = call, index, f"{call.__qualname__}[{index}]"

    @property
    def fn(self):
        """What the call calls (a module is moved by ``.to()`` with the emitted graph)."""
        return self.call.fn

    def __call__(self, *inputs):
        return self.call(*inputs)[self.index]

    def __repr__(self) -> str:
        return self.__qualname__
