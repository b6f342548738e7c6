"""Neuron equations (DESIGN.md "Neuron semantics") on hand-computed sequences, and surrogates.

Every expected value below was worked out by hand from the equations

    IF:   v <- v + x[t];  s[t] = [v >= theta];  v <- v - s[t] * theta    (soft reset)
    LIF (spikingjelly): v <- v + (x[t] - (v - v_rest)) / tau
    LIF (snntorch):     v <- beta * v + x[t]
    reset to value:     v <- v_reset where s[t] = 1

with v starting at v_init * theta; none of them is produced by the code under test.
"""
from __future__ import annotations

import math

import pytest
import torch

from snncompile.errors import ConfigError
from snncompile.neurons import NeuronSpec, neuron_reference
from snncompile.surrogate import SURROGATES, spike


def _seq(values, *shape):
    """A [T, 1] (or [T, *shape]) float32 sequence."""
    t = torch.tensor(values, dtype=torch.float32)
    return t.reshape((len(values),) + (shape or (1,)))


# ---------------------------------------------------------------------------------------------
# IF, soft reset
# ---------------------------------------------------------------------------------------------

def test_if_v_init_0_hand_computed():
    # v: 0.3, 0.6, 0.9, 1.2 -> spike -> 0.2, 1.7 -> spike -> 0.7, 0.5
    x = _seq([0.3, 0.3, 0.3, 0.3, 1.5, -0.2])
    s, v = neuron_reference(x, 1.0, NeuronSpec(kind="if", v_init=0.0))
    assert s.shape == (6, 1)
    assert s.flatten().tolist() == [0, 0, 0, 1, 1, 0]
    assert v.item() == pytest.approx(0.5, abs=1e-6)


def test_if_v_init_half_hand_computed():
    # v0 = 0.5: 0.8, 1.1 -> spike -> 0.1, 0.4, 0.7, 2.2 -> spike -> 1.2 (one spike per step at most),
    # 1.2 - 0.25 = 0.95 -> no spike
    x = _seq([0.3, 0.3, 0.3, 0.3, 1.5, -0.25])
    s, v = neuron_reference(x, 1.0, NeuronSpec(kind="if", v_init=0.5))
    assert s.flatten().tolist() == [0, 1, 0, 0, 1, 0]
    assert v.item() == pytest.approx(0.95, abs=1e-6)


def test_if_v_init_is_a_fraction_of_theta():
    # theta 2, v_init 0.5 -> v0 = 1.0: 1.5, 2.0 -> spike (>= fires) -> 0.0, 0.5
    x = _seq([0.5, 0.5, 0.5])
    s, v = neuron_reference(x, 2.0, NeuronSpec(v_init=0.5))
    assert s.flatten().tolist() == [0, 1, 0]
    assert v.item() == pytest.approx(0.5, abs=1e-7)


def test_if_fires_at_exact_threshold():
    # dyadic values, exact in fp32: v reaches exactly 1.0 at t=2 and must fire (v >= theta)
    x = _seq([0.5, 0.5, 0.25])
    s, v = neuron_reference(x, 1.0, NeuronSpec(v_init=0.0))
    assert s.flatten().tolist() == [0, 1, 0]
    assert v.item() == 0.25


def test_if_explicit_initial_state_overrides_v_init():
    x = _seq([0.25, 0.25])
    s, v = neuron_reference(x, 1.0, NeuronSpec(v_init=0.5), v=torch.tensor([0.75]))
    # 0.75 + 0.25 = 1.0 -> spike -> 0.0, 0.25
    assert s.flatten().tolist() == [1, 0]
    assert v.item() == 0.25


