"""spike-maxpool: a max pool that reads a neuron's spikes becomes a count-gated spike pool.

Requires: relu-to-if has run. Guarantees: no ``maxpool2d`` reads an IF/LIF neuron; each such
pool is a ``spike_maxpool2d`` that passes on, every step, the spikes of the window's neuron with
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
            if has_trait(n.inputs[0], "neuron"):
                graph.replace(n, "spike_maxpool2d", attrs=dict(n.attrs))
        return graph
