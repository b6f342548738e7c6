"""The fx tracer snncompile traces with: symbolic, but it runs the example alongside.

Every proxy it creates also gets the concrete value the example input gives there
(``node.meta["example_value"]``), so a forward that branches on a *shape* (``if x.shape[-2] <
7:``, ``assert x.size(1) == self.c``) traces with the branch the example takes, as a trace of
that input would. A branch on tensor *values* (``if x.sum() > 0``) is still refused: the graph
would record one side for every input.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

__all__ = ["ConcreteTracer", "ValueDependentBranch", "example_values"]

# the tracer patches Module.__call__ while it traces; the example must run the real modules
_unpatched = getattr(fx._symbolic_trace, "_maybe_revert_all_patches", contextlib.nullcontext)
_UNKNOWN = object()  # a value the tracer could not compute (it then refuses branches on it)


class ValueDependentBranch(fx.proxy.TraceError):
    """forward branches on a tensor's values (not its shape): a graph cannot record that."""


class ConcreteTracer(fx.Tracer):
    """A Tracer whose proxies carry the example's values; instances of ``leaf_types`` trace as one call."""

    def __init__(self, leaf_types: tuple, example_inputs: tuple):
        super().__init__()
        self.record_stack_traces = True
        self.leaf_types = leaf_types
        self._examples = list(example_inputs)
        self._placeholders = 0

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, qualname)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        try:
            with torch.no_grad(), _unpatched():  # real modules and attributes, not the tracer's
                value = self._example_value(kind, target, args, kwargs)
        except Exception:  # the real call fails on the example: only shape branches need values
            value = _UNKNOWN
        if isinstance(value, fx.Proxy):
            value = _UNKNOWN
        proxy.node.meta["example_value"] = value
        return proxy

    def _example_value(self, kind, target, args, kwargs) -> Any:
        if kind == "placeholder":
            i = self._placeholders
            self._placeholders += 1
            return self._examples[i] if i < len(self._examples) else _UNKNOWN
        if kind == "get_attr":
            obj = self.root
            for part in str(target).split("."):
                obj = getattr(obj, part)
            return obj
        a, kw = _real(args), _real(kwargs)
        if _has_unknown((a, kw)):
            return _UNKNOWN
        if kind == "call_function":
            return target(*a, **kw)
        if kind == "call_method":
            return getattr(a[0], target)(*a[1:], **kw)
        if kind == "call_module":
            return self.root.get_submodule(target)(*a, **kw)
        return _UNKNOWN

    def to_bool(self, obj: fx.Proxy) -> bool:
        value = obj.node.meta.get("example_value", _UNKNOWN)
        if isinstance(value, (bool, int)) and not isinstance(value, torch.Tensor):
            return bool(value)  # shape arithmetic: fixed by the example's shapes
        raise ValueDependentBranch("symbolically traced variables cannot be used as inputs to control flow "
                                   "(the branch depends on tensor values, not on shapes)")

    def iter(self, obj: fx.Proxy):
        value = obj.node.meta.get("example_value", _UNKNOWN)
        if isinstance(value, (tuple, list, torch.Size)):
            return iter([obj[i] for i in range(len(value))])
        return super().iter(obj)


def example_values(graph: fx.Graph) -> dict | None:
    """Every node's example value as the trace computed it, or None when some could not be
    computed (then the caller runs the example through the traced graph)."""
    values = {n: n.meta.get("example_value", _UNKNOWN) for n in graph.nodes if n.op != "output"}
    return None if any(v is _UNKNOWN for v in values.values()) else values


def _real(v):
    if isinstance(v, fx.Proxy):
        return v.node.meta.get("example_value", _UNKNOWN)
    if isinstance(v, fx.Node):
        return v.meta.get("example_value", _UNKNOWN)
    if isinstance(v, tuple):
        return tuple(_real(e) for e in v)
    if isinstance(v, list):
        return [_real(e) for e in v]
    if isinstance(v, dict):
        return {k: _real(e) for k, e in v.items()}
    if isinstance(v, slice):
        return slice(_real(v.start), _real(v.stop), _real(v.step))
    return v


def _has_unknown(v) -> bool:
    if v is _UNKNOWN:
        return True
    if isinstance(v, (tuple, list)):
        return any(_has_unknown(e) for e in v)
    if isinstance(v, dict):
        return any(_has_unknown(e) for e in v.values())
    if isinstance(v, slice):
        return _has_unknown((v.start, v.stop, v.step))
    return False
