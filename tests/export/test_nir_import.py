"""``snncompile.from_nir`` on graphs written the way OTHER tools write them (Sinabs, SpikingJelly,
snnTorch, hand-written reset loops), built with nir's Python API and checked against the
independent NIR interpreter ``nir_sim.simulate`` (forward Euler, strict ``v > v_threshold``).

Weights, inputs, thresholds and time constants are dyadic wherever the arithmetic allows, so the
spike trains must agree exactly (threshold ties ``v == v_threshold`` happen and must NOT fire).

Two readings differ from a strict one on purpose and are tested with their warnings: a feedback
Affine's bias is added from the first step (as snnTorch does), and a reset loop that fires above
the threshold it subtracts gets a start offset (exact in real arithmetic only).
"""
import nir
import numpy as np
import pytest
import torch

import snncompile
from nir_sim import simulate
from nir_import_cases import *  # noqa: F401,F403  (graph builders and helpers)


# ---------------------------------------------------------------- 1. Sinabs-style IF net

@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_sinabs_if_net_spike_exact(backend):
    g = sinabs_graph()
    snn = snncompile.from_nir(g, backend=backend)
    text = ir(snn)
    assert text.count("family=if") == 2 and text.count("reset=value") == 2
    x = dyadic((16, 5, 4), 0, 9, seed=3)
    want = sim(g, x)
    assert want.sum() > 20  # the layers do fire
    assert np.array_equal(per_step(snn, x), want)


def test_threshold_tie_does_not_fire():
    """v == v_threshold exactly must not fire (NIR's strict >); 1.5 > 1 does."""
    g = chain(("fc", nir.Linear(weight=np.eye(2, dtype=F32))), ("spk", if_node(2)), in_shape=(2,), out_shape=(2,))
    x = np.tile(np.array([0.5, 0.25], F32), (9, 1, 1))
    want = sim(g, x)
    # 0.5: v = .5, 1 (tie, no spike), 1.5 -> spike; 0.25: v = 1 at step 4, spikes at step 5
    assert want[:, 0, 0].tolist() == [0, 0, 1] * 3
    assert want[:, 0, 1].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert np.array_equal(per_step(snncompile.from_nir(g), x), want)


def test_if_thresholds_and_reset_value_per_neuron():
    """Per-neuron thresholds (1, 0.5, 2) and a nonzero v_reset, r varying per neuron."""
    g = chain(("fc", nir.Affine(weight=W1, bias=B1)),
              ("spk", nir.IF(r=np.array([1.0, 2.0, 0.5]), v_threshold=np.array([1.0, 0.5, 2.0]),
                             v_reset=np.full(3, 0.25))))
    x = dyadic((16, 4, 4), -2, 13, seed=4)
    snn = snncompile.from_nir(g)
    assert "v_reset=0.25" in ir(snn)
    assert np.array_equal(per_step(snn, x), sim(g, x))


def test_spiking_output_keeps_batch_dim():
    """An Output fed by spikes is read out as their time average (a readout is added)."""
    g = sinabs_graph()
    snn = snncompile.from_nir(g)
    x = dyadic((8, 3, 4), 0, 9, seed=3)
    assert tuple(snn.run_sequence(torch.from_numpy(x)).shape) == (8, 3, 2)
    y = snn(torch.from_numpy(x)).numpy()
    assert y.shape == (3, 2)
    assert np.allclose(y, sim(g, x).mean(0), atol=1e-6)


# ---------------------------------------------------------------- 2. SpikingJelly-style r = 1/dt

def test_spikingjelly_r_is_one_over_dt():
    dt = 1e-4
    g = sinabs_graph(r=1 / dt)
    x = dyadic((16, 5, 4), 0, 9, seed=3)
    snn = snncompile.from_nir(g, dt=dt)
    assert "scale" not in ir(snn)  # dt*r == 1: no input scaling left
    ref = sim(sinabs_graph(), x)  # the same net with dt = 1, r = 1
    assert np.array_equal(sim(g, x, dt=dt), ref)
    assert np.array_equal(per_step(snn, x), ref)


