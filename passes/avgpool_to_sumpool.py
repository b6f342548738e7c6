"""avgpool-to-sumpool: average pooling becomes spatial downsampling by summation.

An ``avgpool2d`` (and an ``adaptive_avgpool2d`` whose output divides its input) becomes a
``sumpool2d`` followed by ``mul_const(1/k^2)``, and that constant is folded into the next
conv/linear's weights (the same folding canonicalize does). Where no layer can take it, the
``mul_const`` stays. Requires: no ceil_mode/partial windows and padding only with
count_include_pad (the divisor must be the same k^2 for every window). Guarantees: the graph
computes the same function; pools it cannot convert are left as they are.
"""
from __future__ import annotations

from snncompile.ir import Graph, Node
from snncompile.pipeline import PassContext, register_pass

from .canonicalize import _fold_mul_const

__all__ = ["AvgpoolToSumpool"]


@register_pass("avgpool-to-sumpool")
class AvgpoolToSumpool:
    """No options."""

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        for n in list(graph.nodes):
            if n.op == "adaptive_avgpool2d":
                n = _adaptive_to_avgpool(graph, n)
            if n.op != "avgpool2d":
                continue
            a = n.attrs
            k = tuple(a["kernel_size"]) if isinstance(a["kernel_size"], (tuple, list)) else (a["kernel_size"],) * 2
            pad = tuple(a.get("padding", 0)) if isinstance(a.get("padding", 0), (tuple, list)) else (a.get("padding", 0),) * 2
            if a.get("ceil_mode") or a.get("divisor_override") is not None or (any(pad) and not a.get("count_include_pad", True)):
                continue
            s = graph.replace(n, "sumpool2d",
                              attrs={"kernel_size": k, "stride": a.get("stride") or k, "padding": pad})
            c = graph.insert_after(s, "mul_const", [s], {"value": 1.0 / (k[0] * k[1])}, meta=dict(s.meta))
            graph.replace_all_uses(s, c)
        _fold_mul_const(graph)
        return graph


def _adaptive_to_avgpool(graph: Graph, n: Node) -> Node:
    """The avgpool2d computing an adaptive pool whose output divides its input (else ``n``)."""
    (h, w), (oh, ow) = n.inputs[0].shape[2:], n.attrs["output_size"]
    if h % oh or w % ow:
        return n
    k = (h // oh, w // ow)
    return graph.replace(n, "avgpool2d", attrs={"kernel_size": k, "stride": k, "padding": (0, 0)})
