"""relu-to-if: every ReLU becomes a soft-reset integrate-and-fire neuron.

Requires: normalized activations (run ``normalize`` first: each ReLU's input is then in units of
its activation scale, so threshold 1 is right). Guarantees: no ``relu`` is left; each becomes
``if_neuron`` with threshold 1.0 (or ``threshold``), reset by subtraction and v_init as given
(0 or 0.5 of the threshold), exactly the equations in DESIGN.md. Refuses activations it cannot
turn into IF neurons (GELU, sigmoid, clamp with a negative floor, ...) naming the node.
"""
from __future__ import annotations

import torch

from snncompile.errors import ConfigError, UnsupportedOpError
from snncompile.ir import Graph
from snncompile.pipeline import PassContext, register_pass

__all__ = ["ReluToIf"]

_NON_RELU = ("gelu", "sigmoid", "tanh", "silu", "elu", "leaky_relu", "softplus", "hardswish", "mish", "selu",
             "GELU", "Sigmoid", "Tanh", "SiLU", "ELU", "LeakyReLU", "Softplus", "Hardswish", "Mish", "SELU")


@register_pass("relu-to-if")
class ReluToIf:
    """Options: ``v_init`` (0 or 0.5, fraction of threshold), ``threshold`` (default 1.0)."""

    v_init: float = 0.5
    threshold: float = 1.0

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        if not 0.0 <= self.v_init < 1.0:
            raise ConfigError(f"relu-to-if: v_init={self.v_init} must be in [0, 1) (a fraction of the threshold)")
        for n in graph.nodes:
            if n.op == "opaque" and any(k in str(n.attrs.get("name", "")) for k in _NON_RELU):
                raise UnsupportedOpError(
                    f"relu-to-if: {n.describe()} is the activation {n.attrs['name']}, which an IF neuron cannot "
                    "represent (IF neurons rate-code ReLU) — replace it with nn.ReLU and retrain or fine-tune, "
                    "or use snncompile.to_trainable for direct training")
            if n.op == "clamp" and (n.attrs.get("min") or 0.0) != 0.0:
                raise UnsupportedOpError(f"relu-to-if: {n.describe()} clamps below at {n.attrs.get('min')}; "
                                         "only ReLU-like activations (min 0) become IF neurons — use ReLU")
            if n.op != "relu":
                continue
            n.op = "if_neuron"
            n.params = {"threshold": torch.tensor(float(self.threshold))}
            n.attrs = {"v_init": float(self.v_init), "reset": "subtract"}
        return graph