def test_spikingjelly_graph_read_without_dt_is_scaled_wrongly():
    """A documented pitfall: the graph's dt is not in a foreign graph, so the default dt = 1
    reads r = 1e4 as a gain of 1e4 on every input current."""
    dt = 1e-4
    g = sinabs_graph(r=1 / dt)
    x = dyadic((16, 5, 4), 0, 9, seed=3)
    wrong = snncompile.from_nir(g)
    assert "scale" in ir(wrong)
    assert np.array_equal(per_step(wrong, x), sim(g, x, dt=1.0))  # it is the dt = 1 reading, exactly
    assert not np.array_equal(per_step(wrong, x), per_step(snncompile.from_nir(g, dt=dt), x))


# ---------------------------------------------------------------- 3. snnTorch Leaky

def test_snntorch_leaky_export():
    dt, beta, n = 1e-4, 0.5, 3
    tau = np.full(n, dt / (1 - beta))
    g = chain(("fc", nir.Affine(weight=W1, bias=B1)),
              ("lif", nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n))))
    snn = snncompile.from_nir(g, dt=dt)
    assert "family=lif" in ir(snn) and "reset=value" in ir(snn)
    x = dyadic((16, 4, 4), 0, 13, seed=5)
    y = per_step(snn, x)
    want = sim(g, x, dt=dt)
    assert np.allclose(y, want, atol=1e-5)
    # snnTorch's own loop: v = beta*v + x; spike v > thr; reset to 0
    cur = x @ W1.T + B1
    v, hand = np.zeros((4, n), F32), []
    for t in range(16):
        v = F32(beta) * v + cur[t]
        s = v > 1
        v = np.where(s, 0, v).astype(F32)
        hand.append(s.astype(F32))
    hand = np.stack(hand)
    assert hand.sum() > 20
    assert np.allclose(y, hand, atol=1e-5)


def test_lif_with_leak_and_reset_value():
    g = chain(("fc", nir.Affine(weight=W1, bias=B1)), ("lif", lif_node(3, v_leak=0.25, reset=-0.5)))
    x = dyadic((16, 4, 4), -2, 13, seed=6)
    snn = snncompile.from_nir(g)
    assert "family=lif" in ir(snn)
    assert np.allclose(per_step(snn, x), sim(g, x), atol=1e-5)


# ---------------------------------------------------------------- 4. snnTorch RLeaky-style recurrence

def test_rleaky_subgraph_becomes_recurrent():
    g = rleaky_graph()
    snn = snncompile.from_nir(g)
    text = ir(snn)
    assert "recurrent" in text and "family=lif" in text and "kind=state" in text
    x = dyadic((16, 4, 4), 0, 13, seed=8)
    rec = simulate(g, x, record=True)
    assert rec["rnn.lif"].sum() > 20 and np.any(rec["rnn.w_rec"] != 0)  # the feedback matters
    assert np.allclose(per_step(snn, x), rec["output"], atol=1e-5)


def test_self_loop_is_elementwise_recurrence():
    g = graph({"input": nir.Input(input_type=np.array([4])), "fc": nir.Affine(weight=W1, bias=B1),
               "spk": if_node(3, thr=2.0), "output": nir.Output(output_type=np.array([3]))},
              [("input", "fc"), ("fc", "spk"), ("spk", "spk"), ("spk", "output")])
    snn = snncompile.from_nir(g)
    assert "recurrent" in ir(snn)
    x = dyadic((16, 4, 4), 0, 13, seed=9)
    assert np.array_equal(per_step(snn, x), sim(g, x))


def test_feedback_affine_bias_is_added_from_the_first_step_with_a_warning():
    """A strict reading of the cycle (its delayed edge carries 0 at step 1) adds the feedback bias
    from step 2; snncompile (like snnTorch's RLeaky, V(0) + b) adds it from step 1, and says so."""
    g = graph({"input": nir.Input(input_type=np.array([1])), "spk": if_node(1),
               "rec": nir.Affine(weight=np.zeros((1, 1), F32), bias=np.array([0.75], F32)),
               "output": nir.Output(output_type=np.array([1]))},
              [("input", "spk"), ("spk", "rec"), ("rec", "spk"), ("spk", "output")])
    x = np.full((4, 1, 1), 0.5, F32)
    assert sim(g, x).ravel().tolist() == [0, 1, 1, 1]  # step 1: v = 0.5, no feedback yet
    with pytest.warns(UserWarning, match="added from the first step"):
        snn = snncompile.from_nir(g)
    assert per_step(snn, x).ravel().tolist() == [1, 1, 1, 1]  # v = 0.5 + 0.75 at step 1


