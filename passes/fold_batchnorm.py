"""fold-batchnorm: merge inference batch norm into the conv/linear layer before it.

Requires: BN reading a conv1d/conv2d/linear that nobody else reads. Guarantees: that BN is gone
and the layer computes ``BN(layer(x))`` (within float rounding, ~1e-6 relative):
``W' = W * g``, ``b' = (b - mean) * g + beta`` with ``g = gamma / sqrt(var + eps)`` per output
channel. A BN with no such layer before it (densenet's BN after a concat, a pre-activation
block) is a per-channel affine ``g * x + (beta - mean * g)`` and becomes the weighted op that
computes it: a depthwise 1x1 conv (``[N, C, L]``, ``[N, C, H, W]``, ``[N, C, D, H, W]``) or a diagonal linear
(``[N, C]``), which normalize rescales like any layer. No ``batchnorm`` is left.
"""
from __future__ import annotations

import torch

from snncompile.errors import UnsupportedOpError
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
            g, beta, mean = _affine(bn)
            layer = bn.inputs[0]
            if not has_trait(layer, "weighted") or single_user(graph, layer) is not bn or \
                    layer.op == "linear" and (layer.shape is None or len(layer.shape) != 2):
                # (a BN1d after a linear on [N, C, L] normalizes C, not the linear's outputs)
                _as_affine(graph, bn, g, beta - mean * g)
                continue
            w = layer.params["weight"]
            b = layer.params["bias"].double() if "bias" in layer.params else torch.zeros_like(mean)
            shape = (-1,) + (1,) * (w.dim() - 1)
            layer.params["weight"] = (w.double() * g.reshape(shape)).to(w.dtype)
            layer.params["bias"] = ((b - mean) * g + beta).to(w.dtype)
            layer.meta["folded"] = layer.meta.get("folded", []) + [f"batchnorm %{bn.id}"]
            graph.bypass(bn)
        return graph


def _affine(bn):
    """(g, beta, mean) of an inference BN: it computes ``(x - mean) * g + beta`` per channel."""
    p = bn.params
    var, mean = p["running_var"].double(), p["running_mean"].double()
    gamma = p["weight"].double() if "weight" in p else torch.ones_like(var)
    beta = p["bias"].double() if "bias" in p else torch.zeros_like(mean)
    return gamma / torch.sqrt(var + float(bn.attrs.get("eps", 1e-5))), beta, mean


def _as_affine(graph: Graph, bn, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Replace the lone BN ``bn`` by the weighted op computing ``scale * x + shift`` per channel."""
    rank = len(bn.shape) if bn.shape is not None else 0
    c = scale.numel()
    if rank == 2:
        op, attrs, weight = "linear", {}, torch.diag(scale)
    elif rank in (3, 4, 5):
        op = f"conv{rank - 2}d"
        attrs = {"stride": 1, "padding": 0, "dilation": 1, "groups": c}
        weight = scale.reshape((c, 1) + (1,) * (rank - 2))
    else:
        raise UnsupportedOpError(f"fold-batchnorm: {bn.describe()} normalizes a value of shape {bn.shape}; only "
                                 "[N, C], [N, C, L], [N, C, H, W] and [N, C, D, H, W] batch norms convert")
    new = graph.replace(bn, op, attrs=attrs, params={"weight": weight.float(), "bias": shift.float()})
    new.meta["folded"] = [f"batchnorm %{bn.id} alone: a per-channel affine ({'diagonal linear' if rank == 2 else 'depthwise 1x1'})"]
