"""The rewrite API of the IR Graph (replace a node, replace all uses, insert before/after,
erase, move): the only way passes change a graph's structure. Mixed into ``ir.Graph``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from .errors import VerifyError

if TYPE_CHECKING:  # annotations only: ir.py imports this module
    from .ir import Node

__all__ = ["RewriteMixin"]


class RewriteMixin:
    """Structural edits on ``self.nodes`` that keep SSA order and rewire readers."""

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

