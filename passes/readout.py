"""readout: the last layer does not spike; its values at every step go to the runtime.

Requires: the output is computed from a sequence (after encode-input). Guarantees: each graph
output reads a ``readout`` node; the runtime averages the readout over T (or gives its running
mean at every t), so the last layer integrates its input current instead of firing.
"""
from __future__ import annotations

from snncompile.errors import ConfigError
from snncompile.ir import Graph
from snncompile.pipeline import PassContext, register_pass

__all__ = ["Readout"]


@register_pass("readout")
class Readout:
    """Option: ``mode`` = "mean" (average over T) or "last" (the last step only: for tasks where
    the network must carry the answer in its state, e.g. sequential MNIST)."""

    mode: str = "mean"

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        if self.mode not in ("mean", "last"):
            raise ConfigError(f"readout: mode must be 'mean' or 'last', got {self.mode!r}")
        out = graph.output
        new_inputs = []
        for x in out.inputs:
            if x.op == "readout":
                new_inputs.append(x)
                continue
            r = graph.insert_before(out, "readout", [x], {"mode": self.mode},
                                    meta={"shape": x.shape, "source": x.source})
            new_inputs.append(r)
        graph.replace(out, "output", new_inputs, keep_meta="all")
        return graph
