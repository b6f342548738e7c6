"""IR -> a runnable torch.fx GraphModule whose ``.code`` reads like the graph.

Each IR node becomes one fx node: stateless ops call their op-table target (torch functions
where torch has one), parameters become attributes of the module, neurons and opaque calls
become submodules. A graph with temporal ops (neurons, encode, readout) takes ``(x, T)`` and runs
with T folded into the batch; a plain graph takes ``(x)`` and is the ANN.
"""
from __future__ import annotations

import keyword
import re

import torch
import torch.fx as fx
import torch.nn as nn

from .errors import ConfigError
from .ir import Graph, Node
from .neuron_module import SpikingNeuron
from .neurons import NeuronSpec, family_of_node
from .ops import FUSED_NEURON_SUMPOOL, get_op, has_trait
from .spike_pool import SpikeMaxPool2d
from .stateful import RecurrentModule, SynapseFilterModule

__all__ = ["emit", "run_graph", "neuron_spec", "is_temporal"]

_BUFFER_PARAMS = {"running_mean", "running_var", "factor"}


class _OpaqueModule(nn.Module):
    """Holds an opaque call (and its module, if any) so ``.to()`` moves it with the rest."""

    def __init__(self, call):
        super().__init__()
        self.call = call
        if isinstance(call.fn, nn.Module):
            self.inner = call.fn

    def forward(self, *inputs):
        return self.call(*inputs)

    def extra_repr(self) -> str:
        return repr(self.call)


