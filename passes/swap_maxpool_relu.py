"""swap-maxpool-relu: a max pool that reads a ReLU moves before it: relu(maxpool(x)).

max∘ReLU = ReLU∘max, so the ANN is unchanged (exactly). After relu-to-if the neuron sees the
pooled *current*. For a static current (the layers before the first neuron, which run once)
that is exact: the neuron integrates the window's largest input. For a current driven by spikes
it is an approximation: the per-step max of fluctuating currents is larger on average than the
max of their averages, so the neuron fires too often and the error does not shrink with T
(measured ~10% relative on a small VGG-like net at T=256). So by default (``where="static"``)
only pools whose input comes from no ReLU are swapped; the others stay after their neuron and
``spike-maxpool`` makes them count-gated spike pools, which converge. ``where="all"`` swaps every
pool. Requires: the ReLU is read only by the pool. Guarantees: the ANN function is unchanged.
"""
from __future__ import annotations

from snncompile.errors import ConfigError
from snncompile.ir import Graph, Node
from snncompile.ops import has_trait
from snncompile.pipeline import PassContext, register_pass

from ._walk import single_user

__all__ = ["SwapMaxpoolRelu"]


@register_pass("swap-maxpool-relu")
class SwapMaxpoolRelu:
    """Option ``where``: "static" (pools on currents that do not depend on spikes) or "all"."""

    where: str = "static"

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        if self.where not in ("static", "all"):
            raise ConfigError(f"swap-maxpool-relu: where must be 'static' or 'all', got {self.where!r}")
        for pool in list(graph.nodes):
            if pool.op != "maxpool2d":
                continue
            relu = pool.inputs[0]
            if relu.op != "relu" or single_user(graph, relu) is not pool:
                continue
            x = relu.inputs[0]
            if self.where == "static" and _after_relu(x):
                continue
            # rewire x -> relu -> pool -> users  into  x -> pool -> relu -> users (ids kept)
            graph.replace_all_uses(pool, relu)
            new_pool = graph.replace(pool, pool.op, [x], attrs=dict(pool.attrs))
            graph.move(relu, after=new_pool)
            graph.replace(relu, relu.op, [new_pool], attrs=dict(relu.attrs))
        return graph


def _after_relu(node: Node) -> bool:
    """True when some ReLU (a future neuron) lies upstream of ``node``."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if n.id in seen:
            continue
        seen.add(n.id)
        if n.op == "relu" or has_trait(n, "neuron"):
            return True
        stack.extend(n.inputs)
    return False
