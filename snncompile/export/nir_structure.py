"""The shape of a NIR graph as the importer needs it: subgraphs inlined, reset-by-subtraction
loops found, the remaining cycles told apart (delayed edges), and an evaluation order.

The cycle rule is the one ``CONVENTIONS`` states: a depth-first walk from the Input nodes (in node
order, successors in edge order) marks every edge that reaches a node on its stack as delayed (it
carries the previous step's value); a delayed edge must end in a neuron or an integrator.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UnsupportedOpError

__all__ = ["Flat", "flatten", "find_loops", "delayed_edges", "order"]

STATEFUL = ("I", "IF", "LI", "LIF", "CubaLI", "CubaLIF")


@dataclass
class Flat:
    """A NIR graph with its subgraphs inlined: ``nodes`` name -> node, ``edges`` in order."""

    nodes: dict
    edges: list
    kinds: dict = field(default_factory=dict)  # name -> NIR class name

    def ins(self, name: str) -> list:
        return [a for a, b in self.edges if b == name]

    def outs(self, name: str) -> list:
        return [b for a, b in self.edges if a == name]


def kind(node) -> str:
    return type(node).__name__


def flatten(nir, graph, prefix: str = "") -> Flat:
    """``graph`` with every nested NIRGraph replaced by its nodes (named ``sub.inner``): an edge into
    a subgraph goes to what its Input nodes feed, an edge out of it leaves from what feeds its
    Output nodes (the inner Input/Output nodes are dropped)."""
    nodes, edges, entry, exit_ = {}, [], {}, {}
    for name, node in graph.nodes.items():
        full = prefix + name
        if not isinstance(node, nir.NIRGraph):
            nodes[full] = node
            continue
        sub = flatten(nir, node, full + ".")
        ports = {n for n, k in sub.kinds.items() if k in ("Input", "Output") and n.count(".") == full.count(".") + 1}
        entry[name] = [b for a, b in sub.edges if a in ports and sub.kinds[a] == "Input"]
        exit_[name] = [a for a, b in sub.edges if b in ports and sub.kinds[b] == "Output"]
        nodes.update({n: v for n, v in sub.nodes.items() if n not in ports})
        edges.extend(e for e in sub.edges if e[0] not in ports and e[1] not in ports)
    for a, b in graph.edges:
        edges.extend((s, d) for s in exit_.get(a, [prefix + a]) for d in entry.get(b, [prefix + b]))
    return Flat(nodes, edges, {n: kind(v) for n, v in nodes.items()})


@dataclass
class Loop:
    """A neuron reset by subtraction: integrator -> Threshold -> Scale -> back into the integrator."""

    integrator: str
    fire: str
    reset: str


def find_loops(flat: Flat) -> dict:
    """Integrator name -> Loop, for every I/LI whose Threshold's Scale feeds it back."""
    loops = {}
    for name, k in flat.kinds.items():
        if k not in ("I", "LI"):
            continue
        for fire in flat.outs(name):
            if flat.kinds.get(fire) != "Threshold" or flat.ins(fire) != [name]:
                continue
            for reset in flat.outs(fire):
                if flat.kinds.get(reset) == "Scale" and flat.outs(reset) == [name] and flat.ins(reset) == [fire]:
                    loops[name] = Loop(name, fire, reset)
    return loops


def delayed_edges(flat: Flat, skip: set) -> set:
    """The back edges of a depth-first walk from the Input nodes (``skip``: edges already
    accounted for, the reset loops). UnsupportedOpError naming an edge that closes a cycle of
    stateless nodes, or a node no Input reaches."""
    succ = {n: [] for n in flat.nodes}
    for a, b in flat.edges:
        if (a, b) not in skip:
            succ[a].append(b)
    delayed, state = set(), {}  # 1: on the stack, 2: done
    for start in [n for n, k in flat.kinds.items() if k == "Input"]:
        if start in state:
            continue
        stack = [(start, iter(succ[start]))]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                if flat.kinds[nxt] not in STATEFUL:
                    raise UnsupportedOpError(f"from_nir: the edge {node!r} -> {nxt!r} closes a cycle without a neuron or "
                                             f"integrator ({flat.kinds[nxt]} {nxt!r} would need its own output this step)")
                delayed.add((node, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))
    lost = [n for n in flat.nodes if n not in state]
    if lost:
        raise UnsupportedOpError(f"from_nir: no Input reaches node(s) {lost[:5]}; every node must depend on an input")
    return delayed


def order(flat: Flat, skip: set) -> list:
    """The node names in an order where each comes after its sources (``skip``: edges to ignore)."""
    indeg = {n: 0 for n in flat.nodes}
    for a, b in flat.edges:
        if (a, b) not in skip:
            indeg[b] += 1
    ready = [n for n in flat.nodes if indeg[n] == 0]
    out = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        for a, b in flat.edges:
            if a == n and (a, b) not in skip:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
    return out
