"""SpikingModule: all-steps output, streaming step(), reset, firing rates, chunking, encoders."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import snncompile
from snncompile.errors import ConfigError
from snncompile.neuron_module import SpikingNeuron
from snncompile.runtime import SpikingModule

T = 20
N = 12
K = 5


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(6, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, K)).eval()


class Residual(nn.Module):
    """The skip carries the first conv's output, which only depends on the static input."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(2, 4, 3, padding=1)
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, K)

    def forward(self, x):
        h = self.c0(x)
        x = F.relu(h + self.c1(F.relu(h)))
        return self.fc(torch.flatten(x, 1))


def _x(n=N, seed=1):
    return torch.rand(n, 2, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def snn():
    return snncompile.compile(_cnn(), _x(), T=T, normalize="max", backend="torch")


def test_return_all_steps_shape_and_last_step(snn):
    x = _x()
    with torch.no_grad():
        seq = snn(x, return_all_steps=True)
        y = snn(x)
    assert seq.shape == (T, N, K)
    assert y.shape == (N, K)
    assert torch.allclose(seq[-1], y, atol=1e-6, rtol=0)
    # a running average: the steps differ (the output is not constant over time)
    assert not torch.allclose(seq[0], seq[-1], atol=1e-3)
    # T given at call time overrides the default
    with torch.no_grad():
        assert snn(x, T=7, return_all_steps=True).shape == (7, N, K)


def test_all_steps_is_the_running_mean_of_run_sequence(snn):
    x = _x()
    with torch.no_grad():
        raw = snn.run_sequence(x)
        seq = snn(x, return_all_steps=True)
    assert raw.shape == (T, N, K)
    for t in (1, 5, T):
        assert torch.allclose(seq[t - 1], raw[:t].mean(0), atol=1e-6)


def test_prefix_of_all_steps_equals_a_shorter_run(snn):
    x = _x()
    with torch.no_grad():
        seq = snn(x, return_all_steps=True)
        y8 = snn(x, T=8)
    assert torch.allclose(seq[7], y8, atol=1e-6)


def test_step_T_times_equals_multi_step(snn):
    x = _x()
    with torch.no_grad():
        y = snn(x)
        seq = snn(x, return_all_steps=True)
        snn.reset()
        outs = [snn.step(x) for _ in range(T)]
    assert torch.allclose(outs[-1], y, atol=1e-5, rtol=0)
    for t in (0, 3, T - 1):
        assert torch.allclose(outs[t], seq[t], atol=1e-5, rtol=0)


def test_step_on_residual_with_static_skip():
    torch.manual_seed(3)
    model = Residual().eval()
    x = _x(8)
    snn = snncompile.compile(model, x, T=T, normalize="max", backend="torch")
    assert snn.graph.find("repeat_time")  # the static skip is repeated over time
    with torch.no_grad():
        y = snn(x)
        snn.reset()
        for _ in range(T):
            s = snn.step(x)
    assert torch.allclose(s, y, atol=1e-5, rtol=0)


def test_reset_clears_state(snn):
    x = _x()
    with torch.no_grad():
        snn.reset()
        first = snn.step(x)
        for _ in range(5):
            snn.step(x)
        assert any(m.v is not None for m in snn.neurons().values())
        snn.reset()
        assert all(m.v is None for m in snn.neurons().values())
        assert snn._step_count == 0
        again = snn.step(x)
    assert torch.equal(again, first)
    # without reset the state carries on: a later step differs from a fresh first one
    with torch.no_grad():
        later = [snn.step(x) for _ in range(4)][-1]
    assert not torch.equal(later, first)


def test_forward_resets_between_calls(snn):
    x = _x()
    with torch.no_grad():
        y1 = snn(x)
        snn.step(x)  # leave some streaming state behind
        y2 = snn(x)
    assert torch.equal(y1, y2)


def test_firing_rates(snn):
    x = _x()
    rates = snn.firing_rates(x)
    neurons = snn.neurons()
    assert set(rates) == set(neurons)
    # the lowered graph: one neuron fused with its sum pool, one plain neuron, both of family if
    neuron_nodes = snn.graph.find("neuron_sumpool2d") + snn.graph.find("neuron")
    assert len(rates) == len(neuron_nodes) == 2 and {n.attrs["family"] for n in neuron_nodes} == {"if"}
    assert all(0.0 <= r <= 1.0 for r in rates.values())
    assert all(r > 0 for r in rates.values())
    # the same numbers counted by hooks on the neuron modules
    counts = {}

    def hook(name):
        def fn(mod, args, out):
            c = counts.setdefault(name, [0.0, 0])
            c[0] += float(out.sum())
            c[1] += out.numel() * (mod.sumpool or 1) ** 2  # a fused sum pool outputs window sums
        return fn

    hs = [m.register_forward_hook(hook(k)) for k, m in neurons.items()]
    try:
        with torch.no_grad():
            snn(x)
    finally:
        for h in hs:
            h.remove()
    for k, (s, n) in counts.items():
        assert rates[k] == pytest.approx(s / n, abs=1e-9)
    # recording is switched off afterwards
    assert not any(m.record_rates for m in neurons.values())


def test_chunked_simulation_equals_unchunked(snn):
    x = _x(10)
    a = snn
    b = SpikingModule(snn.graph, T, backend="torch", max_chunk_bytes=1)
    assert b._chunk_rows(T, x) == 1 and a._chunk_rows(T, x) >= 10  # b really runs one row at a time
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-6, rtol=0)
        assert torch.allclose(a(x, return_all_steps=True), b(x, return_all_steps=True), atol=1e-6, rtol=0)
    assert a.firing_rates(x) == pytest.approx(b.firing_rates(x), abs=1e-9)
    # compile() hands the option to the runtime
    c = snncompile.compile(nn.Linear(3, 2), torch.rand(4, 3), T=2, backend="torch", max_chunk_bytes=1)
    assert c.max_chunk_bytes == 1 and c._chunk_rows(2, torch.rand(4, 3)) == 1


