"""Stateful layers of snncompile.layers: their step-by-step equations, the runtime against the
standalone step loop, tracing (one IR node each), reset_states, and argument checks.

Equations (snncompile.layers / snncompile.stateful docstrings)::

    SynapseFilter(tau):           i[t] = i[t-1] - i[t-1] / tau + x[t],   i[0] = 0
    ElementwiseRecurrent(n):      y[t] = n(x[t] + y[t-1]),               y[0] = 0
    LinearRecurrent(k, n):        y[t] = n(x[t] + W y[t-1] + b)
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import snncompile
from snncompile.errors import ConfigError
from snncompile.ir import Graph
from snncompile.layers import IF, LIF, ElementwiseRecurrent, LinearRecurrent, SynapseFilter, reset_states
from snncompile.neurons import NeuronSpec, neuron_reference

T = 5


def _steps(model, xs):
    """Run a standalone model one step a call over xs [T, N, ...], starting from a fresh state."""
    reset_states(model)
    return torch.stack([model(xs[t]) for t in range(xs.shape[0])])


# ---------------------------------------------------------------------------------------------
# synapse filter
# ---------------------------------------------------------------------------------------------

def test_synapse_filter_standalone_matches_equation():
    """Single-step calls follow i[t] = i[t-1] - i[t-1]/tau + x[t] from i[0] = 0."""
    torch.manual_seed(0)
    xs = torch.randn(T, 3, 4)
    layer = SynapseFilter(tau=4.0)
    out = _steps(layer, xs)
    i = torch.zeros(3, 4)
    ref = []
    for t in range(T):
        i = i - i / 4.0 + xs[t]
        ref.append(i)
    torch.testing.assert_close(out, torch.stack(ref), atol=1e-6, rtol=0)
    # a constant input of 1 settles towards tau: 1, 1.75, 2.3125, ...
    ones = _steps(SynapseFilter(tau=4.0), torch.ones(3, 1, 1)).flatten().tolist()
    assert ones == pytest.approx([1.0, 1.75, 2.3125], abs=1e-6)
    assert layer.filter.tau == pytest.approx(4.0, rel=1e-6)


def test_synapse_filter_runtime_equals_standalone_loop():
    """to_trainable(sequence, readout last) of Linear -> SynapseFilter -> LIF gives, at every step,
    what the standalone model gives one step a call (state reset between sequences)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), SynapseFilter(tau=4.0), LIF(beta=0.5))
    snn = snncompile.to_trainable(model, T=T, encoding="sequence", readout="last", example_input=torch.zeros(2, 3))
    assert snn.sequence_input and snn.readout_mode == "last"
    for seed in (2, 3):  # two sequences in a row: no state may leak from the first
        torch.manual_seed(seed)
        xs = torch.randn(T, 6, 3) * 1.5
        with torch.no_grad():
            seq = snn.run_sequence(xs)
            last = snn(xs)
            ref = _steps(model, xs)
        assert 0 < ref.sum() < ref.numel()
        torch.testing.assert_close(seq, ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(last, ref[-1], atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# recurrent containers
# ---------------------------------------------------------------------------------------------

def _hand_recurrent(xs, spec, W=None, b=None):
    """y[t] = neuron(x[t] + feedback(y[t-1])) by neuron_reference one step at a time, passing v."""
    y = torch.zeros_like(xs[0])
    v = None
    out = []
    for t in range(xs.shape[0]):
        fb = y if W is None else y @ W.t() + (0 if b is None else b)
        s, v = neuron_reference((xs[t] + fb).unsqueeze(0), 1.0, spec, v=v)
        y = s[0]
        out.append(y)
    return torch.stack(out)


def test_elementwise_recurrent_matches_equation():
    """ElementwiseRecurrent(LIF): each neuron's own spike is added to its next input."""
    torch.manual_seed(4)
    xs = torch.randn(T, 3, 4) * 0.8 + 0.3
    layer = ElementwiseRecurrent(LIF(tau=2.0))
    with torch.no_grad():
        out = _steps(layer, xs)
    ref = _hand_recurrent(xs, NeuronSpec(kind="lif", tau=2.0))
    assert torch.equal(out, ref)
    # the feedback matters: without it (a plain LIF) the spikes differ
    no_fb, _ = neuron_reference(xs, 1.0, NeuronSpec(kind="lif", tau=2.0))
    assert not torch.equal(out, no_fb)


@pytest.mark.parametrize("bias", [False, True])
def test_linear_recurrent_matches_equation(bias):
    """LinearRecurrent(4, LIF(beta)): y[t] = LIF(x[t] + W y[t-1] + b)."""
    torch.manual_seed(5)
    xs = torch.randn(T, 3, 4) * 1.5 + 0.3
    layer = LinearRecurrent(4, LIF(beta=0.8), bias=bias)
    if bias:
        with torch.no_grad():
            layer.bias.copy_(torch.tensor([0.3, -0.2, 0.1, 0.5]))
    with torch.no_grad():
        out = _steps(layer, xs)
    ref = _hand_recurrent(xs, NeuronSpec(kind="lif", form="snntorch", beta=0.8), layer.weight.detach(),
                          layer.bias.detach() if bias else None)
    assert torch.equal(out, ref)
    assert 0 < out.sum() < out.numel()


def _runtime_vs_standalone(model):
    """Run ``model`` through to_trainable (sequence, T steps) and as a standalone step loop on the
    same input; assert equal outputs; backprop the same loss through both and return the SNN's
    named parameters (the standalone model's grads are in its own parameters)."""
    snn = snncompile.to_trainable(model, T=T, encoding="sequence", example_input=torch.zeros(2, 3))
    xs = torch.randn(T, 6, 3) * 2.0
    c = torch.randn(T, 6, 2)
    seq = snn.run_sequence(xs)
    (seq * c).sum().backward()
    ref = _steps(model, xs)
    (ref * c).sum().backward()
    torch.testing.assert_close(seq.detach(), ref.detach(), atol=1e-6, rtol=0)
    return dict(snn.named_parameters())


@pytest.mark.parametrize("kind", ["elementwise", "linear"])
def test_recurrent_runtime_equals_standalone_loop_with_gradients(kind):
    """to_trainable(sequence, T=5) of Linear -> recurrent(LIF) -> Linear: the output sequence and
    the gradients (the recurrent weight's included: non-zero) equal the standalone step loop's."""
    torch.manual_seed(6)
    rec = ElementwiseRecurrent(LIF(tau=2.0)) if kind == "elementwise" else LinearRecurrent(4, LIF(tau=2.0), bias=True)
    model = nn.Sequential(nn.Linear(3, 4), rec, nn.Linear(4, 2))
    params = _runtime_vs_standalone(model)
    pairs = [(params["module._0_weight"], model[0].weight), (params["module._2_weight"], model[2].weight)]
    if kind == "linear":
        rw = [p for k, p in params.items() if ".body." in k and p.dim() == 2]
        assert len(rw) == 1, list(params)
        pairs.append((rw[0], model[1].weight))
        assert rw[0].grad.abs().sum() > 0, "no gradient reaches the recurrent weight"
    for p, q in pairs:
        assert p.grad is not None and p.grad.abs().sum() > 0
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# tracing
# ---------------------------------------------------------------------------------------------

def _ops(g: Graph) -> list[str]:
    return [n.op for n in g.nodes]


def test_synapse_filter_traces_as_one_node():
    """SynapseFilter is one synapse_filter node carrying its tau."""
    g = snncompile.trace(nn.Sequential(nn.Linear(3, 4), SynapseFilter(tau=4.0)), torch.zeros(2, 3))
    assert _ops(g) == ["input", "linear", "synapse_filter", "output"]
    assert g.find("synapse_filter")[0].attrs["tau"] == pytest.approx(4.0, rel=1e-6)


@pytest.mark.parametrize("kind", ["elementwise", "linear"])
def test_recurrent_traces_as_one_node_with_body(kind):
    """A recurrent container is one 'recurrent' node whose body Graph holds (linear,) add and one
    neuron of family lif; printing the graph shows the body indented under the node."""
    rec = ElementwiseRecurrent(LIF(tau=2.0)) if kind == "elementwise" else LinearRecurrent(4, LIF(tau=2.0))
    g = snncompile.trace(nn.Sequential(nn.Linear(3, 4), rec), torch.zeros(2, 3))
    assert _ops(g) == ["input", "linear", "recurrent", "output"]
    (r,) = g.find("recurrent")
    assert r.attrs["kind"] == kind
    body = r.attrs["body"]
    assert isinstance(body, Graph)
    ops = _ops(body)
    assert ops.count("linear") == (1 if kind == "linear" else 0)
    assert ops.count("add") == 1 and ops.count("neuron") == 1 and ops.count("input") == 2
    assert body.find("neuron")[0].attrs["family"] == "lif"
    lines = str(g).splitlines()
    i = next(k for k, line in enumerate(lines) if "= recurrent(" in line)
    body_lines = lines[i + 1:i + 1 + len(body.nodes)]
    assert all(line.startswith("    %") for line in body_lines), body_lines
    assert any("add(" in line for line in body_lines)
    assert any("= neuron(" in line and " family=lif " in line for line in body_lines)
    assert not lines[i + 1 + len(body.nodes)].startswith(" ")   # the outer graph resumes unindented


# ---------------------------------------------------------------------------------------------
# reset_states
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("build", [
    lambda: nn.Sequential(SynapseFilter(tau=4.0), LIF(beta=0.5)),
    lambda: nn.Sequential(LinearRecurrent(4, LIF(tau=2.0))),
    lambda: nn.Sequential(ElementwiseRecurrent(IF())),
    lambda: nn.Sequential(SynapseFilter(tau=2.0)),
    lambda: nn.Sequential(LIF(tau=2.0)),
], ids=["filter+lif", "linear-rec", "elementwise-rec", "filter", "lif"])
def test_reset_states_clears_state(build):
    """After a few steps the output differs from a fresh model's first step (there is state);
    after reset_states the first step equals the fresh model's first step again."""
    torch.manual_seed(7)
    model = build()
    fresh = copy.deepcopy(model)
    # inputs between 0.6 and 1.9: a LIF (tau 2) or IF neuron fires on a later step, not the first
    x = torch.linspace(0.6, 1.9, 12).reshape(3, 4)
    with torch.no_grad():
        first = fresh(x)
        outs = [model(x) for _ in range(4)]
        assert torch.equal(outs[0], first)
        assert any(not torch.equal(o, first) for o in outs[1:]), "the layer keeps no state?"
        reset_states(model)
        assert torch.equal(model(x), first)


# ---------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make,match", [
    (lambda: LIF(tau=2, beta=0.5), "not both"),
    (lambda: LIF(tau=0.5), "tau"),
    (lambda: LIF(beta=1.0), "beta"),
    (lambda: SynapseFilter(tau=1.0), "tau"),
    (lambda: LinearRecurrent(8, nn.ReLU()), "ReLU"),
    (lambda: IF(threshold=0.0), "threshold"),
])
def test_bad_arguments_raise_config_error(make, match):
    """Bad layer arguments raise ConfigError saying what is wrong."""
    with pytest.raises(ConfigError, match=match):
        make()


