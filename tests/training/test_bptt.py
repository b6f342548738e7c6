"""BPTT through spiking neurons checked against hand-unrolled torch computations.

Every reference below is written out step by step from DESIGN.md's equations:

    LIF spikingjelly: v <- v + (x - (v - v_rest)) / tau      (v_rest = 0)
    LIF snntorch:     v <- beta * v + x
    s = H(v - theta);  reset subtract: v <- v - s * theta

with the spike made differentiable by the straight-through trick
``s = H(h) + (P(h) - P(h).detach())`` where ``P(h) = atan(pi/2 * alpha * h) / pi + 1/2`` is
SpikingJelly's ATan primitive (alpha = 2), so d s / d h = P'(h). None of the references call
snncompile code, so a wrong surrogate, a missing reset path or a broken state hand-over shows up.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import snncompile
from snncompile.layers import LIF
from snncompile.neurons import NeuronSpec, neuron_reference

ATOL = 1e-5


# ---------------------------------------------------------------------------------------------
# the hand-written reference
# ---------------------------------------------------------------------------------------------

def st_spike(h: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Heaviside forward, ATan surrogate backward, by the straight-through trick."""
    p = torch.atan(math.pi / 2 * alpha * h) / math.pi + 0.5
    return (h >= 0).float() + (p - p.detach())


def hand_lif(xs, theta, form: str, detach_reset: bool, tau: float = 2.0, beta: float = 0.8,
             leak: torch.Tensor | None = None, static_T: int | None = None) -> torch.Tensor:
    """LIF over time, written out. ``xs`` is [T, N, ...] or (``static_T``) one [N, ...] current
    read at every step. ``leak`` replaces 1/tau (spikingjelly) or beta (snntorch)."""
    T = static_T if static_T is not None else xs.shape[0]
    shape = xs.shape if static_T is not None else xs.shape[1:]
    v = torch.zeros(shape)
    out = []
    for t in range(T):
        x = xs if static_T is not None else xs[t]
        if form == "spikingjelly":
            v = v + (x - (v - 0.0)) / tau if leak is None else v + (x - (v - 0.0)) * leak
        else:
            v = (beta if leak is None else leak) * v + x
        s = st_spike(v - theta)
        v = v - (s.detach() if detach_reset else s) * theta
        out.append(s)
    return torch.stack(out)


def _grads(*tensors):
    return [t.grad.detach().clone() for t in tensors]


# ---------------------------------------------------------------------------------------------
# neuron_reference: LIF -> linear -> LIF over 3 steps
# ---------------------------------------------------------------------------------------------

FORMS = [("spikingjelly", dict(form="spikingjelly", tau=2.0)), ("snntorch", dict(form="snntorch", beta=0.8))]


@pytest.mark.parametrize("detach_reset", [False, True], ids=["reset-grad", "detach-reset"])
@pytest.mark.parametrize("form,spec_kw", FORMS, ids=[f for f, _ in FORMS])
def test_two_layer_lif_chain_matches_hand_unrolled_bptt(form, spec_kw, detach_reset):
    """Spikes equal exactly; d/dx, d/dW and d/dtheta (both layers) agree with the unrolled graph."""
    torch.manual_seed(0)
    T, N, F, H = 3, 4, 5, 6
    x0 = torch.randn(T, N, F) * 1.5 + 0.5
    W0 = torch.randn(H, F) * 0.8
    c1, c2 = torch.randn(T, N, F), torch.randn(T, N, H)  # loss weights, so every spike matters

    def run(use_library: bool):
        x = x0.clone().requires_grad_(True)
        W = W0.clone().requires_grad_(True)
        th1 = torch.tensor(1.0, requires_grad=True)
        th2 = torch.tensor(0.7, requires_grad=True)
        if use_library:
            spec = NeuronSpec(kind="lif", surrogate="atan", reset="subtract", detach_reset=detach_reset, **spec_kw)
            s1, _ = neuron_reference(x, th1, spec)
            s2, _ = neuron_reference(s1 @ W.t(), th2, spec)
        else:
            s1 = hand_lif(x, th1, form, detach_reset)
            s2 = hand_lif(s1 @ W.t(), th2, form, detach_reset)
        ((s1 * c1).sum() + (s2 * c2).sum()).backward()
        return s1.detach(), s2.detach(), _grads(x, W, th1, th2)

    s1, s2, g = run(True)
    r1, r2, gr = run(False)
    assert torch.equal(s1, r1) and torch.equal(s2, r2)
    # the test is only meaningful if both layers spike sometimes and stay silent sometimes
    assert 0 < s1.sum() < s1.numel() and 0 < s2.sum() < s2.numel()
    for name, a, b in zip(["x", "W", "theta1", "theta2"], g, gr):
        assert a.abs().sum() > 0, f"d loss / d {name} is zero"
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=lambda m: f"grad of {name}: {m}")


