"""relu-to-if: every ReLU becomes a soft-reset integrate-and-fire neuron.

Requires: normalized activations (run ``normalize`` first: each ReLU's input is then in units of
its activation scale, so threshold 1 is right). Guarantees: no ``relu`` (nor capped ReLU, ``clamp`` with floor 0) is left; each becomes
``neuron`` of family ``if`` (or the family given) with threshold 1.0 (or ``threshold``), reset by subtraction and v_init as given
(0 or 0.5 of the threshold), exactly the equations in DESIGN.md. Refuses activations it cannot
turn into IF neurons (GELU, sigmoid, clamp with a negative floor, ...) naming the node.

The family's own parameters come as one option, ``params="name=value,name=value"``, read
against the family's parameter records: ``relu-to-if{neuron=multi_if params=max_spikes=2}``.
A multi-spike family fires up to ``max_spikes`` a step; at a capped ReLU it gets at most
``floor(ceiling / threshold)`` of them (at least 1), so it never outputs more than the ANN can.
"""
from __future__ import annotations

import math

import torch

from snncompile.errors import ConfigError
from snncompile.ir import Graph
from snncompile.neurons import NeuronSpec, get_family
from snncompile.neurons.params import parse_params
from snncompile.ops import NEURON_OP, neuron_attrs
from snncompile.pipeline import PassContext, register_pass

from ._walk import ceiling_of, is_relu_like, refuse_non_relu_activations

__all__ = ["ReluToIf"]

_FIXED = {"v_init": "the v_init option", "reset": "relu-to-if, which resets by subtraction"}


@register_pass("relu-to-if")
class ReluToIf:
    """Options: ``v_init`` (0 or 0.5, fraction of threshold), ``threshold`` (default 1.0),
    ``neuron`` (the family: "if", or e.g. "signed_if", "multi_if"; it must reset by
    subtraction), ``params`` (the family's other parameters: "max_spikes=2")."""

    v_init: float = 0.5
    threshold: float = 1.0
    neuron: str = "if"
    params: str = ""

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        if not 0.0 <= self.v_init < 1.0:
            raise ConfigError(f"relu-to-if: v_init={self.v_init} must be in [0, 1) (a fraction of the threshold)")
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ConfigError(f"relu-to-if: threshold={self.threshold} must be a positive number (a neuron fires "
                              "when its membrane reaches it; after normalize, 1.0 is right)")
        fam = get_family(self.neuron)
        extra = parse_params(fam.params, self.params, f"relu-to-if: params={self.params!r} of the {fam.name!r} family",
                             _FIXED)
        spec = NeuronSpec(self.neuron, v_init=float(self.v_init), reset="subtract", **extra)
        refuse_non_relu_activations(graph, "relu-to-if")
        # a capped ReLU (ReLU6; after normalize its ceiling c/λ >= 1) too: the neuron saturates at
        # one spike per step, i.e. at λ <= c, so it never outputs more than the ANN could
        for n in [n for n in graph.nodes if is_relu_like(n)]:
            # a spike still means the ReLU's activation scale (normalize recorded it)
            graph.replace(n, NEURON_OP, attrs=neuron_attrs(self._capped(spec, ceiling_of(n))),
                          params={"threshold": torch.tensor(float(self.threshold))}, keep_meta=("act_scale",))
        return graph

    def _capped(self, spec: NeuronSpec, ceiling) -> NeuronSpec:
        """A multi-spike neuron at a capped ReLU: at most floor(ceiling / threshold) spikes a step."""
        if ceiling is None or spec.family.spikes != "multi":
            return spec
        room = float(torch.as_tensor(ceiling).min()) / self.threshold
        if not math.isfinite(room):
            return spec
        k = max(1, min(spec.max_spikes, math.floor(room)))
        return spec if k == spec.max_spikes else spec.replace(max_spikes=k)
