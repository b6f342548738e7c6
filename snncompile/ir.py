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


def format_shape(shape) -> str:
    """``(None, 32, 11, 11)`` -> ``[N,32,11,11]``."""
    if shape is None:
        return "[?]"
    return "[" + ",".join("N" if d is None else str(d) for d in shape) + "]"


def _format_value(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return _format_tensor(v)
    if isinstance(v, Graph):
        return f"<graph {len(v.nodes)} nodes, below>"
    if isinstance(v, (tuple, list)) and v and all(e == v[0] for e in v) and not isinstance(v[0], (tuple, list)):
        return _format_value(v[0])
    if isinstance(v, (tuple, list)):
        return "(" + ",".join(_format_value(e) for e in v) + ")"
    if isinstance(v, float):
        return f"{v:g}"
    if callable(v):
        return getattr(v, "__qualname__", None) or type(v).__name__
    return str(v)


_DTYPE_SHORT = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64",
                torch.int64: "i64", torch.int32: "i32", torch.bool: "bool"}


def _format_tensor(t: torch.Tensor) -> str:
    dt = _DTYPE_SHORT.get(t.dtype, str(t.dtype).replace("torch.", ""))
    if t.numel() == 1:
        return f"{t.item():g}" if t.dim() == 0 else f"{dt}[{t.reshape(()).item():g}]"
    return f"{dt}[{','.join(map(str, t.shape))}]"


_ALWAYS_SHOWN = {"stride", "padding", "kernel_size"}


def _shown(op: str, key: str, value) -> bool:
    """Print an attribute unless it equals the op's default (keeps lines short)."""
    if key in _ALWAYS_SHOWN:
        return True
    from .ops import OPS
    opdef = OPS.get(op)
    if opdef is None or key not in opdef.attr_specs:
        return True
    default = opdef.attr_specs[key].default
    try:
        return not (value == default or (isinstance(value, tuple) and all(v == default for v in value)))
    except Exception:
        return True


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
        items = [f"{k}={_format_value(v)}" for k, v in self.params.items()]
        items += [f"{k}={_format_value(v)}" for k, v in self.attrs.items() if _shown(self.op, k, v)]
        lhs = f"%{self.id} = {self.op}({args})"
        body = " ".join([lhs] + items)
        tail = []
        if self.source is not None and str(self.source):
            tail.append(str(self.source))
        tail.append(format_shape(self.shape))
        return f"{body:<72} # {'  '.join(tail)}"

    def __repr__(self) -> str:
        return f"<Node %{self.id} {self.op}>"


