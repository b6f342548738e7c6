"""encode-input: the static input becomes T time steps (direct current or Poisson spikes).

Requires: a graph whose inputs are static images/features. Guarantees: every graph input is read
only through an ``encode`` node (one per input), so everything after it runs on T steps folded
into the batch. ``hoist-static`` later removes direct encodings where the ops after them do not
need time.
"""
from __future__ import annotations

from snncompile.errors import ConfigError
from snncompile.ir import Graph
from snncompile.pipeline import PassContext, register_pass

__all__ = ["EncodeInput"]

_METHODS = ("direct", "poisson", "sequence")


@register_pass("encode-input")
class EncodeInput:
    """Options: ``method`` = "direct" (analog current every step), "poisson" (rate-coded spikes)
    or "sequence" (the input already has one value per step, ``[T, N, ...]``), for every input;
    or one method per input in input order, separated by ";" (``method=direct;poisson``)."""

    method: str = "direct"

    def methods(self) -> list[str]:
        """The methods named by ``method`` (one, or one per input); ConfigError for an unknown one."""
        methods = [m.strip() for m in str(self.method).split(";")]
        for m in methods:
            if m not in _METHODS:
                raise ConfigError(f"encode-input: method must be 'direct', 'poisson' or 'sequence' (or one per input, "
                                  f"separated by ';'), got {self.method!r}")
        return methods

    def declare(self, ctx: PassContext) -> None:
        """Called by the Pipeline before any pass runs: passes before this one (normalize's input
        check, swap-maxpool-relu's notion of a static current) need to know the input encoding
        ("mixed" when the inputs are encoded differently: then no pass assumes one)."""
        methods = set(str(self.method).split(";"))
        ctx.options["encoding"] = methods.pop() if len(methods) == 1 else "mixed"

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        methods = self.methods()
        inputs = sorted(graph.inputs, key=lambda i: i.attrs.get("index", 0))
        if len(methods) > 1 and len(methods) != len(inputs):
            raise ConfigError(f"encode-input: method {self.method!r} names {len(methods)} encodings but the graph has "
                              f"{len(inputs)} inputs; give one method for all inputs or one per input")
        for k, inp in enumerate(inputs):
            if any(u.op == "encode" for u in graph.users(inp)):
                continue
            method = methods[k] if len(methods) > 1 else methods[0]
            if method == "sequence":
                inp.attrs["kind"] = "sequence"
            enc = graph.insert_after(inp, "encode", [inp], {"method": method}, meta={"shape": inp.shape})
            graph.replace_all_uses(inp, enc)
        return graph
