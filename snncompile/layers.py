"""Stateful layers to put into your own models: IF/LIF neurons, a synapse filter, and element-wise
and linear recurrent containers.

Each layer works on its own as a single-step module (``layer(x_t)`` advances one step and keeps
its state; ``reset_states(model)`` starts a new sequence), and each traces as one IR node, so a
model built from them goes through ``snncompile.to_trainable`` and runs all T steps in the
runtime. Equations are those of ``snncompile.neurons`` and ``snncompile.stateful``::

    ElementwiseRecurrent(neuron):   y[t] = neuron(x[t] + y[t-1])
    LinearRecurrent(n, neuron):     y[t] = neuron(x[t] + W y[t-1] + b)      W: [n, n] learned
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConfigError
from .frontend.fx import register_leaf_module
from .ir import Graph
from .neuron_module import SpikingNeuron
from .neurons import NeuronSpec, ParamView
from .ops import NEURON_OP, neuron_attrs
from .stateful import SynapseFilterModule

__all__ = ["IF", "LIF", "SynapseFilter", "ElementwiseRecurrent", "LinearRecurrent", "reset_states"]


def reset_states(model: nn.Module) -> None:
    """Clear the state of every stateful layer in ``model`` (call between sequences)."""
    for m in model.modules():
        if hasattr(m, "reset_state"):
            m.reset_state()


class _Layer(nn.Module):
    def reset_state(self) -> None:
        for m in self.children():
            if hasattr(m, "reset_state"):
                m.reset_state()


class _Neuron(_Layer):
    """Shared by IF and LIF: holds the runtime neuron and runs it one step per call."""

    def __init__(self, spec: NeuronSpec, threshold: float, learn_threshold: bool, learn_leak: bool = False):
        super().__init__()
        if not threshold > 0:
            raise ConfigError(f"neuron threshold must be positive, got {threshold}")
        self.neuron = SpikingNeuron(spec, torch.tensor(float(threshold)), "torch",
                                    learn_threshold=learn_threshold, learn_leak=learn_leak)

    @property
    def spec(self) -> NeuronSpec:
        return self.neuron.spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step: ``x_t [N, ...]`` -> spikes ``[N, ...]``; the membrane carries to the next call."""
        return self.neuron(x, 1)

    def ir_fields(self) -> tuple[str, dict, dict]:
        """``(op, attrs, params)`` of the IR node this neuron becomes (current learned values)."""
        s = self.spec
        attrs = neuron_attrs(s, learn_threshold=isinstance(self.neuron.threshold, nn.Parameter),
                             learn_leak=self.neuron.leak_logit is not None)
        if self.neuron.leak is not None:  # the learned leak's current value in the family's own parameter
            name, reciprocal = s.family.leak(ParamView(s.params()))
            k = float(self.neuron.leak.detach())
            attrs[name] = 1.0 / k if reciprocal else k
        params = {"threshold": self.neuron.threshold.detach().clone()}
        return NEURON_OP, attrs, params


class IF(_Neuron):
    """Integrate-and-fire neuron layer (``v <- v + x``), soft reset by default.

    ``surrogate``/``alpha``: the spike's gradient (see snncompile.surrogate); ``detach_reset``:
    no gradient through the reset; ``learn_threshold``: the threshold is a parameter.
    """

    def __init__(self, threshold: float = 1.0, *, v_init: float = 0.0, reset: str = "subtract",
                 v_reset: float = 0.0, surrogate: str = "atan", alpha: float | None = None,
                 detach_reset: bool = False, learn_threshold: bool = False):
        super().__init__(NeuronSpec(kind="if", v_init=v_init, reset=reset, v_reset=v_reset, surrogate=surrogate,
                                    alpha=alpha, detach_reset=detach_reset), threshold, learn_threshold)


class LIF(_Neuron):
    """Leaky integrate-and-fire neuron layer, in either of DESIGN.md's forms.

    Give ``tau`` for SpikingJelly's form ``v <- v + (x - (v - v_rest)) / tau`` or ``beta`` for
    snnTorch's ``v <- beta * v + x``. ``learn_leak`` learns 1/tau (or beta), kept in (0, 1).
    Other options as for ``IF``.
    """

    def __init__(self, tau: float | None = None, beta: float | None = None, threshold: float = 1.0, *,
                 v_init: float = 0.0, v_rest: float = 0.0, reset: str = "subtract", v_reset: float = 0.0,
                 surrogate: str = "atan", alpha: float | None = None, detach_reset: bool = False,
                 learn_threshold: bool = False, learn_leak: bool = False):
        if tau is not None and beta is not None:
            raise ConfigError("LIF takes tau (SpikingJelly form) or beta (snnTorch form), not both")
        form = "snntorch" if beta is not None else "spikingjelly"
        if tau is not None and not tau > 1.0:
            raise ConfigError(f"LIF tau must be > 1 step, got {tau}")
        if beta is not None and not 0.0 < beta < 1.0:
            raise ConfigError(f"LIF beta must be in (0, 1), got {beta}")
        leak = {k: float(v) for k, v in (("tau", tau), ("beta", beta)) if v is not None}  # else the defaults
        spec = NeuronSpec(kind="lif", form=form, v_rest=v_rest, v_init=v_init, reset=reset, v_reset=v_reset,
                          surrogate=surrogate, alpha=alpha, detach_reset=detach_reset, **leak)
        super().__init__(spec, threshold, learn_threshold, learn_leak)


