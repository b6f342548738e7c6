"""swap-maxpool-relu: a max pool that reads a ReLU moves before it: relu(maxpool(x)).

max∘ReLU = ReLU∘max, so the ANN is unchanged (exactly). After relu-to-if the neuron sees the
pooled *current*. For a static current (the layers before the first neuron, which run once)
that is exact: the neuron integrates the window's largest input. For a current driven by spikes
it is an approximation: the per-step max of fluctuating currents is larger on average than the
max of their averages, so the neuron fires too often and the error does not shrink with T
(measured ~10% relative on a small VGG-like net at T=256). So by default (``where="static"``)
only pools on static currents are swapped: no ReLU (neuron) upstream, and an input encoded
"direct" (the same value every step). Under Poisson or sequence encoding the input itself
changes every step, so no current is static and nothing is swapped; the pipeline tells this
pass the encoding before it runs (``encode-input`` declares it in ``ctx.options["encoding"]``),
and an ``encode`` node already in the graph says it too. The pools left after their neuron are
made count-gated spike pools by ``spike-maxpool``, which converge. ``where="all"`` swaps every
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
            if self.where == "static" and not _static(x, ctx.options.get("encoding", "direct")):
                continue
            # rewire x -> relu -> pool -> users  into  x -> pool -> relu -> users (ids kept)
            graph.replace_all_uses(pool, relu)
            new_pool = graph.replace(pool, pool.op, [x], attrs=dict(pool.attrs))
            graph.move(relu, after=new_pool)
            graph.replace(relu, relu.op, [new_pool], attrs=dict(relu.attrs))
        return graph


def _static(node: Node, encoding: str) -> bool:
    """True when ``node``'s value is the same at every time step: no ReLU (a future neuron) or
    neuron upstream, and every graph input upstream encoded "direct" (``encoding`` is the
    pipeline's, for inputs not yet encoded)."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if n.id in seen:
            continue
        seen.add(n.id)
        if n.op == "relu" or has_trait(n, "neuron"):
            return False
        if n.op == "encode":
            if n.attrs.get("method", "direct") != "direct":
                return False
            continue  # what it encodes is told by its method
        if n.op == "input" and encoding != "direct":
            return False
        stack.extend(n.inputs)
    return True
