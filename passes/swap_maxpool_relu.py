"""swap-maxpool-relu: a max pool that reads a ReLU moves before it: relu(maxpool(x)).

max∘ReLU = ReLU∘max, so the ANN is unchanged (exactly). After relu-to-if the neuron sees the
pooled *current* instead of pooling spikes: the max over a window is taken of the input current
at every step, which approximates the max of the window's firing rates (the per-step max of
currents is at least the current of the neuron that would fire most, so rates come out slightly
higher when the window's inputs fluctuate). Pooling spikes instead would OR the spike trains,
which overestimates much more. Requires: the ReLU is read only by the pool. Guarantees: no
``maxpool2d`` reads a ``relu`` it could be swapped with.
"""
from __future__ import annotations

from snncompile.ir import Graph
from snncompile.pipeline import PassContext, register_pass

from ._walk import single_user

__all__ = ["SwapMaxpoolRelu"]


@register_pass("swap-maxpool-relu")
class SwapMaxpoolRelu:
    """No options."""

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        for pool in list(graph.nodes):
            if pool.op != "maxpool2d":
                continue
            relu = pool.inputs[0]
            if relu.op != "relu" or single_user(graph, relu) is not pool:
                continue
            # rewire x -> relu -> pool -> users  into  x -> pool -> relu -> users
            x = relu.inputs[0]
            graph.replace_all_uses(pool, relu)
            pool.inputs = [x]
            relu.inputs = [pool]
            relu.meta["shape"] = pool.shape
            graph.nodes.remove(relu)
            graph.nodes.insert(graph.nodes.index(pool) + 1, relu)
        return graph