def test_if_per_channel_threshold():
    # x [T=4, N=1, C=2]; theta = [1, 0.5]; every step adds 0.3 to both channels, v_init 0
    # channel 0 (theta 1):   0.3, 0.6, 0.9, 1.2 -> spike -> 0.2
    # channel 1 (theta 0.5): 0.3, 0.6 -> spike -> 0.1, 0.4, 0.7 -> spike -> 0.2
    x = torch.full((4, 1, 2), 0.3)
    s, v = neuron_reference(x, torch.tensor([1.0, 0.5]), NeuronSpec(v_init=0.0))
    assert s[:, 0, 0].tolist() == [0, 0, 0, 1]
    assert s[:, 0, 1].tolist() == [0, 1, 0, 1]
    assert torch.allclose(v, torch.tensor([[0.2, 0.2]]), atol=1e-6)


def test_if_per_channel_threshold_v_init_and_spatial_dims():
    # [T=2, N=1, C=2, H=1, W=2]; theta [1, 0.5], v_init 0.5 -> v0 = [0.5, 0.25]
    x = torch.full((2, 1, 2, 1, 2), 0.25)
    s, v = neuron_reference(x, torch.tensor([1.0, 0.5]), NeuronSpec(v_init=0.5))
    # channel 0: 0.75, 1.0 -> spike -> 0.0 ; channel 1: 0.5 -> spike -> 0.0, 0.25
    assert s[:, 0, 0].flatten().tolist() == [0, 0, 1, 1]
    assert s[:, 0, 1].flatten().tolist() == [1, 1, 0, 0]
    assert torch.equal(v, torch.tensor([[[[0.0, 0.0]], [[0.25, 0.25]]]]))


def test_per_channel_threshold_of_wrong_length_is_a_config_error():
    with pytest.raises(ConfigError, match="per-channel"):
        neuron_reference(torch.zeros(3, 1, 4), torch.tensor([1.0, 0.5]), NeuronSpec())


def test_static_input_equals_repeated_sequence():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, generator=g) * 0.9 - 0.1
    theta = torch.tensor([1.0, 0.5, 0.25, 2.0])
    T = 11
    for v_init in (0.0, 0.5):
        s_static, v_static = neuron_reference(x, theta, NeuronSpec(v_init=v_init, input_kind="static"), T=T)
        s_seq, v_seq = neuron_reference(x.expand(T, 3, 4).clone(), theta, NeuronSpec(v_init=v_init))
        assert s_static.shape == (T, 3, 4)
        assert torch.equal(s_static, s_seq)
        assert torch.equal(v_static, v_seq)
        assert s_static.sum() > 0  # the comparison is not between two all-zero tensors


def test_static_input_needs_T():
    with pytest.raises(ConfigError, match="T"):
        neuron_reference(torch.zeros(2, 3), 1.0, NeuronSpec(input_kind="static"))


def test_reset_to_value_vs_subtract():
    x = _seq([0.6, 0.6, 0.6])
    # value reset to 0.1: 0.6, 1.2 -> spike -> 0.1, 0.7
    s, v = neuron_reference(x, 1.0, NeuronSpec(reset="value", v_reset=0.1))
    assert s.flatten().tolist() == [0, 1, 0]
    assert v.item() == pytest.approx(0.7, abs=1e-6)
    # subtract: 0.6, 1.2 -> spike -> 0.2, 0.8
    s, v = neuron_reference(x, 1.0, NeuronSpec(reset="subtract"))
    assert s.flatten().tolist() == [0, 1, 0]
    assert v.item() == pytest.approx(0.8, abs=1e-6)


def test_reset_to_value_loses_the_excess_charge():
    # big input: subtract keeps the excess, value reset drops it
    x = _seq([2.5, 0.0, 0.0])
    s_val, v_val = neuron_reference(x, 1.0, NeuronSpec(reset="value", v_reset=0.0))
    s_sub, v_sub = neuron_reference(x, 1.0, NeuronSpec(reset="subtract"))
    assert s_val.flatten().tolist() == [1, 0, 0] and v_val.item() == 0.0
    # 2.5 -> 1.5 -> spike 0.5 -> no
    assert s_sub.flatten().tolist() == [1, 1, 0] and v_sub.item() == 0.5


