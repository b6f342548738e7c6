"""canonicalize: drop dropout/identity, merge reshapes, fold constant multiplies forward.

Requires: a verified graph. Guarantees: no ``identity`` nodes, no ``dropout`` unless kept; no reshape/flatten
directly reading another one or leaving the shape unchanged; every ``mul_const`` whose value
can reach a conv/linear through ops that commute with it (linear pools and reshapes; relu and
max pool too when the constant is positive) is folded into that layer's weight. The graph
computes the same function (up to float rounding).
"""
from __future__ import annotations

from snncompile.ir import Graph
from snncompile.pipeline import PassContext, register_pass

from ._walk import LINEAR_OPS, POSITIVE_HOMOGENEOUS_OPS, WEIGHTED_OPS, single_user

__all__ = ["Canonicalize"]


@register_pass("canonicalize")
class Canonicalize:
    """Options: ``fold_constants`` (fold mul_const into the next conv/linear); ``keep_dropout``
    (for graphs that will be trained: dropout stays and acts in train mode)."""

    fold_constants: bool = True
    keep_dropout: bool = False

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        drop = ("identity",) if self.keep_dropout else ("dropout", "identity")
        for n in list(graph.nodes):
            if n.op in drop:
                graph.bypass(n)
        _merge_reshapes(graph)
        if self.fold_constants:
            _fold_mul_const(graph)
        return graph


def _merge_reshapes(graph: Graph) -> None:
    changed = True
    while changed:
        changed = False
        for n in list(graph.nodes):
            if n.op not in ("reshape", "flatten"):
                continue
            src = n.inputs[0]
            if n.shape is not None and src.shape is not None and tuple(n.shape) == tuple(src.shape):
                graph.bypass(n)
                changed = True
            elif src.op in ("reshape", "flatten") and single_user(graph, src) is n:
                n.op, n.attrs = "reshape", {"shape": tuple(n.shape[1:])}
                graph.bypass(src)
                changed = True


def _fold_mul_const(graph: Graph) -> None:
    for n in list(graph.nodes):
        if n.op != "mul_const":
            continue
        c = float(n.attrs["value"])
        allowed = POSITIVE_HOMOGENEOUS_OPS if c > 0 else LINEAR_OPS + ("mul_const",)
        cur = single_user(graph, n)
        while cur is not None and cur.op in allowed + ("mul_const",):
            if cur.op == "mul_const":
                break
            cur = single_user(graph, cur)
        if cur is None:
            continue
        if cur.op == "mul_const":
            cur.attrs["value"] = float(cur.attrs["value"]) * c
            graph.bypass(n)
        elif cur.op in WEIGHTED_OPS:
            cur.params["weight"] = cur.params["weight"] * c
            graph.bypass(n)
