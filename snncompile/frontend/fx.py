"""torch.fx trace -> IR. The only place (with fx_spellings.py) that knows fx spellings.

``trace(model, example_input)`` symbolically traces a copy of the model, runs the example through
the traced graph to learn every value's shape (and to constant-fold shape arithmetic such as
``x.size(0)``), and turns each call into one canonical IR node. Calls with no canonical op
become ``opaque`` nodes that name what they call.
"""
from __future__ import annotations

import copy
import operator
import os
import re
import traceback
from typing import Any, Sequence

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import TraceError
from ..ir import Graph, Node, SourceLoc
from ..ops import infer_shape
from .canonical import PREV
from .fx_model import prepare_model
from .fx_opaque import OpaqueCall, holes as _holes, Item as _Item
from .fx_spellings import (Site, activation_of_function, activation_of_method, activation_of_module,
                           convert_function, convert_method, convert_module, split_results)
from .fx_tracer import ConcreteTracer, ValueDependentBranch, example_values

__all__ = ["trace", "register_leaf_module", "OpaqueCall"]

_TORCH_DIR = os.path.dirname(torch.__file__)
_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LEAF_TYPES: dict[type, Any] = {}  # user types that trace as one node -> converter(mod, site)


def register_leaf_module(cls: type, converter) -> None:
    """Trace instances of ``cls`` as one node: ``converter(module, site)`` returns
    ``(op, inputs, attrs, params)`` like the built-in rules (used by the stateful layers)."""
    _LEAF_TYPES[cls] = converter


def _user_frame(frames) -> tuple[str, int, str]:
    """The innermost frame outside torch and snncompile: the user's line."""
    for f in reversed(list(frames)):
        fn = os.path.abspath(f[0])
        # torch's own frames only: torchvision's and timm's model definitions are the user's source
        if not fn.startswith(_TORCH_DIR + os.sep) and not fn.startswith(_PKG_DIR + os.sep):
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
    if isinstance(e, ValueDependentBranch):
        hint = ("the model's forward branches on tensor values (branches on shapes are resolved from the "
                "example input), which a graph cannot record; " + hint.split("; ", 1)[1])
    elif "control flow" not in str(e):
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
    model = prepare_model(model)
    inputs = tuple(t.float() if t.is_floating_point() and t.dtype != torch.float32 else t for t in inputs)
    # the tracer runs the example alongside (branches on shapes follow it): on clones, for an
    # in-place op in forward must not change the caller's tensors
    tracer = ConcreteTracer(tuple(_LEAF_TYPES) + tuple(leaf_modules), tuple(t.clone() for t in inputs))
    try:
        fx_graph = tracer.trace(model)
    except Exception as e:
        raise _trace_error(e, f"trace {type(model).__name__}") from e
    gm = fx.GraphModule(tracer.root, fx_graph)
    values = example_values(gm.graph)
    if values is not None:  # the tracer ran the example already
        return _Converter(gm, values, inputs[0].shape[0]).convert(type(model).__name__)
    values = {}

    class _Recorder(fx.Interpreter):
        def run_node(self, n):
            values[n] = out = super().run_node(n)
            return out

    try:
        with torch.no_grad():
            _Recorder(gm).run(*(t.clone() for t in inputs))
    except Exception as e:
        raise _trace_error(e, f"run the example input through {type(model).__name__}") from e
    return _Converter(gm, values, inputs[0].shape[0]).convert(type(model).__name__)


_RECURRENT = (nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell)


