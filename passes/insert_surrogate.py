"""insert-surrogate: every ReLU becomes a spiking neuron with a surrogate gradient (direct training).

Requires: a traced ANN definition (trained or not); batch norm, pools and linear ops stay and run
on T folded into the batch. Guarantees: no ``relu`` (or ``clamp`` with floor 0, e.g. ReLU6: a
neuron's rate is bounded anyway, and the ceiling is not kept — a warning says so) is left (a clamp with no floor,
``clamp(x, max=c)``, is no activation and stays a clamp); each
becomes a ``neuron`` of the family ``neuron`` names (DESIGN.md equations: LIF with ``tau`` or,
when ``beta`` is given, snnTorch's ``beta``) whose ``surrogate`` attribute makes its spikes
differentiable; neurons already in the graph (from snncompile.layers, also inside recurrent
bodies) that have no surrogate get this one. Refuses activations a spiking neuron cannot stand
in for (GELU, sigmoid, ...), naming the node.
"""
from __future__ import annotations

import math

import torch

from snncompile.errors import ConfigError, warn_user
from snncompile.ir import Graph
from snncompile.neurons import FAMILIES, NeuronSpec, get_family
from snncompile.ops import NEURON_OP, has_trait, neuron_attrs
from snncompile.pipeline import PassContext, register_pass
from snncompile.surrogate import get_surrogate

from ._walk import ceiling_of, is_relu_like, refuse_non_relu_activations

__all__ = ["InsertSurrogate"]


@register_pass("insert-surrogate")
class InsertSurrogate:
    """Options: ``neuron`` ("if" | "lif"), ``surrogate`` and its ``alpha`` (None: its default),
    ``tau`` / ``beta`` (LIF leak; beta selects the snnTorch form), ``threshold``, ``v_init``,
    ``reset`` ("subtract" | "value"), ``detach_reset``, ``learn_threshold``, ``learn_leak``."""

    neuron: str = "lif"
    surrogate: str = "atan"
    alpha: float | None = None
    tau: float | None = None  # None: the LIF family's default
    beta: float | None = None
    threshold: float = 1.0
    v_init: float = 0.0
    reset: str = "subtract"
    detach_reset: bool = False
    learn_threshold: bool = False
    learn_leak: bool = False

    def _check(self) -> None:
        if self.neuron not in FAMILIES:
            raise ConfigError(f"insert-surrogate: neuron must be a neuron family ({', '.join(FAMILIES)}), "
                              f"got {self.neuron!r}")
        get_surrogate(self.surrogate)
        if self.neuron == "lif" and self.tau is not None and not self.tau > 1.0:
            raise ConfigError(f"insert-surrogate: tau must be > 1 step, got {self.tau}")
        if self.beta is not None and not 0.0 < self.beta < 1.0:
            raise ConfigError(f"insert-surrogate: beta must be in (0, 1), got {self.beta}")
        if self.learn_leak and get_family(self.neuron).leak is None:
            raise ConfigError(f"insert-surrogate: learn_leak needs a leaky neuron such as neuron='lif' "
                              f"({self.neuron!r} neurons do not leak)")
        if not (self.threshold > 0 and math.isfinite(self.threshold)):
            raise ConfigError(f"insert-surrogate: threshold must be a positive number, got {self.threshold}")

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        self._check()
        refuse_non_relu_activations(graph, "insert-surrogate")
        self._rewrite(graph)
        return graph

    def _rewrite(self, graph: Graph) -> None:
        capped = [n for n in graph.nodes if is_relu_like(n) and ceiling_of(n) is not None]
        if capped:
            warn_user(f"insert-surrogate: {capped[0].describe()} is a ReLU with a ceiling of {ceiling_of(capped[0])}"
                          + (f" (and {len(capped) - 1} more capped ReLUs)" if len(capped) > 1 else "")
                          + "; the spiking neuron replacing it drops the ceiling (its output is bounded by one spike "
                          "per step times its threshold instead)")
        for n in list(graph.nodes):
            if is_relu_like(n):
                graph.replace(n, NEURON_OP, attrs=self._attrs(), params={"threshold": torch.tensor(float(self.threshold))})
            elif has_trait(n, "neuron") and n.attrs.get("surrogate") is None:
                n.attrs["surrogate"] = self.surrogate
                n.attrs["alpha"] = self.alpha
            elif n.op == "recurrent":
                self._rewrite(n.attrs["body"])

    def _spec(self) -> NeuronSpec:
        params = {"v_init": float(self.v_init), "reset": self.reset}
        if self.neuron == "lif":  # beta picks snnTorch's form; unset values keep the family's defaults
            params["form"] = "snntorch" if self.beta is not None else "spikingjelly"
            params |= {k: float(v) for k, v in (("tau", self.tau), ("beta", self.beta)) if v is not None}
        return NeuronSpec(self.neuron, surrogate=self.surrogate, alpha=self.alpha, detach_reset=bool(self.detach_reset),
                          **params)

    def _attrs(self) -> dict:
        return neuron_attrs(self._spec(), learn_threshold=bool(self.learn_threshold),
                            learn_leak=bool(self.learn_leak))
