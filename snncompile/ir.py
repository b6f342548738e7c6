"""The canonical IR: a Graph of Nodes in SSA order, its printer, diff, copy and verifier.

A Node has an ``op`` from the op table (snncompile.ops), ``inputs`` (earlier Nodes), ``attrs``
(plain Python values), ``params`` (named tensors) and ``meta`` (shape per sample step, dtype,
source location, what passes recorded). Shapes are stored with the batch dimension as ``N``
(``meta["shape"] = (None, 32, 11, 11)`` prints as ``[N,32,11,11]``). Time never appears in a
shape: neurons loop over T at run time.

Passes change a graph only through the rewrite API: ``replace`` (a new node in an old one's
place, keeping its id; stale meta does not survive), ``replace_all_uses``, ``insert_before`` /
``insert_after``, ``erase`` (``bypass``, ``remove``) and ``move``. Attributes may still be edited
in place where the op stays the same.
"""
from __future__ import annotations

import copy
import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch

from .errors import VerifyError, describe_node
from .ir_format import _format_value, _shown, format_shape
from .ir_rewrite import RewriteMixin

__all__ = ["SourceLoc", "Node", "Graph", "format_shape"]


@dataclass(frozen=True)
class SourceLoc:
    """Where a node came from: the module path (``network.4``) and the user's source line."""

    module_path: str = ""
    file: str = ""
    line: int = 0
    code: str = ""

    @property
    def short_file(self) -> str:
        return os.path.basename(self.file)

    def __str__(self) -> str:
        parts = [self.module_path] if self.module_path else []
        if self.file:
            parts.append(f"{self.short_file}:{self.line}")
        return " ".join(parts)




@dataclass(eq=False)
class Node:
    """One operation: ``%id = op(inputs) attrs params  # meta``; identity is the object."""

    id: int
    op: str
    inputs: list["Node"] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self):
        return self.meta.get("shape")

    @property
    def source(self) -> SourceLoc | None:
        return self.meta.get("source")

    def describe(self) -> str:
        """``node %7 relu (model.layer2.1.relu, resnet.py:54)`` for messages."""
        return describe_node(self)

    def format(self) -> str:
        """One printed line: op, inputs, attrs, params, then module path, source and shape."""
        args = ", ".join(f"%{i.id}" for i in self.inputs)
        # an attribute that says what kind of op this is (a neuron's family) comes first
        first = [f"family={self.attrs['family']}"] if "family" in self.attrs else []
        items = first + [f"{k}={_format_value(v)}" for k, v in self.params.items()]
        items += [f"{k}={_format_value(v)}" for k, v in self.attrs.items() if k != "family" and _shown(self, k, v)]
        lhs = f"%{self.id} = {self.op}({args})"
        body = " ".join([lhs] + items)
        tail = []
        if self.source is not None and str(self.source):
            tail.append(str(self.source))
        tail.append(format_shape(self.shape))
        return f"{body:<72} # {'  '.join(tail)}"

    def __repr__(self) -> str:
        return f"<Node %{self.id} {self.op}>"