def test_linear_recurrent_width_mismatch_is_reported_at_trace():
    """LinearRecurrent(8) fed 4 features cannot be traced: ConfigError naming the widths."""
    model = nn.Sequential(nn.Linear(3, 4), LinearRecurrent(8, LIF(tau=2.0)))
    with pytest.raises(Exception) as e:
        snncompile.trace(model, torch.zeros(2, 3))
    assert "8" in str(e.value)


def test_learned_layer_parameters_carry_into_the_runtime():
    """A learnable synapse tau, a learned leak and threshold (also inside a recurrent body), set
    away from their initial values, reach the runtime: outputs and all their gradients equal the
    standalone step loop's."""
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(3, 4), SynapseFilter(tau=3.0, learnable=True),
                          LIF(tau=2.0, learn_leak=True, learn_threshold=True),
                          LinearRecurrent(4, LIF(beta=0.7, learn_leak=True)), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].filter.inv_tau_logit.fill_(-0.3)
        model[2].neuron.leak_logit.fill_(0.37)
        model[2].neuron.threshold.fill_(0.9)
        model[3].neuron.neuron.leak_logit.fill_(1.1)
    params = _runtime_vs_standalone(model)
    by_value = {
        "synapse 1/tau logit": (model[1].filter.inv_tau_logit, [p for k, p in params.items() if "inv_tau_logit" in k]),
        "leak": (model[2].neuron.leak_logit, [p for k, p in params.items() if k.endswith("leak_logit") and ".body." not in k]),
        "threshold": (model[2].neuron.threshold, [p for k, p in params.items() if k.endswith("threshold")]),
        "body leak": (model[3].neuron.neuron.leak_logit, [p for k, p in params.items() if ".body." in k and k.endswith("leak_logit")]),
    }
    for name, (mine, found) in by_value.items():
        assert len(found) == 1, (name, list(params))
        torch.testing.assert_close(found[0].detach(), mine.detach(), atol=1e-6, rtol=0, msg=name)
        assert found[0].grad is not None and found[0].grad.abs() > 0, name
        torch.testing.assert_close(found[0].grad, mine.grad, atol=1e-5, rtol=0, msg=name)

