"""encode-input: the static input becomes T time steps (direct current or Poisson spikes).

Requires: a graph whose inputs are static images/features. Guarantees: every graph input is read
only through an ``encode`` node, so everything after it runs on T steps folded into the batch.
``hoist-static`` later removes direct encodings where the ops after them do not need time.
"""
from __future__ import annotations

from snncompile.errors import ConfigError
from snncompile.ir import Graph
from snncompile.pipeline import PassContext, register_pass

__all__ = ["EncodeInput"]


@register_pass("encode-input")
class EncodeInput:
    """Options: ``method`` = "direct" (analog current every step), "poisson" (rate-coded spikes)
    or "sequence" (the input already has one value per step, ``[T, N, ...]``)."""

    method: str = "direct"

    def declare(self, ctx: PassContext) -> None:
        """Called by the Pipeline before any pass runs: passes before this one (normalize's input
        check, swap-maxpool-relu's notion of a static current) need to know the input encoding."""
        ctx.options["encoding"] = self.method

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        if self.method not in ("direct", "poisson", "sequence"):
            raise ConfigError(f"encode-input: method must be 'direct', 'poisson' or 'sequence', got {self.method!r}")
        for inp in graph.inputs:
            if any(u.op == "encode" for u in graph.users(inp)):
                continue
            if self.method == "sequence":
                inp.attrs["kind"] = "sequence"
            enc = graph.insert_after(inp, "encode", [inp], {"method": self.method}, meta={"shape": inp.shape})
            graph.replace_all_uses(inp, enc)
        return graph