def test_detach_reset_changes_the_gradient():
    """detach_reset drops a real path: with and without it the x-gradients differ."""
    torch.manual_seed(1)
    x0 = torch.randn(3, 4, 5) * 1.5 + 0.5
    gs = []
    for dr in (False, True):
        x = x0.clone().requires_grad_(True)
        s, _ = neuron_reference(x, 1.0, NeuronSpec(kind="lif", tau=2.0, surrogate="atan", detach_reset=dr))
        s.sum().backward()
        gs.append(x.grad)
    assert (gs[0] - gs[1]).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------
# the whole runtime: to_trainable on an MLP
# ---------------------------------------------------------------------------------------------

def _mlp():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def _param_by_shape(snn, shape):
    found = [p for _, p in snn.named_parameters() if tuple(p.shape) == tuple(shape)]
    assert len(found) == 1, f"expected one parameter of shape {shape}, got {len(found)}"
    return found[0]


def _runtime_grads(snn, x, c):
    seq = snn.run_sequence(x)
    (seq * c).sum().backward()
    return seq.detach(), _param_by_shape(snn, (5, 6)).grad.clone(), _param_by_shape(snn, (3, 5)).grad.clone()


def test_runtime_bptt_matches_hand_unrolled_mlp():
    """Direct encoding, hoisted first Linear, static-input LIF, per-step readout: the output
    sequence and the gradients of both weights equal a hand-unrolled computation."""
    model = _mlp()
    torch.manual_seed(4)
    x = torch.randn(4, 6) * 2.0
    T = 3
    c = torch.randn(T, 4, 3)
    snn = snncompile.to_trainable(model, T=T, neuron="lif", surrogate="atan", example_input=torch.zeros(2, 6),
                                  backend="torch")
    seq, gW1, gW2 = _runtime_grads(snn, x, c)
    assert seq.shape == (T, 4, 3)

    W1 = model[0].weight.detach().clone().requires_grad_(True)
    b1 = model[0].bias.detach().clone()
    W2 = model[2].weight.detach().clone().requires_grad_(True)
    b2 = model[2].bias.detach().clone()
    h = x @ W1.t() + b1                      # the hoisted Linear runs once
    s = hand_lif(h, 1.0, "spikingjelly", False, tau=2.0, static_T=T)   # same current every step
    ref = s @ W2.t() + b2                     # readout: the last Linear at every step
    (ref * c).sum().backward()

    assert 0 < s.detach().sum() < s.numel()
    torch.testing.assert_close(seq, ref.detach(), atol=1e-6, rtol=0)
    assert gW1.abs().sum() > 0 and gW2.abs().sum() > 0
    torch.testing.assert_close(gW1, W1.grad, atol=ATOL, rtol=0)
    torch.testing.assert_close(gW2, W2.grad, atol=ATOL, rtol=0)


