"""The SNN's meaning with the values it has now: training changes the emitted module's copies of the
parameters (weights, batch-norm statistics, thresholds, leaks), never the graph's, so exporters and
analyses read the stage before lowering through ``semantic_graph_now``."""
from __future__ import annotations

from .ir import Graph
from .ops.neuron import FUSED_NEURON_SUMPOOL, NEURON_OP

__all__ = ["semantic_graph_now"]


def semantic_graph_now(snn) -> Graph:
    """A copy of ``snn.semantic_graph`` whose parameters are the module's current ones (its learned
    thresholds and leaks written into the neurons' attributes); the SNN is not changed. A node the
    lowering changed beyond recognition keeps the graph's values."""
    graph = snn.semantic_graph.copy()
    _refresh(graph, snn.module, {n.id: n for n in snn.graph.nodes})
    return graph


def _same_op(a: str, b: str) -> bool:
    """The lowered node is still this node: the same op, or a neuron fused with its sum pool."""
    return a == b or (a, b) == (NEURON_OP, FUSED_NEURON_SUMPOOL)


def _refresh(graph: Graph, gm, lowered: dict) -> None:
    names = getattr(gm, "ir_names", {})
    for node in graph.nodes:
        low, name = lowered.get(node.id), names.get(node.id)
        if low is None or name is None or not _same_op(node.op, low.op):
            continue
        if node.op == NEURON_OP:
            mod = gm.get_submodule(name)
            node.params["threshold"] = mod.threshold.detach().clone()
            if mod.leak is not None:  # the family's own leak parameter: 1/tau or beta
                key = "beta" if node.attrs.get("form") == "snntorch" else "tau"
                k = float(mod.leak.detach())
                node.attrs[key] = k if key == "beta" else 1.0 / k
        elif node.op == "synapse_filter":
            node.attrs["tau"] = gm.get_submodule(name).tau
        elif node.op == "batchnorm":
            mod = gm.get_submodule(name)
            for p in node.params:
                node.params[p] = getattr(mod, p).detach().clone()
        elif node.op == "recurrent":
            body = gm.get_submodule(name).body
            _refresh(node.attrs["body"], body, {n.id: n for n in low.attrs["body"].nodes})
        else:
            for p in node.params:
                t = getattr(gm, f"{name}_{p}", None)
                if t is not None:
                    node.params[p] = t.detach().clone()
