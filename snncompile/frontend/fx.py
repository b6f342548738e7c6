"""torch.fx trace -> IR. The only place (with fx_spellings.py) that knows fx spellings.

``trace(model, example_input)`` symbolically traces a copy of the model, runs the example through
the traced graph to learn every value's shape (and to constant-fold shape arithmetic such as
``x.size(0)``), and turns each call into one canonical IR node. Calls with no canonical op
become ``opaque`` nodes that name what they call.
"""
from __future__ import annotations

import copy
import itertools
import os
import re
import traceback
import warnings
from typing import Any, Sequence

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import TraceError
from ..ir import Graph, Node, SourceLoc
from .fx_spellings import (Site, activation_of_function, activation_of_method, activation_of_module,
                           convert_function, convert_method, convert_module)

__all__ = ["trace", "register_leaf_module", "OpaqueCall"]

_TORCH_DIR = os.path.dirname(torch.__file__)
_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LEAF_TYPES: dict[type, Any] = {}  # user types that trace as one node -> converter(mod, site)


def register_leaf_module(cls: type, converter) -> None:
    """Trace instances of ``cls`` as one node: ``converter(module, site)`` returns
    ``(op, inputs, attrs, params)`` like the built-in rules (used by the stateful layers)."""
    _LEAF_TYPES[cls] = converter


class OpaqueCall:
    """A call the op table lacks, with its constant arguments baked in; inputs fill the holes."""

    def __init__(self, fn, template: tuple, kwargs: dict, name: str):
        self.fn, self.template, self.kwargs, self.__qualname__ = fn, template, kwargs, name

    def __call__(self, *inputs):
        it = iter(inputs)
        args = [next(it) if a is _HOLE else a for a in self.template]
        return self.fn(*args, **self.kwargs)

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


class _Tracer(fx.Tracer):
    def __init__(self, leaf_types: tuple):
        super().__init__()
        self.record_stack_traces = True
        self.leaf_types = leaf_types

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, qualname)


def _user_frame(frames) -> tuple[str, int, str]:
    """The innermost frame outside torch and snncompile: the user's line."""
    for f in reversed(list(frames)):
        fn = os.path.abspath(f[0])
        if not fn.startswith(_TORCH_DIR) and not fn.startswith(_PKG_DIR):
            return f[0], f[1], (f[2] or "").strip()
    return "", 0, ""


_FRAME_RE = re.compile(r'File "([^"]+)", line (\d+), in [^\n]*\n\s*([^\n]*)')


def _source(node: fx.Node) -> SourceLoc:
    path = ""
    if node.op == "call_module":
        path = str(node.target)
    else:
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path = list(stack.values())[-1][0]
    frames = [(m.group(1), int(m.group(2)), m.group(3)) for m in _FRAME_RE.finditer(node.stack_trace or "")]
    file, line, code = _user_frame(frames)
    return SourceLoc(path, file, line, code)


def _trace_error(e: BaseException, what: str) -> TraceError:
    file, line, code = _user_frame((f.filename, f.lineno, f.line) for f in traceback.extract_tb(e.__traceback__))
    where = f" at {os.path.basename(file)}:{line} `{code}`" if file else ""
    hint = ("the model's forward branches or loops on tensor values, which a graph cannot record; "
            "make the branch depend on constants (module attributes), or move it out of forward, "
            "or wrap that submodule as a leaf with snncompile.frontend.fx.register_leaf_module")
    if "control flow" not in str(e):
        hint = "check that forward only calls torch operations on the input"
    return TraceError(f"trace: could not {what}{where}: {type(e).__name__}: {e} — {hint}")


