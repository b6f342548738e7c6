"""NIR's discrete-time semantics (tests/export/nir_sim.py, a numpy interpreter that knows nothing of
snncompile) reproduce snncompile's runtime bit for bit on exported graphs: every neuron layer's
spikes at every step, and the readout. The nets have dyadic weights and inputs (nir_cases.py), so
no difference can hide in rounding: threshold ties (v == theta) happen and must fire as ours do."""
import numpy as np
import pytest
import torch

import snncompile
from snncompile import layers
from nir_cases import (Concat, Residual, compare, compiled, conv1d_net, conv_net, dyadic_, dyadic_input,
                       nir_spikes, our_spikes, recurrent_net)

T = 8


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("v_init", [0.0, 0.5])
def test_conv_pool_net_spikes_match_nir(backend, v_init):
    model = dyadic_(conv_net(), seed=1)
    x = dyadic_input((6, 1, 8, 8))
    snn = compiled(model, x, v_init=v_init, backend=backend)
    graph = snncompile.to_nir(snn)
    assert compare(snn, graph, x, T) == 2
    ours, _ = our_spikes(snn, x, T)
    assert sum(float(v.sum()) for v, _ in ours.values()) > 50  # the layers do fire


def test_threshold_ties_fire_as_ours():
    """v == theta exactly: our v >= theta fires, NIR's v > below(theta) fires too (a plain v > theta
    would not): a net built so that the first step lands exactly on the threshold."""
    model = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.ReLU(), torch.nn.Linear(1, 1))
    with torch.no_grad():
        model[0].weight.fill_(0.5)
        model[2].weight.fill_(1.0)
        model[2].bias.zero_()
    x = torch.full((1, 1), 1.0)
    snn = compiled(model, x, v_init=0.5)
    ours, _ = our_spikes(snn, x, T)
    (spikes, _), = ours.values()
    assert spikes.reshape(-1).tolist() == [1.0, 0.0] * (T // 2)  # 0.5 + 0.5 = 1 = theta every other step
    graph = snncompile.to_nir(snn)
    compare(snn, graph, x, T)
    # written exactly at theta - v0, NIR's strict comparison would miss every tie: one step late
    fire = next(n for n in graph.nodes if n.endswith(".fire"))
    graph.nodes[fire].threshold = np.full_like(graph.nodes[fire].threshold, 0.5)
    assert nir_spikes(graph, x, T)[fire].reshape(-1).tolist() == [0.0, 1.0] * (T // 2)


def test_residual_net_spikes_match_nir():
    model = dyadic_(Residual(), seed=2)
    x = dyadic_input((4, 1, 8, 8), seed=1)
    snn = compiled(model, x)
    graph = snncompile.to_nir(snn)
    # the add is two edges into the neuron after it
    into = {}
    for a, b in graph.edges:
        into.setdefault(b, []).append(a)
    assert any(len(v) == 3 for v in into.values())  # conv, skip, and the neuron's own reset
    assert compare(snn, graph, x, T) == 3


def test_concat_and_conv1d_match_nir():
    x = dyadic_input((4, 1, 8, 8), seed=2)
    snn = compiled(dyadic_(Concat(), seed=3), x)
    assert compare(snn, snncompile.to_nir(snn), x, T) == 2
    x1 = dyadic_input((4, 2, 9), seed=3)
    snn1 = compiled(dyadic_(conv1d_net(), seed=4), x1)
    assert compare(snn1, snncompile.to_nir(snn1), x1, T) == 2


@pytest.mark.parametrize("kind", ["linear", "elementwise"])
@pytest.mark.parametrize("neuron", ["if", "lif-tau", "lif-beta"])
def test_recurrent_nets_match_nir(kind, neuron):
    cell = {"if": lambda: layers.IF(1.0, v_init=0.5), "lif-tau": lambda: layers.LIF(tau=2.0, v_init=0.5),
            "lif-beta": lambda: layers.LIF(beta=0.5)}[neuron]()
    model = dyadic_(recurrent_net(kind, cell), seed=5)
    x = dyadic_input((5, 5), seed=4)
    snn = snncompile.to_trainable(model, T=T, example_input=x)
    graph = snncompile.to_nir(snn)
    assert compare(snn, graph, x, T) == 1
    # the feedback is a cycle in the graph
    fire = [n for n in graph.nodes if n.endswith(".fire")]
    assert fire and any(a == fire[0] and b != fire[0].replace(".fire", ".reset") for a, b in graph.edges)


def test_recurrent_feedback_bias_counts_from_the_first_step():
    """Our container adds the feedback bias from step 1; a cycle's edge carries nothing at step 1,
    so the export puts the bias on the input path (an identity Affine) and NIR agrees exactly."""
    model = dyadic_(recurrent_net("linear", layers.IF(1.0, v_init=0.5), bias=True), seed=7)
    x = dyadic_input((5, 5), seed=6)
    snn = snncompile.to_trainable(model, T=T, example_input=x)
    graph = snncompile.to_nir(snn)
    assert any(n.endswith(".bias") for n in graph.nodes)
    assert compare(snn, graph, x, T) == 1


@pytest.mark.parametrize("options", [dict(neuron="lif", tau=2.0), dict(neuron="lif", beta=0.5, v_init=0.5),
                                     dict(neuron="if", v_init=0.5)])
def test_trainable_lif_and_if_match_nir(options):
    model = dyadic_(conv_net(), seed=6)
    x = dyadic_input((4, 1, 8, 8), seed=5)
    snn = snncompile.to_trainable(model, T=T, example_input=x, **options)
    snn.eval()
    assert compare(snn, snncompile.to_nir(snn), x, T) == 2


def test_plain_if_form_is_what_nir_runs_and_not_ours():
    """form='if' is another neuron (reset to 0): NIR runs it as written, and where both get the same
    current (the first layer) it never spikes more than ours and here spikes less (the part above
    threshold is lost at each spike)."""
    model = dyadic_(conv_net(), seed=1)
    x = dyadic_input((6, 1, 8, 8))
    snn = compiled(model, x)
    with pytest.warns(UserWarning, match="reset the membrane to 0"):
        plain = snncompile.to_nir(snn, form="if")
    assert {type(n).__name__ for n in plain.nodes.values()} >= {"IF"}
    assert not any(type(n).__name__ == "Threshold" for n in plain.nodes.values())
    again = snncompile.from_nir(plain)
    compare(again, plain, x, T, imported=True)  # the imported plain graph is what NIR runs
    first = min(our_spikes(snn, x, T)[0])
    ours, theirs = our_spikes(snn, x, T)[0][first][0], our_spikes(again, x, T)[0]
    mine = next(v for v, _ in theirs.values())
    assert (mine.sum(0) <= ours.sum(0)).all() and mine.sum() < ours.sum()
