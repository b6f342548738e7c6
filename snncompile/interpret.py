"""Run an IR graph node by node with the op table's own targets (no emitter, no torch.fx).

``interpret(graph, x)`` computes what a non-temporal graph (the ANN: no neurons, encode or
readout) says, calling each op's ``target`` with ``opdef.bind_call`` exactly as the emitted
module does: batch norm with its running statistics and dropout as identity (eval semantics),
an ``opaque`` node through the callable it holds. An ``observer(node, value)`` sees every node's
output as it is computed (calibration statistics, debugging). ``Interpreter`` keeps the
parameters on one device for many runs; ``snncompile.simulate.Simulator`` is the same loop for
graphs that see time.
"""
from __future__ import annotations

import copy
import itertools
from typing import Callable, Iterable

import torch
import torch.nn as nn

from .errors import ConfigError
from .ir import Graph, Node
from .ops import get_op

__all__ = ["Interpreter", "interpret", "is_temporal"]

Observer = Callable[[Node, torch.Tensor], None]


def is_temporal(graph: Graph) -> bool:
    """True when the graph has ops that see time (neurons, encode, readout, ...)."""
    return any(get_op(n.op).temporal for n in graph.nodes)


class Interpreter:
    what = "interpret"  # (the name errors start with)

    """Runs ``graph`` (non-temporal) on ``device`` (default: where its first parameter lives).

    Parameters are moved (not copied when already there) once; running never changes the graph.
    """

    def __init__(self, graph: Graph, device=None):
        temporal = [n for n in graph.nodes if get_op(n.op).temporal]
        if temporal:
            raise ConfigError(f"interpret: {temporal[0].describe()} sees time; the interpreter runs graphs "
                              "without neurons/encode/readout (the ANN) — emit the SNN to run it")
        if device is None:
            device = next((t.device for n in graph.nodes for t in n.params.values()), torch.device("cpu"))
        self.graph, self.device = graph, torch.device(device)
        self._params = {n.id: {k: t.to(self.device) for k, t in n.params.items()} for n in graph.nodes}
        self._opaque = {n.id: _on_device(n.attrs["target"], self.device) for n in graph.nodes if n.op == "opaque"}

    def run(self, *inputs: torch.Tensor, observer: Observer | None = None, stop_after: Iterable[Node] = ()):
        """The graph's output for ``inputs`` (one tensor, or a tuple for several outputs), or None
        when every node of ``stop_after`` was computed first (the rest of the graph is skipped)."""
        pending = {n.id for n in stop_after}
        env: dict[int, torch.Tensor] = {}
        for node in self.graph.nodes:
            if node.op == "output":
                outs = [env[i.id] for i in node.inputs]
                return outs[0] if len(outs) == 1 else tuple(outs)
            value = env[node.id] = self.evaluate(node, env, inputs)
            if observer is not None:
                observer(node, value)
            pending.discard(node.id)
            if stop_after and not pending:
                return None
        raise ConfigError(f"{self.what}: graph {self.graph.name} has no output node")

    __call__ = run

    def evaluate(self, node: Node, env: dict, inputs: tuple = ()) -> torch.Tensor:
        """The value of one node from the values of its inputs in ``env`` (node id -> value; an
        ``input`` node reads ``inputs``): a run one node at a time, for passes that recompute
        part of the graph after changing it."""
        if node.op == "input":
            index = node.attrs.get("index", 0)
            if index >= len(inputs):
                raise ConfigError(f"{self.what}: {node.describe()} is input {index} but {len(inputs)} "
                                  "input(s) were given")
            return inputs[index].to(self.device)
        return self._call(node, [env[i.id] for i in node.inputs])

    def _call(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        opdef = get_op(node.op)
        call_args, call_kwargs = opdef.bind_call(args, node.attrs, self._params[node.id])
        fn = self._opaque[node.id] if node.op == "opaque" else opdef.target
        if fn is None:
            raise ConfigError(f"interpret: {node.describe()} has no runnable target; register the op with one")
        return fn(*call_args, **call_kwargs)


def _on_device(call, device: torch.device):
    """An opaque call whose module (if any) lives on ``device``; a moved copy when it does not,
    so the graph's own module is never touched."""
    fn = getattr(call, "fn", None)
    module = fn if isinstance(fn, nn.Module) else call if isinstance(call, nn.Module) else None
    if module is None or all(t.device == device for t in itertools.chain(module.parameters(), module.buffers())):
        return call
    moved = copy.deepcopy(module).to(device)
    if module is call:
        return moved
    call = copy.copy(call)
    call.fn = moved
    return call


def interpret(graph: Graph, *inputs: torch.Tensor, observer: Observer | None = None, device=None):
    """Run a non-temporal graph once on ``inputs`` (see ``Interpreter``)."""
    return Interpreter(graph, device).run(*inputs, observer=observer)