def trace(model: nn.Module, example_input, *, leaf_modules: Sequence[type] = ()) -> Graph:
    """Trace ``model`` (never modified: a copy is traced in eval mode) into a verified IR Graph.

    ``example_input`` is a tensor or a tuple of tensors with a batch dimension; its shapes fix
    every node's ``meta["shape"]``. Types in ``leaf_modules`` become opaque nodes.

    A forward hook or pre-hook on the model or any submodule is refused (TraceError naming the
    module and the hook): tracing reads ``forward`` and would drop it; the pre-hook of
    ``torch.nn.utils.weight_norm`` is applied (its weight folded into the copy). A model whose
    floating parameters are not float32 (float64, float16, bfloat16) is traced as a float32
    copy, with one warning; floating example inputs are read as float32 too (the IR's dtype).
    """
    if not isinstance(model, nn.Module):
        raise TraceError(f"trace: expected a torch.nn.Module, got {type(model).__name__}")
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    if not inputs or not all(isinstance(t, torch.Tensor) and t.dim() >= 1 for t in inputs):
        raise TraceError("trace: example_input must be a tensor (or tuple of tensors) with a batch dimension")
    model = _fold_weight_norm(_private_copy(model).eval())
    _refuse_hooks(model)
    model = _as_float32(model)
    inputs = tuple(t.float() if t.is_floating_point() and t.dtype != torch.float32 else t for t in inputs)
    tracer = _Tracer(tuple(_LEAF_TYPES) + tuple(leaf_modules))
    try:
        fx_graph = tracer.trace(model)
    except Exception as e:
        raise _trace_error(e, f"trace {type(model).__name__}") from e
    gm = fx.GraphModule(tracer.root, fx_graph)
    values: dict[fx.Node, Any] = {}

    class _Recorder(fx.Interpreter):
        def run_node(self, n):
            values[n] = out = super().run_node(n)
            return out

    try:
        with torch.no_grad():
            _Recorder(gm).run(*inputs)
    except Exception as e:
        raise _trace_error(e, f"run the example input through {type(model).__name__}") from e
    return _Converter(gm, values, inputs[0].shape[0]).convert(type(model).__name__)


class _Converter:
    def __init__(self, gm: fx.GraphModule, values: dict, batch: int):
        self.gm, self.values, self.batch = gm, values, batch
        self.graph = Graph(name="traced")
        self.env: dict[fx.Node, Any] = {}

    def is_ir(self, v) -> bool:
        return isinstance(v, Node)

    def convert(self, name: str) -> Graph:
        self.graph.name = name
        n_inputs = 0
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                self.env[n] = self._add("input", [], {"index": n_inputs}, {}, n)
                n_inputs += 1
            elif n.op == "get_attr":
                self.env[n] = self.values[n]
            elif n.op == "output":
                outs = n.args[0] if isinstance(n.args[0], (tuple, list)) else (n.args[0],)
                mapped = [self.env.get(o) if isinstance(o, fx.Node) else o for o in outs]
                if not mapped or not all(isinstance(m, Node) for m in mapped):
                    raise TraceError(f"trace: {name}.forward must return a tensor or a tuple of tensors "
                                     "computed from the input")
                out = self._add("output", mapped, {}, {}, n)
                out.meta["shape"] = mapped[0].shape
            else:
                self.env[n] = self._call(n)
        self.graph.verify()
        return self.graph

    def _add(self, op, inputs, attrs, params, n: fx.Node) -> Node:
        meta = {"source": _source(n)}
        v = self.values.get(n)
        if isinstance(v, torch.Tensor):
            meta["shape"] = (None,) + tuple(v.shape[1:])
            meta["dtype"] = v.dtype
        return self.graph.add(op, inputs, attrs, params, meta)

    def _call(self, n: fx.Node):
        args = fx.node.map_arg(n.args, lambda a: self.env[a])
        kwargs = fx.node.map_arg(n.kwargs, lambda a: self.env[a])
        out = self.values[n]
        has_ir = _contains_ir((args, kwargs))
        if not has_ir or not isinstance(out, torch.Tensor):
            if not has_ir or not _contains_tensor(out):
                return out  # constant (shape arithmetic, parameters): folded from the example
            raise TraceError(f"trace: {n.format_node()} at {_source(n)} gives a {type(out).__name__} of tensors; "
                             "snncompile graphs pass single tensors between ops — split it into separate calls")
        site = Site(n, tuple(args), dict(kwargs), out, self.is_ir, self.batch)
        rule = None
        if n.op == "call_module":
            mod = self.gm.get_submodule(n.target)
            conv = _LEAF_TYPES.get(type(mod))
            rule = conv(mod, site) if conv else convert_module(mod, site)
            target, tname = (copy.deepcopy(mod), type(mod).__name__)
            activation = None if conv else activation_of_module(mod)
        elif n.op == "call_function":
            rule = convert_function(site)
            target, tname = n.target, getattr(n.target, "__name__", str(n.target))
            activation = activation_of_function(n.target)
        else:
            rule = convert_method(site)
            target, tname = getattr(torch.Tensor, n.target), f"Tensor.{n.target}"
            activation = activation_of_method(n.target)
        if rule is not None:
            op, ins, attrs, params = rule
            node = self._add(op, ins, attrs, params, n)
        else:
            node = self._opaque(n, target, tname, args, kwargs, activation)
        src = n.args[0] if n.args else None
        if isinstance(src, fx.Node) and self.values.get(src) is out:
            self.env[src] = node  # an in-place op: later reads of its input see the new value
        return node

    def _opaque(self, n, target, tname, args, kwargs, activation: str | None = None) -> Node:
        ins = [a for a in args if isinstance(a, Node)]
        if _contains_ir(kwargs) or _contains_ir(tuple(a for a in args if not isinstance(a, Node))):
            raise TraceError(f"trace: {tname} at {_source(n)} takes graph tensors inside a list or keyword; "
                             "snncompile cannot represent that call — rewrite it with positional tensor arguments")
        template = tuple(_HOLE if isinstance(a, Node) else a for a in args)
        call = OpaqueCall(target, template, dict(kwargs), tname)
        attrs = {"target": call, "name": tname} | ({"activation": activation} if activation else {})
        return self._add("opaque", ins, attrs, {}, n)