# ---------------------------------------------------------------- 5. CubaLIF (snnTorch Synaptic)

@pytest.mark.parametrize("alpha, beta, dt", [(0.5, 0.75, 1.0), (0.5, 0.75, 1e-3)])
def test_snntorch_synaptic_cubalif(alpha, beta, dt):
    n = 3
    tau_syn, tau_mem = np.full(n, dt / (1 - alpha)), np.full(n, dt / (1 - beta))
    g = chain(("fc", nir.Affine(weight=W1, bias=B1)),
              ("syn", nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / dt, v_leak=np.zeros(n),
                                  v_threshold=np.ones(n), v_reset=np.zeros(n), w_in=tau_syn / dt)))
    snn = snncompile.from_nir(g, dt=dt)
    assert "synapse_filter" in ir(snn) and "family=lif" in ir(snn)
    x = dyadic((16, 4, 4), 0, 13, seed=10)
    y = per_step(snn, x)
    assert np.allclose(y, sim(g, x, dt=dt), atol=1e-5)
    # snnTorch's Synaptic: syn = alpha*syn + x; mem = beta*mem + syn; spike mem > 1, reset to 0
    cur = x @ W1.T + B1
    i, v, hand = np.zeros((4, n), F32), np.zeros((4, n), F32), []
    for t in range(16):
        i = F32(alpha) * i + cur[t]
        v = F32(beta) * v + i
        s = v > 1
        v = np.where(s, 0, v).astype(F32)
        hand.append(s.astype(F32))
    assert np.stack(hand).sum() > 20
    assert np.allclose(y, np.stack(hand), atol=1e-5)


def test_cubalif_general_taus():
    n = 3
    g = chain(("fc", nir.Affine(weight=W1, bias=B1)),
              ("cuba", nir.CubaLIF(tau_syn=np.full(n, 4.0), tau_mem=np.full(n, 2.0), r=np.full(n, 2.0),
                                   v_leak=np.zeros(n), v_threshold=np.full(n, 0.5), v_reset=np.zeros(n),
                                   w_in=np.full(n, 2.0))))
    x = dyadic((16, 4, 4), 0, 13, seed=11)
    want = sim(g, x)
    assert want.sum() > 10
    assert np.allclose(per_step(snncompile.from_nir(g), x), want, atol=1e-5)


# ---------------------------------------------------------------- 6. a conv net with an LI readout

@pytest.mark.parametrize("padding, want_pad", [("same", "padding=1"), (1, "padding=1"), (0, "padding=0")])
def test_conv_net_with_li_readout(padding, want_pad):
    g = conv_graph(padding)
    snn = snncompile.from_nir(g)
    text = ir(snn)
    for op in ("conv2d", want_pad, "family=if", "sumpool2d", "flatten", "synapse_filter"):
        assert op in text, op
    x = dyadic((8, 2, 1, 8, 8), 0, 9, seed=14)
    rec = simulate(g, x, record=True)
    assert 0.1 < rec["spk"].mean() < 0.9
    assert np.allclose(per_step(snn, x), rec["output"], atol=1e-5)


def test_conv_threshold_per_channel():
    wc = dyadic((2, 1, 3, 3), -2, 5, seed=15)
    thr = np.stack([np.full((4, 4), 1.0), np.full((4, 4), 0.5)]).astype(F32)
    g = chain(("conv", nir.Conv2d(input_shape=(4, 4), weight=wc, stride=1, padding=1, dilation=1, groups=1,
                                  bias=np.array([0.125, 0], F32))),
              ("spk", nir.IF(r=np.ones((2, 4, 4)), v_threshold=thr, v_reset=np.zeros((2, 4, 4)))),
              in_shape=(1, 4, 4), out_shape=(2, 4, 4))
    x = dyadic((8, 2, 1, 4, 4), 0, 9, seed=16)
    assert np.array_equal(per_step(snncompile.from_nir(g), x), sim(g, x))


# ---------------------------------------------------------------- 7. residual + I readout

