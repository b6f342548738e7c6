"""Neuron families: the registry, typed parameters, the signed IF family by hand, and a family
registered from user code running on every CPU backend (reference, C inference, C training)."""
from __future__ import annotations

import pytest
import torch

import snncompile
from snncompile.errors import ConfigError
from snncompile.kernels import run_neuron
from snncompile.kernels.cpu import cpu_kernel_available
from snncompile.kernels.cpu_train import train_cpu
from snncompile.neurons import (NeuronFamily, NeuronSpec, Param, get_family, neuron_reference,
                                register_family, unregister_family)
from snncompile.neurons.params import V_INIT, reset_param

needs_cc = pytest.mark.skipif(not cpu_kernel_available(), reason="no C compiler here")


def test_the_standard_families_are_listed():
    assert snncompile.neuron_families()[:3] == ["if", "lif", "signed_if"]
    assert get_family("signed_if").spikes == "signed"


@pytest.mark.parametrize("kwargs,words", [
    (dict(kind="lif", tau=-1.0), ["tau=-1.0", "> 0"]),
    (dict(kind="lif", beta=1.5), ["beta=1.5", "<= 1"]),
    (dict(kind="if", reset="substract"), ["reset='substract'", "'subtract', 'value'"]),
    (dict(kind="signed_if", reset="value"), ["reset='value'", "'subtract'"]),
    (dict(kind="lif", form="norse"), ["form='norse'", "'spikingjelly', 'snntorch'"]),
    (dict(kind="if", tau=2.0), ["no parameter 'tau'", "v_init"]),
    (dict(kind="lif", v_init=float("nan")), ["v_init=nan", "finite"]),
    (dict(kind="lif", tau="2"), ["tau='2'", "number"]),
    (dict(kind="hh"), ["unknown neuron family 'hh'", "signed_if"]),
])
def test_bad_parameters_name_the_value_and_what_is_allowed(kwargs, words):
    with pytest.raises(ConfigError) as e:
        NeuronSpec(**kwargs)
    for w in words:
        assert w in str(e.value)


def test_spec_is_immutable_hashable_and_round_trips():
    s = NeuronSpec("lif", form="snntorch", beta=0.5, surrogate="atan")
    assert s == NeuronSpec(**s.to_dict()) and hash(s) == hash(NeuronSpec(**s.to_dict()))
    assert s.beta == 0.5 and s.family.name == "lif"
    with pytest.raises(AttributeError):
        s.beta = 0.3
    assert s.replace(beta=0.25).beta == 0.25 and s.beta == 0.5
    with pytest.raises(AttributeError, match="no parameter 'tau'"):
        NeuronSpec("if").tau


def test_signed_if_hand_computed():
    # theta 1, v0 = 0: 0.6; 1.2 -> +1 -> 0.2; -0.3; -1.8 -> -1 -> -0.8; -1.2 -> -1 -> -0.2
    x = torch.tensor([0.5, 0.75, -0.5, -1.5, -0.375]).reshape(5, 1)
    s, v = neuron_reference(x, 1.0, NeuronSpec("signed_if"))
    assert s.flatten().tolist() == [0, 1, 0, -1, -1]
    assert v.item() == pytest.approx(-0.125)  # 0.5, 1.25->0.25, -0.25, -1.75->-0.75, -1.125->-0.125
    # one spike per step at most, in each direction
    s, v = neuron_reference(torch.tensor([[-3.0]]), 1.0, NeuronSpec("signed_if"))
    assert s.item() == -1 and v.item() == -2.0


def test_registering_twice_is_refused():
    with pytest.raises(ConfigError, match="already registered"):
        register_family(get_family("if"))
    with pytest.raises(ConfigError, match="cannot be removed"):
        unregister_family("if")


# --- a family from user code: IF with an input gain, v <- v + gain * x -----------------------------
GAIN = Param("gain", float, 1.0, low=0.0, low_open=True, doc="input gain")


def _gain_family():
    return NeuronFamily("gain_if", (V_INIT, reset_param("subtract", "value"), Param("v_reset", float, 0.0), GAIN),
                        lambda A, v, x, p: A.add(v, A.mul(p.gain, x)),
                        lambda A, g, p: (A.mul(p.gain, g), g), short="gif", doc="IF with an input gain")


