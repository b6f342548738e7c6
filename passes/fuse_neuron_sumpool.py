"""fuse-neuron-sumpool: a neuron whose spikes only feed a k x k, stride-k sum pool does both.

The spike tensor of an early layer is the largest tensor of the SNN ([T*N, C, H, W]); writing it
and reading it back for the pool costs as much as the convolutions on a CPU. Fused, the neuron
writes the window sums directly (``neuron_sumpool2d ... kernel_size=k``), which are exact counts.
A pass of the lowering stage: the SNN computes the same; exporters read the stage before it.
Requires: relu-to-if (or insert-surrogate) has run. Guarantees: the same values reach the pool's
readers; the neuron's membrane evolves exactly as before (neurons in rows a floor pool drops are
still simulated; firing rates of a fused layer count the neurons the pool reads). With
``avgpool=True`` (the training pipeline, where average pools stay) a k x k, stride-k average pool
is fused too: the neuron sums and a ``mul_const`` of 1/k^2 takes the pool's place; in training,
the CPU kernels then never write the spikes and fold the pool's backward into BPTT.
"""
from __future__ import annotations

from snncompile.ir import Graph
from snncompile.neurons import get_family
from snncompile.ops import FUSED_NEURON_SUMPOOL, NEURON_OP
from snncompile.pipeline import PassContext, register_pass

from ._walk import single_user

__all__ = ["FuseNeuronSumpool"]


def _square(v):
    v = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    return v[0] if v[0] == v[1] else None


@register_pass("fuse-neuron-sumpool")
class FuseNeuronSumpool:
    """Option: ``avgpool`` (also fuse k x k, stride-k average pools, as sum pool + 1/k^2)."""

    avgpool: bool = False
    lowering = True  # runtime-only: the graph before it is what exporters and analyses read

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        for pool in list(graph.nodes):
            if pool.op != "sumpool2d" and not (self.avgpool and pool.op == "avgpool2d" and _plain_avg(pool)):
                continue
            neuron = pool.inputs[0]
            if neuron.op != NEURON_OP or single_user(graph, neuron) is not pool:
                continue
            if get_family(neuron.attrs["family"]).spikes == "signed":
                # window sums of +1/-1 spikes would hide how many spikes there were (firing rates,
                # synaptic operations): signed neurons stay unfused. Multi-spike counts sum
                # exactly (the fused kernels are checked with them), so those fuse
                continue
            k = _square(pool.attrs["kernel_size"])
            stride = _square(pool.attrs.get("stride") or pool.attrs["kernel_size"])
            if k is None or stride != k or any(_pad(pool.attrs.get("padding", 0))) or len(neuron.shape) != 4:
                continue
            # the same neuron, now writing window sums: an op of its own with the pool's shape
            graph.replace(neuron, FUSED_NEURON_SUMPOOL, attrs=neuron.attrs | {"kernel_size": k}, params=neuron.params,
                          meta={"shape": pool.shape, "fused": f"{pool.op} %{pool.id}"}, keep_meta="all")
            if pool.op == "avgpool2d":
                graph.replace(pool, "mul_const", attrs={"value": 1.0 / (k * k)})
            else:
                graph.bypass(pool)
        return graph


def _plain_avg(pool) -> bool:
    """An average pool that is a window sum times 1/k^2: no ceil mode, no divisor override
    (padding is refused with the sum pools' rule)."""
    return not pool.attrs.get("ceil_mode") and pool.attrs.get("divisor_override") is None


def _pad(p):
    return tuple(p) if isinstance(p, (tuple, list)) else (p,)
