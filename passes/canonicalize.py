"""canonicalize: drop dropout/identity, merge reshapes, fold constant multiplies forward.

Requires: a verified graph. Guarantees: no ``identity`` nodes, no ``dropout`` unless kept; no reshape/flatten
directly reading another one or leaving the shape unchanged; every ``mul_const`` whose value
can reach a conv/linear through ops that commute with it (linear pools and reshapes; relu and
max pool too when the constant is positive) is folded into that layer's weight. The graph
computes the same function (up to float rounding).
"""
from __future__ import annotations

from snncompile.ir import Graph, Node
from snncompile.ops import get_op, has_trait
from snncompile.pipeline import PassContext, register_pass

from ._walk import single_user

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
            if not has_trait(n, "layout"):
                continue
            src = n.inputs[0]
            if n.shape is not None and src.shape is not None and tuple(n.shape) == tuple(src.shape):
                graph.bypass(n)
                changed = True
            elif has_trait(src, "layout") and single_user(graph, src) is n:
                graph.replace(n, "reshape", attrs={"shape": tuple(n.shape[1:])}, meta={"shape": n.shape})
                graph.bypass(src)
                changed = True


def _carries_constant(n: Node, c: float) -> bool:
    """A constant multiply by ``c`` passes through ``n`` unchanged to what reads it: a one-input
    op, positively homogeneous when c > 0, linear otherwise, that is not itself a multiply."""
    if get_op(n.op).arity != 1 or has_trait(n, "multiply"):
        return False
    return has_trait(n, "scale_transparent" if c > 0 else "linear")


def _fold_mul_const(graph: Graph) -> None:
    for n in list(graph.nodes):
        if n.op != "mul_const":
            continue
        c = float(n.attrs["value"])
        cur = single_user(graph, n)
        while cur is not None and (cur.op == "mul_const" or _carries_constant(cur, c)):
            if cur.op == "mul_const":
                break
            cur = single_user(graph, cur)
        if cur is None:
            continue
        if cur.op == "mul_const":
            cur.attrs["value"] = float(cur.attrs["value"]) * c
            graph.bypass(n)
        elif has_trait(cur, "weighted"):
            cur.params["weight"] = cur.params["weight"] * c
            graph.bypass(n)