class _Converter:
    def __init__(self, gm: fx.GraphModule, values: dict, batch: int):
        self.gm, self.values, self.batch = gm, values, batch
        self.graph = Graph(name="traced")
        self.env: dict[fx.Node, Any] = {}
        self.elements: list[Node] = []  # nodes made for the results of tuple-valued calls

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
        for e in reversed(self.elements):  # results of a chunk/split that forward never reads
            if not self.graph.users(e):
                self.graph.erase(e)
        self.graph.verify()
        return self.graph

    def _add(self, op, inputs, attrs, params, n: fx.Node, value=None) -> Node:
        meta = {"source": _source(n)}
        v = self.values.get(n) if value is None else value
        if isinstance(v, torch.Tensor):
            meta["shape"] = (None,) + tuple(v.shape[1:])
            meta["dtype"] = v.dtype
        return self.graph.add(op, inputs, attrs, params, meta)

    def _add_steps(self, steps, n: fx.Node) -> Node:
        """The chain of canonical steps one call became (frontend/canonical.py); the last is its value."""
        prev = None
        for i, (op, ins, attrs, params) in enumerate(steps):
            ins = [prev if x is PREV else x for x in ins]
            last = i == len(steps) - 1
            if last:
                node = self._add(op, ins, attrs, params, n)
            else:
                node = self.graph.add(op, ins, attrs, params, {"source": _source(n)})
                node.meta["shape"] = infer_shape(node, [i.shape for i in node.inputs])
            prev = node
        return prev

    def _call(self, n: fx.Node):
        args = fx.node.map_arg(n.args, lambda a: self.env[a])
        kwargs = fx.node.map_arg(n.kwargs, lambda a: self.env[a])
        out = self.values[n]
        if n.op == "call_function" and n.target is operator.getitem and isinstance(args[0], (tuple, list)) \
                and _contains_ir(args[0]):
            return args[0][args[1]]  # one result of a tuple-valued call: its own node already
        has_ir = _contains_ir((args, kwargs))
        if not has_ir or not _contains_tensor(out):
            return out  # constant (shape arithmetic, parameters): folded from the example
        site = Site(n, tuple(args), dict(kwargs), out, self.is_ir, self.batch)
        if not isinstance(out, torch.Tensor):
            return self._tuple_call(n, site, args, kwargs)
        if n.op == "call_module":
            mod = self.gm.get_submodule(n.target)
            conv = _LEAF_TYPES.get(type(mod))
            rule = conv(mod, site) if conv else convert_module(mod, site)
            activation = None if conv else activation_of_module(mod)
        elif n.op == "call_function":
            rule, activation = convert_function(site), activation_of_function(n.target)
        else:
            rule, activation = convert_method(site), activation_of_method(n.target)
        if isinstance(rule, list):
            node = self._add_steps(rule, n)
        elif rule is not None:
            op, ins, attrs, params = rule
            node = self._add(op, ins, attrs, params, n)
        else:
            call, found = self._opaque_call(n, args, kwargs)
            attrs = {"target": call, "name": call.__qualname__} | ({"activation": activation} if activation else {})
            node = self._add("opaque", found, attrs, {}, n)
        src = n.args[0] if n.args else None
        if isinstance(src, fx.Node) and self.values.get(src) is out:
            self.env[src] = node  # an in-place op: later reads of its input see the new value
        return node

    def _tuple_call(self, n: fx.Node, site: Site, args, kwargs) -> tuple:
        """A call giving a tuple of tensors: chunk/split/unbind become one slice (select) per
        result; any other call one opaque node per result, each computing the call and taking
        its element (results never read are dropped at the end)."""
        if n.op == "call_module" and isinstance(self.gm.get_submodule(n.target), _RECURRENT):
            mod = self.gm.get_submodule(n.target)
            raise TraceError(f"trace: {type(mod).__name__} at {_source(n)} is a recurrent layer of torch, which "
                             "runs its own loop over time; build the recurrent part from snncompile.layers "
                             "(its recurrent containers run as spiking neurons over the steps) and convert the rest")
        if not isinstance(site.out, (tuple, list)) or not all(isinstance(o, torch.Tensor) or o is None for o in site.out):
            raise TraceError(f"trace: {n.format_node()} at {_source(n)} gives a {type(site.out).__name__}, "
                             "which snncompile cannot represent — return tensors or tuples of tensors")
        results = split_results(site)
        if results is not None:
            nodes = tuple(self._add(op, ins, attrs, {}, n, value=v) for (op, ins, attrs), v in zip(results, site.out))
        else:
            call, found = self._opaque_call(n, args, kwargs)
            nodes = tuple(None if v is None else self._add("opaque", list(found), {
                "target": _Item(call, i), "name": f"{call.__qualname__}[{i}]"}, {}, n, value=v)
                for i, v in enumerate(site.out))
        self.elements.extend(e for e in nodes if e is not None)
        return nodes

    def _opaque_call(self, n: fx.Node, args, kwargs) -> tuple[OpaqueCall, list[Node]]:
        """What ``n`` calls, kept as it is (a module: a copy), with a hole wherever a graph tensor
        goes; and those tensors, the opaque node's inputs, in order."""
        if n.op == "call_module":
            mod = self.gm.get_submodule(n.target)
            target, tname = copy.deepcopy(mod), type(mod).__name__
        elif n.op == "call_function":
            target, tname = n.target, getattr(n.target, "__name__", str(n.target))
        else:
            target, tname = getattr(torch.Tensor, n.target), f"Tensor.{n.target}"
        found: list[Node] = []
        template, kw = _holes(tuple(args), found), _holes(dict(kwargs), found)
        return OpaqueCall(target, template, kw, tname), found


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
