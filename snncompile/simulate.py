"""Run a spiking IR graph node by node for T steps, without the emitter (for calibration passes).

``Simulator(graph, T)`` runs what the SNN graph says exactly as the emitted module would, with
the T steps folded into the batch (``[T*N, ...]``) for stateless ops: neurons through the same
kernels as the runtime (``snncompile.kernels.run_neuron``, a fresh membrane every run), spike
max pools gated by spike counts, encode and readout with their targets. ``rate_domain=True``
runs the same graph as the ANN it stands for, in the normalized units of its neurons: one step,
every neuron a ReLU, encode the identity (Poisson: its expectation), spike max pools plain max
pools, the readout the identity — the values a converted network's rates should approach.
``if_rate`` is what an IF neuron fires for a constant input (the threshold search's model).
An ``observer(node, value)`` sees every node's value; ``stop_after`` ends a run early.
Passes may use this (it imports neither the emitter nor torch.fx).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .interpret import Interpreter, _on_device
from .ir import Graph, Node
from .kernels import run_neuron
from .neurons import NeuronSpec, family_of_node
from .ops import get_op, has_trait
from .spike_pool import SpikeMaxPool2d

__all__ = ["Simulator", "neuron_spec_of", "if_rate"]

_UNSUPPORTED = ("recurrent", "synapse_filter", "repeat_time")


def if_rate(z: torch.Tensor, T: int, v_init: float, max_spikes: int = 1) -> torch.Tensor:
    """The firing rate of a soft-reset IF neuron (threshold 1, membrane starting at ``v_init``)
    fed the constant input ``z`` for ``T`` steps: ``clip(floor(T z + v_init), 0, T) / T``; a
    multi-spike neuron (up to ``max_spikes`` a step) saturates at ``max_spikes`` instead of 1."""
    return torch.clamp(torch.floor(T * z + v_init), 0, T * max_spikes) / T


def neuron_spec_of(node: Node) -> NeuronSpec:
    """The NeuronSpec of a neuron node (its family and checked parameters)."""
    return NeuronSpec.from_attrs(family_of_node(node), node.attrs, node.describe())


class Simulator(Interpreter):
    """Runs a temporal graph (neurons, encode, readout) for ``T`` steps on ``device``.

    ``backend`` is the neuron backend ("torch", "cpu", "cupy"; the runtime's names). Parameters
    and neuron attributes are read from the graph at every run, so a pass may edit a bias or a
    ``v_init`` between runs and see it.
    Graphs with recurrent containers or synapse filters are refused (ConfigError naming the node).
    ``run`` / ``evaluate`` / ``stop_after`` are the Interpreter's; only calling a node differs.
    """
    what = "simulate"

    def __init__(self, graph: Graph, T: int, *, device=None, backend: str = "torch", rate_domain: bool = False):
        for n in graph.nodes:
            if n.op in _UNSUPPORTED:
                raise ConfigError(f"simulate: {n.describe()} is a {n.op}, which the calibration simulator does "
                                  "not run; leave out the calibration pass for this model")
        if device is None:
            device = next((t.device for n in graph.nodes for t in n.params.values()), torch.device("cpu"))
        self.graph, self.device = graph, torch.device(device)
        self.T = 1 if rate_domain else int(T)
        self.backend, self.rate_domain = backend, rate_domain
        self._opaque = {n.id: _on_device(n.attrs["target"], self.device) for n in graph.nodes if n.op == "opaque"}

    def _params(self, node: Node) -> dict:
        return {k: t.to(self.device) for k, t in node.params.items()}

    def _call(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        T = self.T
        if has_trait(node, "neuron"):
            if self.rate_domain:
                return F.relu(args[0])
            if node.op != "neuron":
                raise ConfigError(f"simulate: {node.describe()} is a lowered op; simulate the graph before "
                                  "lowering (Pipeline.before_lowering)")
            spec = neuron_spec_of(node)  # (read at every run: a calibration pass may edit v_init)
            x = args[0]
            xs = x if spec.input_kind == "static" else x.reshape((T, x.shape[0] // T) + tuple(x.shape[1:]))
            s, _ = run_neuron(xs, node.params["threshold"].to(self.device), spec, T, None, self.backend, None)
            return s.reshape((-1,) + tuple(s.shape[2:]))
        if node.op == "spike_maxpool2d":
            if self.rate_domain:
                return F.max_pool2d(args[0], **node.attrs)
            return SpikeMaxPool2d(**node.attrs)(args[0], T)
        if node.op == "encode" and self.rate_domain:
            if node.attrs.get("method") == "sequence":
                raise ConfigError(f"simulate: {node.describe()} reads a sequence input, which has no rate-domain "
                                  "value; calibrate on static inputs")
            return args[0]  # direct: the value; Poisson: its expectation
        if node.op == "readout" and self.rate_domain:
            return args[0].unsqueeze(0)
        opdef = get_op(node.op)
        call_args, call_kwargs = opdef.bind_call(args, node.attrs, self._params(node), T)
        if node.op == "encode" and node.attrs.get("method") == "poisson":
            # its own seeded draws: a calibration is deterministic and leaves the global RNG alone
            call_kwargs["generator"] = torch.Generator(self.device).manual_seed(node.id)
        fn = self._opaque[node.id] if node.op == "opaque" else opdef.target
        if fn is None:
            raise ConfigError(f"simulate: {node.describe()} has no runnable target; register the op with one")
        return fn(*call_args, **call_kwargs)