class _BatchNorm(nn.Module):
    """Batch norm over dim 1 that follows ``train()``/``eval()`` (batch statistics when training,
    over T folded into the batch); in eval mode the same as ``F.batch_norm(training=False)``."""

    def __init__(self, params: dict, eps: float, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.register_buffer("running_mean", params["running_mean"].detach().clone())
        self.register_buffer("running_var", params["running_var"].detach().clone())
        for k in ("weight", "bias"):
            t = params.get(k)
            setattr(self, k, None if t is None else nn.Parameter(t.detach().clone()))

    def extra_repr(self) -> str:
        return f"{self.running_mean.numel()}, eps={self.eps:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                              self.training, self.momentum, self.eps)


class TimeSharedDropout(nn.Module):
    """Dropout on ``[T*N, ...]`` whose mask is drawn once per sample and shared by all T steps
    (a dropped neuron stays silent for the whole sequence, as in SpikingJelly's multi-step
    dropout); identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p:g}, one mask for all T steps"

    def forward(self, x: torch.Tensor, T: int) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        steps = x.reshape((T, x.shape[0] // T) + tuple(x.shape[1:]))
        keep = torch.empty(steps.shape[1:], dtype=x.dtype, device=x.device).bernoulli_(1.0 - self.p)
        return (steps * (keep / (1.0 - self.p))).reshape(x.shape)


def neuron_spec(node: Node) -> NeuronSpec:
    """The NeuronSpec a neuron node describes (its family's parameters and the run fields)."""
    return NeuronSpec.from_attrs(family_of_node(node), node.attrs, node.describe())


def is_temporal(graph: Graph) -> bool:
    """True when the graph has ops that see time (it then runs as ``module(x, T)``)."""
    return any(get_op(n.op).temporal for n in graph.nodes)


_RESERVED: set[str] = set()


def _reserved_names() -> set[str]:
    """The attribute names a GraphModule has already (methods, ``training``, ...), and the forward's own."""
    if not _RESERVED:
        _RESERVED.update(dir(fx.GraphModule(nn.Module(), fx.Graph())), {"self", "T"})
    return _RESERVED


def _base_name(node: Node, taken: set[str]) -> str:
    src = node.source
    base = src.module_path if src is not None and src.module_path else node.op
    base = re.sub(r"\W", "_", base)
    if base[:1].isdigit():
        base = "_" + base
    # a Python keyword, or a name nn.Module / fx already uses ("forward", "to", "training", "self"),
    # cannot be an attribute or a variable of the generated forward
    if keyword.iskeyword(base) or base in _reserved_names():
        base = base + "_"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def emit(graph: Graph, *, backend: str = "torch") -> fx.GraphModule:
    """Build a GraphModule computing exactly what ``graph`` says.

    Takes a verified graph and the neuron backend ("torch", "cpu", "cupy"); returns a module
    whose forward is ``(x0, ..., T)`` when the graph is temporal, else ``(x0, ...)``, in eval
    mode (``.train()`` switches batch norm to batch statistics and turns dropout on). Parameters
    are copied, so running or training it never touches the graph's tensors. ``module.ir_names``
    maps IR node ids to fx node names (for observing activations).
    """
    root = nn.Module()
    g = fx.Graph()
    env: dict[int, fx.Node] = {}
    taken: set[str] = {"T"}
    names: dict[int, str] = {}
    temporal = is_temporal(graph)
    for node in sorted(graph.inputs, key=lambda n: n.attrs.get("index", 0)):  # the runtime passes them in this order
        env[node.id] = g.placeholder("x" if node.attrs.get("index", 0) == 0 else f"x{node.attrs['index']}")
    T = g.placeholder("T") if temporal else None
    for node in graph.nodes:
        if node.op == "input":
            names[node.id] = env[node.id].name
            continue
        args = [env[i.id] for i in node.inputs]
        if node.op == "output":
            g.output(args[0] if len(args) == 1 else tuple(args))
            continue
        base = _base_name(node, taken)
        if has_trait(node, "neuron"):
            root.add_module(base, SpikingNeuron(neuron_spec(node), node.params["threshold"], backend,
                                                node.attrs.get("kernel_size") if node.op == FUSED_NEURON_SUMPOOL else None,
                                                learn_threshold=bool(node.attrs.get("learn_threshold")),
                                                learn_leak=bool(node.attrs.get("learn_leak"))))
            fxn = g.create_node("call_module", base, (args[0], T), {}, name=base)
        elif node.op == "synapse_filter":
            root.add_module(base, SynapseFilterModule(float(node.attrs.get("tau", 2.0)),
                                                      bool(node.attrs.get("learnable"))))
            fxn = g.create_node("call_module", base, (args[0], T), {}, name=base)
        elif node.op == "recurrent":
            body = node.attrs["body"]
            root.add_module(base, RecurrentModule(emit(body, backend=backend), tuple(node.shape[1:]),
                                                  node.attrs.get("kind", "linear")))
            fxn = g.create_node("call_module", base, (args[0], T), {}, name=base)
        elif node.op == "batchnorm":
            root.add_module(base, _BatchNorm(node.params, float(node.attrs.get("eps", 1e-5))))
            fxn = g.create_node("call_module", base, tuple(args), {}, name=base)
        elif node.op == "dropout" and temporal and not node.meta.get("static"):
            root.add_module(base, TimeSharedDropout(float(node.attrs.get("p", 0.5))))
            fxn = g.create_node("call_module", base, (args[0], T), {}, name=base)
        elif node.op == "dropout":
            root.add_module(base, nn.Dropout(float(node.attrs.get("p", 0.5))))
            fxn = g.create_node("call_module", base, tuple(args), {}, name=base)
        elif node.op == "spike_maxpool2d":
            root.add_module(base, SpikeMaxPool2d(**node.attrs))
            fxn = g.create_node("call_module", base, (args[0], T), {}, name=base)
        elif node.op == "opaque":
            root.add_module(base, _OpaqueModule(node.attrs["target"]))
            fxn = g.create_node("call_module", base, tuple(args), {}, name=base)
        else:
            opdef = get_op(node.op)
            params = {}
            for pname, t in node.params.items():
                attr = f"{base}_{pname}"
                if pname in _BUFFER_PARAMS:
                    root.register_buffer(attr, t.detach().clone())
                else:
                    root.register_parameter(attr, nn.Parameter(t.detach().clone(), requires_grad=t.is_floating_point()))
                params[pname] = g.get_attr(attr)
            if opdef.target is None:
                raise ConfigError(f"emit: {node.describe()} has no runnable target; register the op with one")
            call_args, call_kwargs = opdef.bind_call(args, node.attrs, params, T)
            fxn = g.create_node("call_function", opdef.target, tuple(call_args), call_kwargs, name=base)
        env[node.id] = fxn
        names[node.id] = fxn.name
    g.lint()
    gm = fx.GraphModule(root, g, class_name="Spiking" + graph.name if temporal else graph.name)
    gm.ir_names = names
    return gm.eval()  # what the graph says; call .train() for batch-statistics BN and dropout


def run_graph(graph: Graph, *inputs: torch.Tensor, T: int | None = None) -> torch.Tensor:
    """Emit and run a graph once under no_grad (for tests and quick checks)."""
    gm = emit(graph)
    with torch.no_grad():
        return gm(*inputs, T) if is_temporal(graph) else gm(*inputs)