def _hook_name(hook) -> str:
    fn = getattr(hook, "__func__", hook)
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    code = getattr(fn, "__code__", None)
    return f"{name} ({os.path.basename(code.co_filename)}:{code.co_firstlineno})" if code else name


def _refuse_hooks(model: nn.Module) -> None:
    """TraceError for the first forward hook or pre-hook on ``model``, a submodule, or all modules."""
    from torch.nn.modules import module as torch_module
    drop = ("snncompile traces forward() and would drop it, so the SNN would not compute what the model "
            "computes — remove the hook (handle.remove()) and put what it does into the model's forward "
            "(or apply it to the data before converting)")
    for attr, what in (("_forward_pre_hooks", "forward pre-hook"), ("_forward_hooks", "forward hook")):
        for h in (getattr(torch_module, "_global" + attr, None) or {}).values():
            how = "register_module" + attr[:-1]
            raise TraceError(f"trace: a global {what} {_hook_name(h)} is set for every module "
                             f"(torch.nn.modules.module.{how}); {drop}")
        for path, mod in model.named_modules():
            for h in (getattr(mod, attr, None) or {}).values():
                where = f"module {path!r} ({type(mod).__name__})" if path else f"the model ({type(mod).__name__})"
                raise TraceError(f"trace: {where} has a {what} {_hook_name(h)} (register{attr[:-1]}); {drop}")


def _private_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model``; tensors held as plain attributes that are results of autograd
    (weight_norm's ``weight`` after a forward), which deepcopy refuses, are copied detached."""
    memo = {id(v): v.detach().clone() for m in model.modules() for v in vars(m).values()
            if isinstance(v, torch.Tensor) and not v.is_leaf}
    try:
        return copy.deepcopy(model, memo)
    except Exception as e:
        raise TraceError(f"trace: could not copy {type(model).__name__} (snncompile never changes the user's "
                         f"model, so it converts a copy): {type(e).__name__}: {e}") from e


def _fold_weight_norm(model: nn.Module) -> nn.Module:
    """``model`` (a private copy) with every ``torch.nn.utils.weight_norm`` pre-hook applied: the
    weight computed from its g and v, as the hook would before each forward, and the hook removed."""
    from torch.nn.utils.weight_norm import WeightNorm, remove_weight_norm
    for mod in model.modules():
        for name in [h.name for h in mod._forward_pre_hooks.values() if isinstance(h, WeightNorm)]:
            remove_weight_norm(mod, name)
    return model


def _as_float32(model: nn.Module) -> nn.Module:
    """``model`` (a private copy) with floating parameters and buffers in float32; one warning
    when any was of another floating dtype."""
    dtypes = {t.dtype for t in itertools.chain(model.parameters(), model.buffers())
              if t.is_floating_point() and t.dtype != torch.float32}
    if not dtypes:
        return model
    names = ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes))
    warnings.warn(f"snncompile: the model's parameters are {names}; it is converted as a float32 copy (the SNN "
                  "runs in float32, and its inputs are read as float32) — pass model.float() to silence this",
                  stacklevel=3)
    return model.float()


def _contains_tensor(v) -> bool:
    if isinstance(v, torch.Tensor):
        return True
    if isinstance(v, (tuple, list)):
        return any(_contains_tensor(e) for e in v)
    return False


def _contains_ir(v) -> bool:
    if isinstance(v, Node):
        return True
    if isinstance(v, (tuple, list)):
        return any(_contains_ir(e) for e in v)
    if isinstance(v, dict):
        return any(_contains_ir(e) for e in v.values())
    return False
