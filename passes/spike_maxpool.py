"""spike-maxpool: a max pool that reads a neuron's spikes becomes a count-gated spike pool.

Requires: relu-to-if has run. Guarantees: no ``maxpool2d`` reads a value that depends on a neuron
(its spikes, a concat or sum pool of them, a current computed from them): each such pool is a
``spike_maxpool2d`` that passes on, every step, the spikes of the window's neuron with
the most spikes so far (Rueckauer et al. 2017), so its rate converges to the window's max rate.
The ANN meaning (max of rates) is unchanged.
"""
from __future__ import annotations

from snncompile.ir import Graph
from snncompile.ops import has_trait
from snncompile.pipeline import PassContext, register_pass

__all__ = ["SpikeMaxpool"]


@register_pass("spike-maxpool")
class SpikeMaxpool:
    """No options."""

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        for n in graph.find("maxpool2d"):
            if _spikes(n.inputs[0]):
                graph.replace(n, "spike_maxpool2d", attrs=dict(n.attrs))
        return graph


def _spikes(node, seen=None) -> bool:
    """True when ``node``'s values change from step to step because a neuron is upstream (spikes,
    sums of spikes, currents computed from spikes). A max over such per-step values is the rate at
    which any input of the window is high, not the max of their rates; the count-gated pool, which
    passes the input with the largest running sum, converges to the max of the means."""
    seen = {} if seen is None else seen
    if node.id not in seen:
        seen[node.id] = has_trait(node, "neuron") or any(_spikes(i, seen) for i in node.inputs)
    return seen[node.id]
