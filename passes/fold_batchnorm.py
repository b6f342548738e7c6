"""fold-batchnorm: merge inference batch norm into the conv/linear layer before it.

Requires: BN reading a conv1d/conv2d/linear that nobody else reads. Guarantees: that BN is gone
and the layer computes ``BN(layer(x))`` (within float rounding, ~1e-6 relative):
``W' = W * g``, ``b' = (b - mean) * g + beta`` with ``g = gamma / sqrt(var + eps)`` per output
channel. A BN with no such layer before it is left in place (the conversion passes then name it).
"""
from __future__ import annotations

import torch

from snncompile.ir import Graph
from snncompile.ops import has_trait
from snncompile.pipeline import PassContext, register_pass

from ._walk import single_user

__all__ = ["FoldBatchnorm"]


@register_pass("fold-batchnorm")
class FoldBatchnorm:
    """No options."""

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        for bn in list(graph.nodes):
            if bn.op != "batchnorm":
                continue
            layer = bn.inputs[0]
            if not has_trait(layer, "weighted") or single_user(graph, layer) is not bn:
                continue
            if layer.op == "linear" and (layer.shape is None or len(layer.shape) != 2):
                continue  # a BN1d after a linear on [N, C, L] normalizes C, not the linear's outputs
            p = bn.params
            var, mean = p["running_var"].double(), p["running_mean"].double()
            gamma = p["weight"].double() if "weight" in p else torch.ones_like(var)
            beta = p["bias"].double() if "bias" in p else torch.zeros_like(var)
            g = gamma / torch.sqrt(var + float(bn.attrs.get("eps", 1e-5)))
            w = layer.params["weight"]
            b = layer.params["bias"].double() if "bias" in layer.params else torch.zeros_like(var)
            shape = (-1,) + (1,) * (w.dim() - 1)
            layer.params["weight"] = (w.double() * g.reshape(shape)).to(w.dtype)
            layer.params["bias"] = ((b - mean) * g + beta).to(w.dtype)
            layer.meta["folded"] = layer.meta.get("folded", []) + [f"batchnorm %{bn.id}"]
            graph.bypass(bn)
        return graph