# ---------------------------------------------------------------------------------------------
# LIF, both forms
# ---------------------------------------------------------------------------------------------

def test_lif_spikingjelly_tau_hand_computed():
    # tau 2, v_rest 0, theta 1: v <- v + (x - v) / 2
    # t1: 0 + 1.5/2 = 0.75; t2: 0.75 + 0.75/2 = 1.125 -> spike -> 0.125; t3: 0.125 + 1.375/2 = 0.8125
    x = _seq([1.5, 1.5, 1.5])
    s, v = neuron_reference(x, 1.0, NeuronSpec(kind="lif", form="spikingjelly", tau=2.0, v_init=0.0))
    assert s.flatten().tolist() == [0, 1, 0]
    assert v.item() == pytest.approx(0.8125, abs=1e-7)


def test_lif_spikingjelly_v_rest():
    # tau 4, v_rest 0.5, v_init 0 (v starts at 0, below rest): v <- v + (x - (v - 0.5)) / 4
    # t1: 0 + (0 + 0.5)/4 = 0.125; t2: 0.125 + (0 - 0.125 + 0.5)/4 = 0.21875;
    # t3: 0.21875 + (2 - 0.21875 + 0.5)/4 = 0.78906 -> no spike (theta 1)
    x = _seq([0.0, 0.0, 2.0])
    s, v = neuron_reference(x, 1.0, NeuronSpec(kind="lif", form="spikingjelly", tau=4.0, v_rest=0.5))
    assert s.flatten().tolist() == [0, 0, 0]
    assert v.item() == pytest.approx(0.21875 + (2 - 0.21875 + 0.5) / 4, abs=1e-6)


def test_lif_snntorch_beta_hand_computed():
    # beta 0.5, theta 1: v <- 0.5 v + x
    # t1: 0.75; t2: 0.375 + 0.75 = 1.125 -> spike -> 0.125; t3: 0.0625 + 0.75 = 0.8125
    x = _seq([0.75, 0.75, 0.75])
    s, v = neuron_reference(x, 1.0, NeuronSpec(kind="lif", form="snntorch", beta=0.5))
    assert s.flatten().tolist() == [0, 1, 0]
    assert v.item() == pytest.approx(0.8125, abs=1e-7)


def test_lif_snntorch_v_init_and_value_reset():
    # beta 0.5, theta 2, v_init 0.5 -> v0 = 1: t1 0.5 + 1 = 1.5; t2 0.75 + 1.5 = 2.25 -> spike -> v_reset 0.25;
    # t3 0.125 + 1 = 1.125
    x = _seq([1.0, 1.5, 1.0])
    s, v = neuron_reference(x, 2.0, NeuronSpec(kind="lif", form="snntorch", beta=0.5, v_init=0.5,
                                               reset="value", v_reset=0.25))
    assert s.flatten().tolist() == [0, 1, 0]
    assert v.item() == pytest.approx(1.125, abs=1e-7)


def test_lif_leaks_where_if_does_not():
    x = _seq([0.5, 0.0, 0.0, 0.5])
    s_if, v_if = neuron_reference(x, 1.0, NeuronSpec(kind="if"))
    s_lif, v_lif = neuron_reference(x, 1.0, NeuronSpec(kind="lif", form="snntorch", beta=0.5))
    assert s_if.flatten().tolist() == [0, 0, 0, 1]  # 0.5, 0.5, 0.5, 1.0 -> spike
    assert s_lif.flatten().tolist() == [0, 0, 0, 0]  # 0.5, 0.25, 0.125, 0.5625
    assert v_lif.item() == pytest.approx(0.5625)


@pytest.mark.parametrize("bad", [dict(kind="lifx"), dict(reset="zero"), dict(form="norse"),
                                 dict(input_kind="image")])
def test_neuron_spec_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        NeuronSpec(**bad)