class Graph:
    """An ordered list of Nodes in SSA form; ``inputs`` are the ``input`` nodes, one ``output``."""

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
    def replace(self, node: Node, op: str, inputs: Iterable[Node] | None = None, attrs: dict | None = None,
                params: dict | None = None, meta: dict | None = None, *,
                keep_meta: Iterable[str] | str = ()) -> Node:
        """Put a new node ``op(inputs) attrs params`` in ``node``'s place and return it.

        The new node takes over ``node``'s position and printed id (``node`` leaves the graph), and
        every reader of ``node`` reads it instead. ``inputs`` None keeps ``node``'s inputs; ``attrs``
        and ``params`` None mean none (the op's defaults). Meta starts afresh: ``node``'s ``source``,
        the keys named in ``keep_meta`` (``"all"``: every key but ``shape``), then ``meta``; the
        shape, unless ``meta`` gives one, is recomputed from the inputs (``ops.infer_shape``), so
        nothing recorded about the old node survives unless asked for.
        """
        k = self._index(node)
        inputs = list(node.inputs if inputs is None else inputs)
        if any(i is node for i in inputs):
            raise VerifyError(f"cannot replace {node.describe()} by a node that reads it")
        self._check_defined_before(inputs, k, f"the {op} replacing {node.describe()}")
        if keep_meta == "all":
            keep = [key for key in node.meta if key != "shape"]
        else:
            keep = ["source"] + [key for key in ([keep_meta] if isinstance(keep_meta, str) else keep_meta)]
        m = {key: node.meta[key] for key in keep if key in node.meta}
        new = self._make(node.id, op, inputs, attrs, params, m | dict(meta or {}))
        self.nodes[k] = new
        self.replace_all_uses(node, new)
        return new

    def replace_all_uses(self, old: Node, new: Node, *, readers: Iterable[Node] | None = None) -> None:
        """Make every reader of ``old`` (or only those in ``readers``) read ``new`` instead; ``new``
        itself keeps reading ``old``."""
        only = None if readers is None else {id(r) for r in readers}
        for n in self.nodes:
            if n is new or only is not None and id(n) not in only:
                continue
            if any(i is old for i in n.inputs):
                n.inputs = [new if i is old else i for i in n.inputs]

    def insert_before(self, node: Node, op: str, inputs: Iterable[Node], attrs: dict | None = None,
                      params: dict | None = None, meta: dict | None = None) -> Node:
        """A new node (fresh id) right before ``node``; nobody reads it yet (see
        ``replace_all_uses``). Its shape, unless ``meta`` gives one, is computed from its inputs."""
        k = self._index(node)
        inputs = list(inputs)
        self._check_defined_before(inputs, k, f"the {op} inserted before {node.describe()}")
        new = self._make(self.fresh_id(), op, inputs, attrs, params, dict(meta or {}))
        self.nodes.insert(k, new)
        return new

    def insert_after(self, node: Node, op: str, inputs: Iterable[Node] | None = None, attrs: dict | None = None,
                     params: dict | None = None, meta: dict | None = None) -> Node:
        """A new node (fresh id) right after ``node``, reading ``inputs`` (None: ``[node]``); nobody
        reads it yet. Its shape, unless ``meta`` gives one, is computed from its inputs."""
        k = self._index(node)
        inputs = [node] if inputs is None else list(inputs)
        self._check_defined_before(inputs, k + 1, f"the {op} inserted after {node.describe()}")
        new = self._make(self.fresh_id(), op, inputs, attrs, params, dict(meta or {}))
        self.nodes.insert(k + 1, new)
        return new

    def erase(self, node: Node, *, rewire_to: Node | None = None) -> None:
        """Remove ``node``. Refuses (VerifyError) while anyone reads it, unless ``rewire_to`` is
        given: its readers then read that node (which must come before them) instead."""
        k = self._index(node)
        if rewire_to is not None:
            users = self.users(node)
            if users and self._index(rewire_to) > min(self._index(u) for u in users):
                raise VerifyError(f"cannot rewire the readers of {node.describe()} to {rewire_to.describe()}: "
                                  "it comes after some of them")
            self.replace_all_uses(node, rewire_to)
        users = self.users(node)
        if users:
            raise VerifyError(f"cannot remove {node.describe()}: still read by "
                              + ", ".join(f"%{u.id}" for u in users))
        del self.nodes[k]

    def move(self, node: Node, *, before: Node | None = None, after: Node | None = None) -> None:
        """Move ``node`` right before or after another node, keeping SSA order (VerifyError if
        an input of ``node`` would come after it or a reader before it)."""
        if (before is None) == (after is None):
            raise VerifyError("move: give exactly one of before= and after=")
        anchor = before if before is not None else after
        if anchor is node:
            return
        old = self._index(node)
        rest = self.nodes[:old] + self.nodes[old + 1:]
        k = next((j for j, n in enumerate(rest) if n is anchor), None)
        if k is None:
            raise VerifyError(f"{anchor.describe()} is not in graph {self.name}")
        k += after is not None
        trial = rest[:k] + [node] + rest[k:]
        pos = {id(n): j for j, n in enumerate(trial)}
        late = [i for i in node.inputs if pos.get(id(i), len(trial)) >= k]
        early = [u for u in trial[:k] if any(i is node for i in u.inputs)]
        if late or early:
            what = (f"it reads {', '.join(f'%{i.id}' for i in late)}" if late else
                    f"{', '.join(f'%{u.id}' for u in early)} read(s) it")
            raise VerifyError(f"cannot move {node.describe()} {'before' if before is not None else 'after'} "
                              f"%{anchor.id}: {what} (SSA order)")
        self.nodes[:] = trial

    def _index(self, node: Node) -> int:
        for k, n in enumerate(self.nodes):
            if n is node:
                return k
        raise VerifyError(f"{node.describe()} is not in graph {self.name}")

    def _check_defined_before(self, inputs: list[Node], k: int, what: str) -> None:
        pos = {id(n): j for j, n in enumerate(self.nodes)}
        for i in inputs:
            j = pos.get(id(i))
            if j is None:
                raise VerifyError(f"{what} reads {i.describe()}, which is not in the graph")
            if j >= k:
                raise VerifyError(f"{what} reads {i.describe()}, which comes after it (SSA order)")

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
    def copy(self) -> "Graph":
        """A deep copy: new Nodes, cloned parameter tensors; meta copied (tensors cloned)."""
        mapping: dict[int, Node] = {}
        nodes = []
        for n in self.nodes:
            m = Node(n.id, n.op, [mapping[id(i)] for i in n.inputs], copy.deepcopy(n.attrs),
                     {k: v.detach().clone() for k, v in n.params.items()}, _copy_meta(n.meta))
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