@pytest.fixture
def gain_family():
    fam = register_family(_gain_family())
    yield fam
    unregister_family("gain_if")


def test_a_user_family_runs_on_the_reference(gain_family):
    assert "gain_if" in snncompile.neuron_families()
    x = torch.tensor([0.25, 0.25, 0.25]).reshape(3, 1)
    s, v = neuron_reference(x, 1.0, NeuronSpec("gain_if", gain=2.0))  # 0.5, 1.0 -> spike -> 0, 0.5
    assert s.flatten().tolist() == [0, 1, 0] and v.item() == 0.5


@needs_cc
@pytest.mark.parametrize("reset", ["subtract", "value"])
@pytest.mark.parametrize("static", [False, True])
def test_a_user_family_gets_c_kernels_bit_exact(gain_family, reset, static):
    spec = NeuronSpec("gain_if", gain=1.7, reset=reset, v_reset=-0.1, v_init=0.5,
                      input_kind="static" if static else "sequence")
    g = torch.Generator().manual_seed(3)
    x = torch.randn((2, 3, 5, 4) if static else (6, 2, 3, 5, 4), generator=g)
    th = torch.rand(3, generator=g) + 0.5
    s_ref, v_ref = neuron_reference(x, th, spec, 6)
    s, v = run_neuron(x, th, spec, 6, None, "cpu")
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref)
    p, _ = run_neuron(x, th, spec, 6, None, "cpu", sumpool=2)
    assert torch.equal(p, torch.nn.functional.avg_pool2d(s_ref.flatten(0, 1), 2, divisor_override=1).reshape(p.shape))


@needs_cc
def test_a_user_family_trains_through_the_c_kernels(gain_family):
    spec = NeuronSpec("gain_if", gain=1.3, surrogate="atan", v_init=0.5)
    x = torch.randn(5, 4, 6, requires_grad=True)
    th = torch.tensor(0.8, requires_grad=True)
    s_ref, v_ref = neuron_reference(x, th, spec)
    g_ref = torch.autograd.grad((s_ref * torch.linspace(-1, 1, s_ref.numel()).reshape(s_ref.shape)).sum()
                                + v_ref.sum(), [x, th])
    out = train_cpu(x, th, spec, None, None)
    assert out is not None, "the training kernels were not built for the new family"
    s, v = out
    assert torch.equal(s.detach(), s_ref.detach()) and torch.equal(v.detach(), v_ref.detach())
    g = torch.autograd.grad((s * torch.linspace(-1, 1, s.numel()).reshape(s.shape)).sum() + v.sum(), [x, th])
    for a, b in zip(g_ref, g):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_signed_neurons_convert_and_run_the_same_on_every_cpu_backend():
    """relu-to-if{neuron=signed_if}: the whole conversion with signed IF neurons; the C kernels give
    the reference's outputs exactly, and the signed neurons are not fused with their pools."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 5), torch.nn.ReLU(),
                                torch.nn.Linear(5, 3)).eval()
    calib = torch.rand(32, 1, 8, 8)
    pipe = snncompile.conversion_pipeline().replace("relu-to-if", "relu-to-if{neuron=signed_if}")
    snn = snncompile.compile(model, calib, T=8, pipeline=pipe, backend="torch")
    neurons = snn.graph.find("neuron")
    assert neurons and all(n.attrs["family"] == "signed_if" for n in neurons)
    assert not snn.graph.find("neuron_sumpool2d")
    assert "family=signed_if" in str(snn.graph)
    x = torch.rand(6, 1, 8, 8)
    out_torch = snn(x)
    if cpu_kernel_available():
        snn_cpu = snncompile.compile(model, calib, T=8, pipeline=pipe, backend="cpu")
        assert torch.equal(snn_cpu(x), out_torch)
    with torch.no_grad():
        ann = model(x)
    assert (out_torch - ann).abs().max() < 0.5 * ann.abs().max()  # a rate code of the same function