def test_spikes_come_back_in_input_dtype_and_state_in_fp32():
    x = _seq([0.5, 0.75, 0.5]).to(torch.float16)
    s, v = neuron_reference(x, 1.0, NeuronSpec())
    assert s.dtype == torch.float16 and v.dtype == torch.float32
    assert s.flatten().tolist() == [0, 1, 0]
    assert v.item() == 0.75


# ---------------------------------------------------------------------------------------------
# Surrogate gradients
# ---------------------------------------------------------------------------------------------

# the closed forms, written independently of snncompile.surrogate
def _closed_sigmoid(x, a):
    s = 1 / (1 + torch.exp(-a * x))
    return a * s * (1 - s)


def _closed_atan(x, a):
    # d/dx [atan(pi/2 * a * x) / pi + 1/2]
    return (a / 2) / (1 + (math.pi / 2 * a * x) ** 2)


def _closed_fast_sigmoid(x, a):
    # d/dx [x / (1 + a|x|)]
    return 1 / (1 + a * x.abs()) ** 2


def _closed_triangle(x, a):
    return torch.clamp(a - a * a * x.abs(), min=0)


CLOSED = {"sigmoid": _closed_sigmoid, "atan": _closed_atan, "fast_sigmoid": _closed_fast_sigmoid,
          "triangle": _closed_triangle}


def test_the_four_surrogates_are_registered():
    assert set(CLOSED) <= set(SURROGATES)


def test_spike_forward_is_heaviside():
    x = torch.tensor([-2.0, -1e-6, 0.0, 1e-6, 3.0])
    assert spike(x).tolist() == [0, 0, 1, 1, 1]
    for name in CLOSED:
        xr = x.clone().requires_grad_(True)
        assert spike(xr, name).tolist() == [0, 0, 1, 1, 1]


@pytest.mark.parametrize("name", sorted(CLOSED))
@pytest.mark.parametrize("alpha", [None, 0.7, 3.0])
def test_surrogate_backward_matches_closed_form(name, alpha):
    a = SURROGATES[name].default_alpha if alpha is None else alpha
    x = torch.linspace(-2.0, 2.0, 81, dtype=torch.float32).requires_grad_(True)
    w = torch.linspace(0.5, 1.5, 81)  # a non-trivial upstream gradient
    (spike(x, name, alpha) * w).sum().backward()
    expected = CLOSED[name](x.detach().double(), a) * w.double()
    assert torch.allclose(x.grad.double(), expected, atol=1e-6, rtol=0), name
    assert x.grad.abs().max() > 1e-3  # the gradient is really there


def test_atan_closed_form_is_the_derivative_of_the_primitive():
    # guard the hand-written closed forms themselves against autograd of the primitive
    a = 2.0
    x = torch.linspace(-2, 2, 41, dtype=torch.float64, requires_grad=True)
    (torch.atan(math.pi / 2 * a * x) / math.pi + 0.5).sum().backward()
    assert torch.allclose(x.grad, _closed_atan(x.detach(), a), atol=1e-12)
    x2 = torch.linspace(-2, 2, 41, dtype=torch.float64, requires_grad=True)
    (x2 / (1 + 25.0 * x2.abs())).sum().backward()
    assert torch.allclose(x2.grad, _closed_fast_sigmoid(x2.detach(), 25.0), atol=1e-12)


def test_neuron_reference_backpropagates_through_the_surrogate():
    # one step, IF, theta 1, v_init 0: s = H(x - 1); ds/dx = sigmoid'(x - 1) with alpha 4
    x = torch.tensor([[0.5, 1.0, 1.5]], requires_grad=True)
    s, _ = neuron_reference(x, 1.0, NeuronSpec(surrogate="sigmoid"))
    assert s.tolist() == [[0, 1, 1]]
    s.sum().backward()
    assert torch.allclose(x.grad, _closed_sigmoid(x.detach() - 1, 4.0), atol=1e-6)


def test_unknown_surrogate_is_a_config_error():
    x = torch.zeros(3, requires_grad=True)
    with pytest.raises(ConfigError, match="unknown surrogate"):
        spike(x, "no-such-surrogate")
