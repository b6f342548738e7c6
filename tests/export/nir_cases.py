"""Small networks with dyadic weights and inputs (multiples of 1/8 and 1/4): every sum they form is
exact in float32 in any order, so NIR's semantics and snncompile's runtime must agree bit for bit
(a difference is a difference of meaning, never of rounding). Shared by the NIR test modules."""
from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn as nn

import snncompile
from snncompile import layers
from nir_sim import simulate


def dyadic_(module: nn.Module, seed: int, step: float = 0.125, span: int = 4) -> nn.Module:
    """Every weight and bias of ``module`` set to a random multiple of ``step`` in [-span, span]*step."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randint(-span, span + 1, p.shape, generator=g).float() * step)
    return module


def dyadic_input(shape, seed: int = 0) -> torch.Tensor:
    """Inputs in [0, 1] that are multiples of 1/4."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 5, shape, generator=g).float() / 4


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(self.b(torch.relu(self.a(h))) + h)
        return self.fc(torch.flatten(self.pool(h), 1))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3, padding=1)
        self.b = nn.Conv2d(1, 2, 1)
        self.fc = nn.Linear(5 * 8 * 8, 4)

    def forward(self, x):
        h = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
        return self.fc(torch.flatten(h, 1))


def conv_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5))


def conv1d_net() -> nn.Module:
    return nn.Sequential(nn.Conv1d(2, 4, 3, padding=1, dilation=1), nn.ReLU(), nn.Conv1d(4, 3, 3, stride=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4, 2))


def compiled(model: nn.Module, x: torch.Tensor, T: int = 8, **kw):
    """The model converted without rescaling (normalize=fixed: the dyadic weights stay as they are)."""
    return snncompile.compile(model, x, T=T, normalize="fixed", calibrate="none", **kw)


def recurrent_net(kind: str, neuron, bias: bool = False) -> nn.Module:
    rec = layers.LinearRecurrent(6, neuron, bias=bias) if kind == "linear" else layers.ElementwiseRecurrent(neuron)
    return nn.Sequential(nn.Linear(5, 6), rec, nn.Linear(6, 3))


def our_spikes(snn, x: torch.Tensor, T: int) -> dict:
    """Every neuron layer's output in one run of ``snn`` on ``x``, by IR node id (a recurrent
    container's id for its neuron): [T, N, ...], the window sums of its spikes where the runtime
    fused it with a sum pool."""
    from snncompile.stateful import RecurrentModule

    ids = {name: i for i, name in snn.module.ir_names.items()}
    owner = {}  # neuron module name -> the IR id it is reported under
    for name, mod in snn.module.named_modules():
        if name in ids and isinstance(mod, RecurrentModule):
            owner.update({f"{name}.body.{k}": ids[name] for k, _ in mod.body.named_modules() if k})
    seen, hooks = {}, []

    def keep(name):
        def hook(mod, args, out):
            steps = args[1]
            seen.setdefault(name, ([], mod.sumpool))[0].append(out.detach().reshape((steps, -1) + tuple(out.shape[1:])))
        return hook
    for name, mod in snn.neurons().items():
        hooks.append(mod.register_forward_hook(keep(name)))
    try:
        with torch.no_grad():
            y = snn(x, T)
    finally:
        for h in hooks:
            h.remove()
    return {owner.get(k, ids.get(k)): (torch.cat(v, 0), pool) for k, (v, pool) in seen.items()
            if k in ids or k in owner}, y


def nir_spikes(graph, x: torch.Tensor, T: int) -> dict:
    """The NIR oracle's record of every node for ``x`` given at every step."""
    xs = np.broadcast_to(x.numpy(), (T,) + tuple(x.shape)).astype(np.float32)
    return simulate(graph, xs, record=True)


def compare(snn, graph, x: torch.Tensor, T: int, imported: bool = False) -> int:
    """Assert that every neuron layer of ``snn`` spikes exactly as NIR's semantics say on ``x``, and
    the output is the readout's state / T; returns how many neuron layers were compared. The NIR
    node of a neuron is the one whose record names it (``imported``: the one it was read from)."""
    ours, y = our_spikes(snn, x, T)
    rec = nir_spikes(graph, x, T)
    by_id = {}
    for name, node in graph.nodes.items():
        meta = (getattr(node, "metadata", None) or {}).get("snncompile")
        if meta and json.loads(meta).get("op") == "neuron" and not imported:
            by_id[json.loads(meta)["ir_node"]] = name
    if imported:
        by_id = {n.id: n.source.module_path for n in snn.semantic_graph.nodes if n.op in ("neuron", "recurrent")}
    assert set(ours) <= set(by_id), (sorted(ours), by_id)
    for node_id, (value, pool) in ours.items():
        name = by_id[node_id]
        spikes = name + ".fire" if name + ".fire" in graph.nodes else name
        expect = rec[spikes]
        if pool:  # the runtime's fused neuron gives the window sums of its spikes
            spikes = next(b for a, b in graph.edges if a == spikes and type(graph.nodes[b]).__name__ in
                          ("SumPool2d", "AvgPool2d"))
            expect = rec[spikes] * (np.prod(graph.nodes[spikes].kernel_size)
                                    if type(graph.nodes[spikes]).__name__ == "AvgPool2d" else 1)
        assert np.array_equal(value.numpy(), expect), f"{name}: {np.abs(value.numpy() - expect).max()}"
    out = rec["output"]
    readout = [n for n, v in graph.nodes.items() if type(v).__name__ == "I" and "readout" in n]
    expect = out[-1] / T if readout else out.mean(0)
    assert np.array_equal(y.numpy(), expect), np.abs(y.numpy() - expect).max()
    return len(ours)