@pytest.mark.parametrize("train_mode", [False, True])
def test_compile_leaves_the_model_untouched(train_mode):
    model = _cnn()
    with torch.no_grad():  # non-trivial BN statistics
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 2.0)
    model.train(train_mode)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    x = _x()
    snn = snncompile.compile(model, x, T=T, normalize="max", backend="torch")
    with torch.no_grad():
        snn(x)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert [m.training for m in model.modules()] == modes
    assert model.training == train_mode
    # the SNN owns copies: changing it does not reach the model
    with torch.no_grad():
        for p in snn.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)


def test_poisson_encoding_runs_and_is_deterministic_under_seed():
    model = _cnn()
    x = _x()
    snn = snncompile.compile(model, x, T=T, normalize="max", backend="torch", encoding="poisson")
    with torch.no_grad():
        torch.manual_seed(123)
        y1 = snn(x)
        torch.manual_seed(123)
        y2 = snn(x)
        torch.manual_seed(124)
        y3 = snn(x)
    assert y1.shape == (N, K) and torch.isfinite(y1).all()
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, y3)  # it really samples


def test_poisson_rates_approximate_the_input():
    # identity-like net: the poisson-coded input's mean over T is close to x itself
    x = torch.rand(64, 4, generator=torch.Generator().manual_seed(5))
    model = nn.Linear(4, 4).eval()
    with torch.no_grad():
        model.weight.copy_(torch.eye(4))
        model.bias.zero_()
    snn = snncompile.compile(model, x, T=256, normalize="max", backend="torch", encoding="poisson")
    torch.manual_seed(0)
    with torch.no_grad():
        y = snn(x)
    assert (y - x).abs().mean() < 0.05
    assert set(torch.unique(snn.run_sequence(x)).tolist()) <= {0.0, 1.0}


def test_bad_T_is_a_config_error():
    with pytest.raises(ConfigError, match="T"):
        snncompile.compile(_cnn(), _x(), T=0, normalize="max", backend="torch")


def test_neuron_modules_and_code(snn):
    ns = snn.neurons()
    assert ns and all(isinstance(m, SpikingNeuron) for m in ns.values())
    code = snn.code
    assert "def forward(self, x, T)" in code
    assert all(f"self.{k}(" in code for k in ns)


def test_step_with_a_new_batch_size_starts_a_new_stream(snn):
    """The neurons treat a new batch size as a new stream (SpikingNeuron.forward); the
    streaming readout must restart with them, not add the old stream's sum."""
    x = _x()
    with torch.no_grad():
        snn.reset()
        fresh4 = snn.step(x[:4])
        fresh1 = (snn.reset(), snn.step(x[:1]))[1]
        snn.reset()
        for _ in range(3):
            snn.step(x)
        after4 = snn.step(x[:4])
        snn.reset()
        for _ in range(3):
            snn.step(x)
        after1 = snn.step(x[:1])
    assert after4.shape == fresh4.shape == (4, K)
    assert torch.allclose(after4, fresh4, atol=1e-6)
    assert after1.shape == (1, K)
    assert torch.allclose(after1, fresh1, atol=1e-6)