def test_runtime_cpu_backend_gives_the_same_gradients_as_torch():
    """backend='cpu' trains through the C training kernels (kernels/cpu_neuron_train.c): the
    same outputs and, to float rounding, the same gradients as the torch reference."""
    model = _mlp()
    torch.manual_seed(5)
    x = torch.randn(4, 6) * 2.0
    c = torch.randn(3, 4, 3)
    res = {}
    for backend in ("torch", "cpu"):
        snn = snncompile.to_trainable(model, T=3, neuron="lif", surrogate="atan",
                                      example_input=torch.zeros(2, 6), backend=backend)
        assert all(n.backend == backend for n in snn.neurons().values())
        res[backend] = _runtime_grads(snn, x, c)
    assert torch.equal(res["torch"][0], res["cpu"][0])
    for a, b in zip(res["torch"][1:], res["cpu"][1:]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert res["cpu"][1].abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# learnable leak and threshold (standalone layers, one step a call)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("form,kw", [("spikingjelly", dict(tau=2.0)), ("snntorch", dict(beta=0.8))])
def test_learnable_leak_gradient_matches_hand_unrolled(form, kw):
    """LIF(learn_leak=True): leak = sigmoid(leak_logit) is 1/tau or beta; d/d logit matches."""
    torch.manual_seed(6)
    layer = LIF(learn_leak=True, **kw)
    k0 = 0.5 if form == "spikingjelly" else 0.8
    assert float(layer.neuron.leak.detach()) == pytest.approx(k0, abs=1e-6)
    xs = torch.randn(4, 3, 5) * 1.5 + 0.6
    c = torch.randn(4, 3, 5)
    out = torch.stack([layer(xs[t]) for t in range(4)])
    (out * c).sum().backward()
    g = layer.neuron.leak_logit.grad

    logit = layer.neuron.leak_logit.detach().clone().requires_grad_(True)
    ref = hand_lif(xs, 1.0, form, False, leak=torch.sigmoid(logit))
    (ref * c).sum().backward()
    assert torch.equal(out.detach(), ref.detach())
    assert g is not None and g.abs() > 0
    torch.testing.assert_close(g, logit.grad, atol=ATOL, rtol=0)


def test_learnable_threshold_gradient_matches_hand_unrolled():
    """LIF(learn_threshold=True): the threshold is a Parameter with the unrolled gradient."""
    torch.manual_seed(7)
    layer = LIF(tau=2.0, threshold=0.8, learn_threshold=True)
    assert isinstance(layer.neuron.threshold, nn.Parameter)
    xs = torch.randn(4, 3, 5) * 1.5 + 0.6
    c = torch.randn(4, 3, 5)
    out = torch.stack([layer(xs[t]) for t in range(4)])
    (out * c).sum().backward()
    g = layer.neuron.threshold.grad

    th = torch.tensor(0.8, requires_grad=True)
    ref = hand_lif(xs, th, "spikingjelly", False)
    (ref * c).sum().backward()
    assert torch.equal(out.detach(), ref.detach())
    assert g is not None and g.abs() > 1e-4
    torch.testing.assert_close(g, th.grad, atol=ATOL, rtol=0)


def test_runtime_learnable_threshold_and_leak_get_gradients():
    """to_trainable(learn_threshold, learn_leak): the runtime neuron's threshold and leak_logit
    gradients equal the hand-unrolled ones (static input, hoisted Linear)."""
    model = _mlp()
    torch.manual_seed(8)
    x = torch.randn(4, 6) * 2.0
    c = torch.randn(3, 4, 3)
    snn = snncompile.to_trainable(model, T=3, example_input=torch.zeros(2, 6), learn_threshold=True,
                                  learn_leak=True, backend="torch")
    (neuron,) = snn.neurons().values()
    (snn.run_sequence(x) * c).sum().backward()

    th = torch.tensor(1.0, requires_grad=True)
    logit = torch.logit(torch.tensor(0.5)).requires_grad_(True)
    h = x @ model[0].weight.detach().t() + model[0].bias.detach()
    s = hand_lif(h, th, "spikingjelly", False, leak=torch.sigmoid(logit), static_T=3)
    ((s @ model[2].weight.detach().t() + model[2].bias.detach()) * c).sum().backward()
    assert neuron.threshold.grad.abs() > 0 and neuron.leak_logit.grad.abs() > 0
    torch.testing.assert_close(neuron.threshold.grad, th.grad, atol=ATOL, rtol=0)
    torch.testing.assert_close(neuron.leak_logit.grad, logit.grad, atol=ATOL, rtol=0)