class Graph(RewriteMixin):
    """An ordered list of Nodes in SSA form; ``inputs`` are the ``input`` nodes, one ``output``."""


    is_graph = True  # duck-typed by the printer and the op schemas (no import of this module there)
    def __init__(self, nodes: Iterable[Node] = (), name: str = "graph"):
        self.nodes: list[Node] = list(nodes)
        self.name = name
        self._next_id = max((n.id for n in self.nodes), default=-1) + 1

    # construction -----------------------------------------------------------------------
    def fresh_id(self) -> int:
        i = self._next_id
        self._next_id += 1
        return i

    def add(self, op: str, inputs: Iterable[Node] = (), attrs: dict | None = None,
            params: dict | None = None, meta: dict | None = None, *, before: Node | None = None,
            after: Node | None = None) -> Node:
        """Create a node and insert it at the end, or before/after a given node (builders and
        frontends; passes use ``insert_before``/``insert_after``). ``meta`` is taken as given."""
        node = Node(self.fresh_id(), op, list(inputs), dict(attrs or {}), dict(params or {}), dict(meta or {}))
        if before is not None:
            self.nodes.insert(self._index(before), node)
        elif after is not None:
            self.nodes.insert(self._index(after) + 1, node)
        else:
            self.nodes.append(node)
        return node

    def remove(self, node: Node) -> None:
        """Remove a node nobody reads; raises VerifyError if it still has users (``erase``)."""
        self.erase(node)

    def bypass(self, node: Node) -> None:
        """Remove a one-input node, wiring its readers to its input."""
        if len(node.inputs) != 1:
            raise VerifyError(f"cannot bypass {node.describe()}: it has {len(node.inputs)} inputs, not one")
        self.erase(node, rewire_to=node.inputs[0])

    # rewriting: the API passes use (never assign node.op or edit graph.nodes by hand) ---------


    @staticmethod
    def _make(id: int, op: str, inputs, attrs, params, meta) -> Node:
        node = Node(id, op, list(inputs), dict(attrs or {}), dict(params or {}), dict(meta))
        if "shape" not in node.meta:
            shape = _inferred_shape(node)
            if shape is not None:
                node.meta["shape"] = shape
        return node

    # queries ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def inputs(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "input"]

    @property
    def output(self) -> Node:
        outs = [n for n in self.nodes if n.op == "output"]
        if len(outs) != 1:
            raise VerifyError(f"graph {self.name} has {len(outs)} output nodes; it needs exactly one")
        return outs[0]

    def users(self, node: Node) -> list[Node]:
        """The nodes that read ``node``, in graph order."""
        return [n for n in self.nodes if any(i is node for i in n.inputs)]

    def node(self, id: int) -> Node:
        """The node printed as ``%id``."""
        for n in self.nodes:
            if n.id == id:
                return n
        raise KeyError(f"no node %{id} in graph {self.name}")

    def find(self, op: str) -> list[Node]:
        """All nodes with the given op, in order."""
        return [n for n in self.nodes if n.op == op]

    # copying, printing, diffing -----------------------------------------------------------
    def copy(self, *, share_params: bool = False) -> "Graph":
        """A deep copy: new Nodes, cloned parameter tensors; meta copied (tensors cloned).
        ``share_params``: the copy holds the same parameter tensors (for a snapshot that is only
        printed: passes replace a node's tensors, they never write into them)."""
        mapping: dict[int, Node] = {}
        nodes = []
        for n in self.nodes:
            m = Node(n.id, n.op, [mapping[id(i)] for i in n.inputs], copy.deepcopy(n.attrs),
                     {k: v if share_params else v.detach().clone() for k, v in n.params.items()},
                     _copy_meta(n.meta))
            mapping[id(n)] = m
            nodes.append(m)
        g = Graph(nodes, self.name)
        g._next_id = max(self._next_id, g._next_id)
        return g

    def format(self) -> str:
        """The whole graph, one line a node; a node holding a body graph (a recurrent container)
        is followed by the body's lines, indented."""
        lines = []
        for n in self.nodes:
            lines.append(n.format())
            for k, v in n.attrs.items():
                if isinstance(v, Graph):
                    lines += ["    " + line for line in v.format().splitlines()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.nodes)} nodes>"

    def diff(self, other: "Graph", context: int = 1) -> str:
        """A unified diff of the printed graphs: what changed from ``self`` to ``other``."""
        a, b = self.format().splitlines(), other.format().splitlines()
        return "\n".join(difflib.unified_diff(a, b, f"{self.name}", f"{other.name}", n=context, lineterm=""))

    def to_networkx(self):
        """A networkx.MultiDiGraph: one vertex per node id (op, attrs, shape), an edge per input
        (``index`` = input position, so ``add(%1, %1)`` has two edges)."""
        import networkx as nx

        g = nx.MultiDiGraph(name=self.name)
        for n in self.nodes:
            g.add_node(n.id, op=n.op, attrs=dict(n.attrs), shape=n.shape,
                       label=f"%{n.id} {n.op}", module_path=n.source.module_path if n.source else "")
            for pos, i in enumerate(n.inputs):
                g.add_edge(i.id, n.id, index=pos)
        return g

    def verify(self) -> None:
        """Check SSA order, unique ids, one output, and every node against its op schema."""
        from .verify import verify_graph

        verify_graph(self)


def _inferred_shape(node: Node):
    """The shape the op computes from the inputs' shapes; None when it cannot be told."""
    from .ops import infer_shape

    try:
        return infer_shape(node, [i.shape for i in node.inputs])
    except Exception:
        return None


def _copy_meta(meta: dict) -> dict:
    out = {}
    for k, v in meta.items():
        out[k] = v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
    return out
