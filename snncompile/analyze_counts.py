"""What ``snncompile.analyze`` counts, node by node: spike events, fan-outs, operations.

Definitions (the numbers of ``analyze`` and of the report):

* **Events.** A neuron emits ``|s|`` events a step (a burst of 3 from a multi-spike neuron is 3,
  a signed spike is 1); so do a spike max pool and a Poisson encoder. Ops that only route events
  (layout ops, slices, cat, add, zero pads, sum/average pools, constant scales) do no arithmetic
  of their own in an event-driven SNN: a spike is delivered through them to the next weighted
  layer, and a pool's window sum arrives there as that many events (an average pool's 1/k^2 and a
  ``scale``/``mul_const`` factor are part of the consumer's weights). So the events reaching a
  weighted layer are the integer spike counts propagated through these ops (``route_events``).
  Anything else (a weighted layer, batch norm, opaque calls, the readout, a direct or sequence
  input) produces analog values: no events.
* **Synaptic operations (accumulates).** A weighted layer (conv1d/2d/3d, linear) fed by events
  does, per event at an input element, one accumulate per output it reaches: the element's
  fan-out, exact for stride, padding, dilation and groups (``fan_out``: the gradient of the sum of
  the layer's outputs with all weights 1 and no bias, i.e. the number of (output, tap) pairs that
  read the element). Zero weights count (the connection exists).
* **MACs.** A weighted layer fed by analog values (the direct-encoded input: the first conv)
  multiplies: ``ann_macs`` per step it runs (once in all when the runtime hoists it, see
  passes/hoist_static.py). A batch norm left in the SNN (trainable SNNs) is one multiply-add per
  element per step. Bias additions, membrane updates and the readout's integration are not
  counted (as in the usual SNN energy estimates).
* **ANN MACs** of a layer: its outputs times its fan-in (``weight.numel() / C_out``), padding taps
  included (the standard count); batch norm: one per element.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .ir import Node
from .ops import get_op, has_trait

__all__ = ["EVENT_SOURCES", "route_events", "fan_out", "ann_macs", "is_counted", "adaptive_window_areas", "Counter",
           "chunk_rows", "prod"]

#: ops whose output values are events (spike counts) themselves
EVENT_SOURCES = ("spike_maxpool2d",)
# ops through which events pass unchanged in number (a factor belongs to the consumer's weights)
_PASS_THROUGH = ("mul_const", "scale", "dropout", "identity")
# ops that route events by applying themselves to the (summed) event tensor: linear, no factor
_ROUTING = ("sumpool2d", "flatten", "reshape", "slice", "select", "permute", "pad", "add", "cat")


def is_counted(node: Node) -> bool:
    """True for the nodes that do arithmetic ``analyze`` counts: weighted layers and batch norm."""
    return has_trait(node, "weighted") or node.op == "batchnorm"


def adaptive_window_areas(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> torch.Tensor:
    """``[oh, ow]``: the number of input positions each output of an adaptive pool averages
    (torch's windows: ``floor(i*H/oh)`` to ``ceil((i+1)*H/oh)``)."""
    def sizes(n, o):
        return torch.tensor([math.ceil((i + 1) * n / o) - (i * n) // o for i in range(o)], dtype=torch.float64)
    return sizes(in_hw[0], out_hw[0])[:, None] * sizes(in_hw[1], out_hw[1])[None, :]


def route_events(node: Node, evs: list, values: torch.Tensor | None = None):
    """The events at ``node``'s output, summed over steps and samples (``[1, ...]`` float64), from
    its inputs' (``evs``: the same, or None for analog values); None when the output is analog.
    ``values`` is the node's output (needed by a nonlinear routing op such as a max pool on
    spikes, whose selected values are the events)."""
    if node.op in EVENT_SOURCES:
        return None if values is None else values.abs().sum(0, keepdim=True, dtype=torch.float64)
    if not evs or any(e is None for e in evs):
        return None
    if node.op in _PASS_THROUGH:
        return evs[0]
    if node.op == "avgpool2d":  # the window's events, not their mean
        a = node.attrs
        return F.avg_pool2d(evs[0], a["kernel_size"], a.get("stride") or a["kernel_size"], a.get("padding", 0),
                            a.get("ceil_mode", False), True, 1)
    if node.op == "adaptive_avgpool2d":
        out = F.adaptive_avg_pool2d(evs[0], node.attrs["output_size"])
        return out * adaptive_window_areas(tuple(evs[0].shape[-2:]), tuple(out.shape[-2:]))
    if node.op == "maxpool2d" and values is not None:  # max of event counts: the chosen ones
        return values.abs().sum(0, keepdim=True, dtype=torch.float64)
    if node.op in _ROUTING:
        opdef = get_op(node.op)
        args, kwargs = opdef.bind_call(list(evs), node.attrs, {})
        return opdef.target(*args, **kwargs)
    return None


def _weighted_ones(node: Node, x: torch.Tensor) -> torch.Tensor:
    """The layer's output for ``x`` with every weight 1 and no bias (float64)."""
    opdef = get_op(node.op)
    w = node.params["weight"]
    params = {"weight": torch.ones(w.shape, dtype=torch.float64, device=x.device)}
    args, kwargs = opdef.bind_call([x], node.attrs, params)
    return opdef.target(*args, **kwargs)


def fan_out(node: Node, in_shape: tuple[int, ...], device=None) -> torch.Tensor:
    """``[1, *in_shape]`` float64: for every input element of the weighted layer ``node`` (one
    sample's input shape ``in_shape``), the number of accumulates one event there triggers
    (outputs x channels it reaches; exact for stride, padding, dilation, groups). Batch norm: 1."""
    if node.op == "batchnorm":
        return torch.ones((1,) + tuple(in_shape), dtype=torch.float64, device=device)
    x = torch.zeros((1,) + tuple(in_shape), dtype=torch.float64, device=device, requires_grad=True)
    with torch.enable_grad():
        _weighted_ones(node, x).sum().backward()
    return x.grad.detach()


def ann_macs(node: Node, out_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one sample through ``node`` in the ANN: its outputs times its
    fan-in (``weight.numel() / C_out``: C_in/groups x kernel for a conv, in_features for a linear);
    batch norm: one per element."""
    outputs = math.prod(int(d) for d in out_shape)
    if node.op == "batchnorm":
        return outputs
    w = node.params["weight"]
    return outputs * (w.numel() // w.shape[0])


class Counter:
    """Observes the simulated chunks of a graph (``run(sim, x, keep)``): spike totals per neuron
    node (``spikes``), accumulates per counted node (``synops``; ``analog`` when its input had no
    events), one sample's shape per node (``shapes``) and the first ``keep`` samples' spikes of
    each neuron node (``first``: lists of ``[T, keep, ...]``)."""

    def __init__(self, graph, T: int):
        self.T = T
        self.neurons = [n for n in graph.nodes if has_trait(n, "neuron")]
        self.counted = [n for n in graph.nodes if is_counted(n)]
        self.spikes = {n.id: 0.0 for n in self.neurons}
        self.synops = {n.id: 0.0 for n in self.counted}
        self.analog = {n.id: False for n in self.counted}
        self.shapes, self.fan, self.first = {}, {}, {}
        self.ev: dict = {}
        self.keep = 0

    def observe(self, node, value) -> None:
        """The simulator's observer: ``value`` is ``node``'s output on the chunk ([T*n, ...])."""
        self.shapes.setdefault(node.id, tuple(value.shape[1:]))
        if has_trait(node, "neuron") or (node.op == "encode" and node.attrs.get("method") == "poisson"):
            ev = value.abs().sum(0, keepdim=True, dtype=torch.float64)
            if node.id in self.spikes:
                self.spikes[node.id] += float(ev.sum())
                if self.keep:  # [T, keep, ...]: the first samples' spikes, for the plots
                    steps = value.reshape((self.T, -1) + tuple(value.shape[1:]))
                    self.first.setdefault(node.id, []).append(steps[:, :self.keep].cpu())
        else:
            ev = route_events(node, [self.ev.get(i.id) for i in node.inputs], value)
        self.ev[node.id] = ev
        if node.id in self.synops:
            src = node.inputs[0]
            got = self.ev.get(src.id)
            if got is None:
                self.analog[node.id] = True
                return
            if node.id not in self.fan:
                self.fan[node.id] = fan_out(node, self.shapes[src.id], got.device)
            self.synops[node.id] += float((got * self.fan[node.id]).sum())

    def run(self, sim, x, keep: int):
        """Simulate the chunk ``x`` with ``sim`` while counting; keep the first ``keep`` samples'
        spikes. Returns the graph's output (the readout of every step, [T, n, ...])."""
        self.ev, self.keep = {}, keep
        out = sim.run(x, observer=self.observe)
        self.ev = {}
        return out


def chunk_rows(graph, T: int, memory_mb: int) -> int:
    """Samples a chunk may hold so that all node values of a T-step simulation fit ``memory_mb``."""
    per = 0
    for n in graph.nodes:
        shape = n.shape
        if shape is None or any(not isinstance(d, int) for d in shape[1:]):
            return 16
        per += max(1, prod(shape[1:])) * 4
    return max(1, (memory_mb << 20) // max(per * T, 1))


def prod(dims) -> int:
    """The product of ``dims`` as an int."""
    out = 1
    for d in dims:
        out *= int(d)
    return out