def test_residual_sum_and_integrator_readout():
    g = residual_graph()
    snn = snncompile.from_nir(g)
    text = ir(snn)
    assert "add(" in text and "readout(" in text and text.count("family=if") == 2
    T, dt, r = 16, 1.0, 1.0
    x = dyadic((T, 4, 4), 0, 13, seed=19)
    rec = simulate(g, x, record=True)
    assert rec["if_a"].sum() > 10 and rec["if_b"].sum() > 10
    y = snn(torch.from_numpy(x)).numpy()
    assert y.shape == (4, 2)
    assert np.array_equal(y, rec["output"][-1] / F32(T * dt * r))
    # the running average after every step: the integrator's state / t
    steps = snn(torch.from_numpy(x), return_all_steps=True).numpy()
    t = np.arange(1, T + 1, dtype=F32).reshape(-1, 1, 1)
    assert np.allclose(steps, rec["output"] / t, atol=1e-6)


def test_integrator_readout_with_r_is_state_over_T():
    """With r != 1 the output is the integrator's state / T (CONVENTIONS: "its state after T steps
    divided by T"), i.e. dt*r times the time average of its input current — not state / (T*dt*r)
    as the comment in nir_read.py's ``I`` branch says."""
    T = 16
    g = residual_graph(r_i=2.0)
    x = dyadic((T, 4, 4), 0, 13, seed=19)
    y = snncompile.from_nir(g)(torch.from_numpy(x)).numpy()
    state = sim(g, x)[-1]
    assert np.allclose(y, state / T, atol=1e-6)
    assert not np.allclose(y, state / (T * 2.0), atol=1e-3)


# ---------------------------------------------------------------- 8. reset by subtraction, by hand

@pytest.mark.parametrize("theta, hi", [(1.0, 9), (0.5, 7)])
def test_hand_written_subtract_loop(theta, hi):
    g = subtract_graph(theta, W=W1 / 2)
    snn = snncompile.from_nir(g)
    text = ir(snn)
    assert "family=if" in text and "reset=value" not in text and "recurrent" not in text
    assert [n.attrs["reset"] for n in snn.semantic_graph.nodes if n.op == "neuron"] == ["subtract"]
    x = dyadic((16, 4, 4), 0, hi, seed=20)
    rec = simulate(g, x, record=True)
    assert rec["fire"].sum() > 20
    assert np.abs(rec["mem"]).max() < 2 * theta  # see test_subtract_loop_ties_far_from_zero
    assert np.array_equal(per_step(snn, x), rec["output"])


def test_subtract_loop_ties_near_zero():
    """Ties v == theta after a reset (1.0 per step: v = 1 -> 2 fires -> 1 ...) and from below."""
    g = subtract_graph()
    snn = snncompile.from_nir(g)
    for seq in ([0.5] * 8, [1.0] * 8, [0.75] * 8, [-1.5, 1, 0.5, 1, 1, 1, 0, 0]):
        x = np.array(seq, F32).reshape(-1, 1, 1)
        assert np.array_equal(per_step(snn, x), sim(g, x)), seq


@pytest.mark.parametrize("seq", [[3, 0, 0, 0], [-3, 2, 1, 1, 0, 0]])
def test_subtract_loop_firing_above_its_reset_is_read_with_a_warning(seq):
    """A loop that fires above theta (strict) but subtracts theta is not our IF (which fires at
    the theta it subtracts): it is read with a start offset, exact in real arithmetic only, and
    the importer says so. Here the offset is rounded away once |v| >= 2 theta, and a tie fires."""
    g = subtract_graph()
    x = np.array(seq, F32).reshape(-1, 1, 1)
    with pytest.warns(UserWarning, match="real arithmetic"):
        snn = snncompile.from_nir(g)
    assert not np.array_equal(per_step(snn, x), sim(g, x))  # the documented float32 difference


def test_subtract_loop_with_recurrent_linear():
    g = subtract_recurrent_graph()
    snn = snncompile.from_nir(g)
    assert "recurrent" in ir(snn)
    x = dyadic((16, 4, 4), 0, 5, seed=21)
    rec = simulate(g, x, record=True)
    assert rec["fire"].sum() > 20 and np.abs(rec["mem"]).max() < 2
    assert np.array_equal(per_step(snn, x), rec["output"])