class SynapseFilter(_Layer):
    """First-order low-pass on the synaptic current: ``i <- i - i / tau + x`` (one step a call).

    ``learnable`` makes 1/tau a parameter (kept in (0, 1)).
    """

    def __init__(self, tau: float = 2.0, learnable: bool = False):
        super().__init__()
        self.filter = SynapseFilterModule(tau, learnable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step: ``x_t [N, ...]`` -> the filtered current ``[N, ...]``."""
        return self.filter(x, 1)


class _Recurrent(_Layer):
    kind = ""

    def __init__(self, neuron: _Neuron):
        super().__init__()
        if not isinstance(neuron, _Neuron):
            raise ConfigError(f"a recurrent container wraps an snncompile.layers IF or LIF neuron, "
                              f"got {type(neuron).__name__}")
        self.neuron = neuron
        self.y: torch.Tensor | None = None

    def reset_state(self) -> None:
        self.y = None
        self.neuron.reset_state()

    def feedback(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step: ``y_t = neuron(x_t + feedback(y_{t-1}))``; ``y_0 = 0``."""
        y = self.y if self.y is not None and self.y.shape == x.shape else torch.zeros_like(x)
        self.y = self.neuron(x + self.feedback(y))
        return self.y

    def body_graph(self, shape: tuple) -> Graph:
        """The IR body: inputs ``x_t`` and ``y_{t-1}``, the feedback path, the add, the neuron."""
        g = Graph(name=f"{type(self).__name__}.body")
        x = g.add("input", [], {"index": 0, "kind": "sequence"}, meta={"shape": shape})
        y = g.add("input", [], {"index": 1, "kind": "state"}, meta={"shape": shape})
        fb = self._feedback_node(g, y, shape)
        a = g.add("add", [x, fb], meta={"shape": shape})
        op, attrs, params = self.neuron.ir_fields()
        n = g.add(op, [a], attrs, params, meta={"shape": shape})
        g.add("output", [n], meta={"shape": shape})
        return g

    def _feedback_node(self, g, y, shape):
        return y


class ElementwiseRecurrent(_Recurrent):
    """``y[t] = neuron(x[t] + y[t-1])``: each neuron's own spike is added to its next input."""

    kind = "elementwise"

    def feedback(self, y: torch.Tensor) -> torch.Tensor:
        return y


class LinearRecurrent(_Recurrent):
    """``y[t] = neuron(x[t] + W y[t-1] + b)`` with a learned ``W [features, features]``.

    Put the input projection in front (e.g. ``nn.Linear(28, features)``): it then runs on all
    steps at once and only the feedback runs step by step.
    """

    kind = "linear"

    def __init__(self, features: int, neuron: _Neuron, bias: bool = False):
        super().__init__(neuron)
        self.features = int(features)
        self.weight = nn.Parameter(torch.empty(self.features, self.features))
        self.bias = nn.Parameter(torch.zeros(self.features)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default

    def feedback(self, y: torch.Tensor) -> torch.Tensor:
        return F.linear(y, self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step: ``y_t = neuron(x_t + W y_{t-1} + b)``; ``x_t`` must be ``[N, features]``."""
        if x.dim() != 2 or x.shape[1] != self.features:
            raise ConfigError(f"LinearRecurrent({self.features}) takes [N, {self.features}] inputs, got "
                              f"{list(x.shape)}; put nn.Linear(in_features, {self.features}) in front of it")
        return super().forward(x)

    def _feedback_node(self, g, y, shape):
        if shape is None or len(shape) != 2 or shape[1] != self.features:
            raise ConfigError(f"LinearRecurrent({self.features}) needs [N, {self.features}] inputs, got {shape}")
        params = {"weight": self.weight.detach().clone()}
        if self.bias is not None:
            params["bias"] = self.bias.detach().clone()
        return g.add("linear", [y], {}, params, meta={"shape": shape})


# tracing: each layer is one IR node ----------------------------------------------------------
def _neuron_rule(mod: _Neuron, site):
    op, attrs, params = mod.ir_fields()
    return op, [site.args[0]], attrs, params


def _synapse_rule(mod: SynapseFilter, site):
    return "synapse_filter", [site.args[0]], {"tau": mod.filter.tau, "learnable": mod.filter.learnable}, {}


def _recurrent_rule(mod: _Recurrent, site):
    shape = (None,) + tuple(site.out.shape[1:])
    return "recurrent", [site.args[0]], {"body": mod.body_graph(shape), "kind": mod.kind}, {}


for _cls in (IF, LIF):
    register_leaf_module(_cls, _neuron_rule)
register_leaf_module(SynapseFilter, _synapse_rule)
for _cls in (ElementwiseRecurrent, LinearRecurrent):
    register_leaf_module(_cls, _recurrent_rule)
