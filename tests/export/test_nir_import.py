"""``snncompile.from_nir`` on graphs written the way OTHER tools write them (Sinabs, SpikingJelly,
snnTorch, hand-written reset loops), built with nir's Python API and checked against the
independent NIR interpreter ``nir_sim.simulate`` (forward Euler, strict ``v > v_threshold``).

Weights, inputs, thresholds and time constants are dyadic wherever the arithmetic allows, so the
spike trains must agree exactly (threshold ties ``v == v_threshold`` happen and must NOT fire).

Two readings differ from a strict one on purpose and are tested with their warnings: a feedback
Affine's bias is added from the first step (as snnTorch does), and a reset loop that fires above
the threshold it subtracts gets a start offset (exact in real arithmetic only).
"""
import re

import nir
import numpy as np
import pytest
import torch

import snncompile
from snncompile.errors import ConfigError, SnnCompileError, UnsupportedOpError
from nir_sim import simulate

F32 = np.float32
RNG_SEED = 7


# ---------------------------------------------------------------- helpers

def graph(nodes, edges):
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def chain(*named, in_shape=(4,), out_shape=(3,)):
    """input -> named nodes in order -> output."""
    nodes = {"input": nir.Input(input_type=np.array(in_shape)), **dict(named),
             "output": nir.Output(output_type=np.array(out_shape))}
    names = list(nodes)
    return graph(nodes, list(zip(names, names[1:])))


def dyadic(shape, lo, hi, seed=RNG_SEED, denom=8):
    """Integers in [lo, hi) / denom as float32: exact in every sum below."""
    return (np.random.default_rng(seed).integers(lo, hi, shape) / denom).astype(F32)


def if_node(shape, thr=1.0, reset=0.0, r=1.0):
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return nir.IF(r=np.full(shape, r, F32), v_threshold=np.full(shape, thr, F32), v_reset=np.full(shape, reset, F32))


def lif_node(n, tau=2.0, r=2.0, thr=1.0, v_leak=0.0, reset=0.0):
    return nir.LIF(tau=np.full(n, tau), r=np.full(n, r), v_leak=np.full(n, v_leak), v_threshold=np.full(n, thr),
                   v_reset=np.full(n, reset))


def per_step(snn, x):
    """snncompile's output at every step, ``[T, N, ...]``."""
    y = snn.run_sequence(torch.from_numpy(x)).numpy()
    T, N = x.shape[:2]
    assert y.shape[:2] == (T, N)
    return y


def sim(g, x, dt=1.0):
    return simulate(g, x, dt=dt)["output"]


def ir(snn):
    return str(snn.semantic_graph)


W1 = dyadic((3, 4), -4, 9, seed=1)
B1 = np.array([0.125, 0.0, -0.25], F32)
W2 = dyadic((2, 3), -2, 9, seed=2, denom=4)
B2 = np.zeros(2, F32)


def sinabs_graph(r=1.0):
    """Affine -> IF -> Affine -> IF -> Output (Sinabs / SpikingJelly style: plain IF, reset to 0)."""
    return chain(("fc1", nir.Affine(weight=W1, bias=B1)), ("if1", if_node(3, r=r)),
                 ("fc2", nir.Affine(weight=W2, bias=B2)), ("if2", if_node(2, r=r)), out_shape=(2,))


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

WR = np.array([[0, -0.5, 0.25], [0.5, 0, -0.25], [0.25, 0.25, 0]], F32)


def rleaky_graph():
    sub = graph({"input": nir.Input(input_type=np.array([3])), "lif": lif_node(3), "w_rec": nir.Linear(weight=WR),
                 "output": nir.Output(output_type=np.array([3]))},
                [("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
    wo = np.array([[1, -0.5, 0.5], [0.5, 1, 0.25]], F32)
    return graph({"input": nir.Input(input_type=np.array([4])), "fc": nir.Affine(weight=W1, bias=B1), "rnn": sub,
                  "out_fc": nir.Affine(weight=wo, bias=np.zeros(2, F32)),
                  "output": nir.Output(output_type=np.array([2]))},
                 [("input", "fc"), ("fc", "rnn"), ("rnn", "out_fc"), ("out_fc", "output")])


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

def conv_graph(padding, C=4):
    wc = dyadic((C, 1, 3, 3), -2, 5, seed=12)
    hw = 8 if padding in ("same", 1) else 6
    wf = dyadic((3, C * (hw // 2) ** 2), -4, 5, seed=13)
    shape = (C, hw, hw)
    return chain(
        ("conv", nir.Conv2d(input_shape=(8, 8), weight=wc, stride=1, padding=padding, dilation=1, groups=1,
                            bias=np.full(C, 0.125, F32))),
        ("spk", if_node(shape)),
        ("pool", nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))),
        ("flat", nir.Flatten(input_type={"input": np.array([C, hw // 2, hw // 2])}, start_dim=0, end_dim=-1)),
        ("fc", nir.Affine(weight=wf, bias=np.zeros(3, F32))),
        ("li", nir.LI(tau=np.full(3, 2.0), r=np.full(3, 2.0), v_leak=np.zeros(3))),
        in_shape=(1, 8, 8))


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

WB = dyadic((3, 3), -4, 9, seed=17)
WO = dyadic((2, 3), -4, 9, seed=18)


def residual_graph(r_i=1.0):
    nodes = {"input": nir.Input(input_type=np.array([4])), "fc_a": nir.Affine(weight=W1, bias=B1), "if_a": if_node(3),
             "fc_b": nir.Affine(weight=WB, bias=np.zeros(3, F32)), "if_b": if_node(3),
             "fc_o": nir.Affine(weight=WO, bias=np.array([0.125, 0], F32)), "integ": nir.I(r=np.full(2, r_i)),
             "output": nir.Output(output_type=np.array([2]))}
    edges = [("input", "fc_a"), ("fc_a", "if_a"), ("if_a", "fc_b"), ("fc_b", "if_b"), ("if_a", "if_b"),
             ("if_b", "fc_o"), ("fc_o", "integ"), ("integ", "output")]
    return graph(nodes, edges)


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

def subtract_graph(theta=1.0, W=None, n=1):
    W = np.eye(n, dtype=F32) if W is None else W
    n = W.shape[0]
    nodes = {"input": nir.Input(input_type=np.array([W.shape[1]])), "fc": nir.Linear(weight=W),
             "mem": nir.I(r=np.ones(n)), "fire": nir.Threshold(threshold=np.full(n, theta)),
             "reset": nir.Scale(scale=np.full(n, -theta)), "output": nir.Output(output_type=np.array([n]))}
    edges = [("input", "fc"), ("fc", "mem"), ("mem", "fire"), ("fire", "reset"), ("reset", "mem"),
             ("fire", "output")]
    return graph(nodes, edges)


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


def subtract_recurrent_graph():
    return graph({"input": nir.Input(input_type=np.array([4])), "fc": nir.Affine(weight=W1, bias=B1),
               "mem": nir.I(r=np.ones(3)), "fire": nir.Threshold(threshold=np.ones(3)),
               "reset": nir.Scale(scale=-np.ones(3)), "rec": nir.Linear(weight=WR),
               "output": nir.Output(output_type=np.array([3]))},
              [("input", "fc"), ("fc", "mem"), ("mem", "fire"), ("fire", "reset"), ("reset", "mem"),
               ("fire", "rec"), ("rec", "mem"), ("fire", "output")])


def test_subtract_loop_with_recurrent_linear():
    g = subtract_recurrent_graph()
    snn = snncompile.from_nir(g)
    assert "recurrent" in ir(snn)
    x = dyadic((16, 4, 4), 0, 5, seed=21)
    rec = simulate(g, x, record=True)
    assert rec["fire"].sum() > 20 and np.abs(rec["mem"]).max() < 2
    assert np.array_equal(per_step(snn, x), rec["output"])


# ---------------------------------------------------------------- 9. errors

def _fc():
    return nir.Affine(weight=W1, bias=B1)


def _stateless_cycle():
    return graph({"input": nir.Input(input_type=np.array([3])), "a": nir.Scale(scale=np.full(3, 0.5)),
                  "b": nir.Linear(weight=np.eye(3, dtype=F32)), "spk": if_node(3),
                  "output": nir.Output(output_type=np.array([3]))},
                 [("input", "a"), ("a", "b"), ("b", "a"), ("a", "spk"), ("spk", "output")])


def _two_feedbacks():
    return graph({"input": nir.Input(input_type=np.array([3])), "spk": if_node(3),
                  "w1": nir.Linear(weight=np.eye(3, dtype=F32) / 2), "w2": nir.Linear(weight=np.eye(3, dtype=F32) / 4),
                  "output": nir.Output(output_type=np.array([3]))},
                 [("input", "spk"), ("spk", "w1"), ("w1", "spk"), ("spk", "w2"), ("w2", "spk"), ("spk", "output")])


def _conv(kernel, padding, thr=None):
    c = 2
    thr = np.ones((c, 4, 4), F32) if thr is None else thr
    return chain(("conv", nir.Conv2d(input_shape=(4, 4), weight=np.ones((c, 1) + kernel, F32) / 8, stride=1,
                                     padding=padding, dilation=1, groups=1, bias=np.zeros(c, F32))),
                 ("spk", nir.IF(r=np.ones((c, 4, 4)), v_threshold=thr, v_reset=np.zeros((c, 4, 4)))),
                 in_shape=(1, 4, 4), out_shape=(c, 4, 4))


def _leaky_subtract_loop():
    return graph({"input": nir.Input(input_type=np.array([3])),
                  "mem": nir.LI(tau=np.full(3, 2.0), r=np.ones(3), v_leak=np.zeros(3)),
                  "fire": nir.Threshold(threshold=np.ones(3)), "reset": nir.Scale(scale=-np.ones(3)),
                  "output": nir.Output(output_type=np.array([3]))},
                 [("input", "mem"), ("mem", "fire"), ("fire", "reset"), ("reset", "mem"), ("fire", "output")])


ERROR_CASES = {
    "delay": (lambda: chain(("fc", _fc()), ("dl", nir.Delay(delay=np.ones(3)))), r"node 'dl' is a Delay"),
    "threshold": (lambda: chain(("fc", _fc()), ("th", nir.Threshold(threshold=np.ones(3)))),
                  r"node 'th' is a Threshold: a Threshold outside an integrator loop"),
    "stateless_cycle": (_stateless_cycle, r"edge 'b' -> 'a' closes a cycle without a neuron"),
    "lif_tau": (lambda: chain(("fc", _fc()), ("lif", nir.LIF(tau=np.array([2.0, 2.0, 4.0]), r=np.ones(3),
                                                              v_leak=np.zeros(3), v_threshold=np.ones(3),
                                                              v_reset=np.zeros(3)))),
                r"LIF 'lif' has a tau that differs between neurons"),
    "if_v_reset": (lambda: chain(("fc", _fc()), ("spk", nir.IF(r=np.ones(3), v_threshold=np.ones(3),
                                                                v_reset=np.array([0.0, 0.25, 0.5])))),
                   r"IF 'spk' has a v_reset that differs between neurons"),
    "li_leak": (lambda: chain(("fc", _fc()), ("li", nir.LI(tau=np.full(3, 2.0), r=np.ones(3), v_leak=np.full(3, 0.5)))),
                r"LI 'li' leaks toward v_leak != 0"),
    "cubali": (lambda: chain(("fc", _fc()), ("cli", nir.CubaLI(tau_syn=np.full(3, 2.0), tau_mem=np.full(3, 2.0),
                                                                r=np.ones(3), v_leak=np.zeros(3), w_in=np.ones(3)))),
               r"node 'cli' is a CubaLI"),
    "conv_threshold": (lambda: _conv((3, 3), 1, thr=np.arange(32, dtype=F32).reshape(2, 4, 4) / 8 + 1),
                       r"IF 'spk' has a threshold that varies within a channel"),
    "two_feedbacks": (_two_feedbacks, r"2 feedback paths come back into 'spk'"),
    "same_even_kernel": (lambda: _conv((2, 2), "same"), r"Conv2d 'conv' has padding 'same' with an even kernel"),
    "leaky_subtract_loop": (_leaky_subtract_loop, r"LI 'mem' is a LI loop without snncompile's metadata"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_unsupported_graphs_raise_naming_the_node(case):
    make, match = ERROR_CASES[case]
    with pytest.raises(UnsupportedOpError, match=match) as info:
        snncompile.from_nir(make())
    assert isinstance(info.value, SnnCompileError)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"no such file .*missing\.nir"):
        snncompile.from_nir(str(tmp_path / "missing.nir"))
    with pytest.raises(ConfigError, match=r"no such file 'missing\.nir'"):
        snncompile.from_nir("missing.nir")


def test_file_that_is_not_nir(tmp_path):
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"definitely not hdf5\x00\x01\x02")
    with pytest.raises(ConfigError, match=r"bad\.nir.* is not a NIR file"):
        snncompile.from_nir(bad)


def test_not_a_graph():
    with pytest.raises(ConfigError, match=r"expected a nir\.NIRGraph or a path.*got int"):
        snncompile.from_nir(42)


def test_errors_are_snncompile_errors():
    assert issubclass(UnsupportedOpError, SnnCompileError) and issubclass(ConfigError, SnnCompileError)


# ---------------------------------------------------------------- 10. written to disk

@pytest.mark.parametrize("make, shape", [(rleaky_graph, (16, 4, 4)), (lambda: conv_graph("same"), (8, 2, 1, 8, 8)),
                                         (residual_graph, (16, 4, 4))])
def test_written_graph_reads_back_the_same(tmp_path, make, shape):
    g = make()
    path = tmp_path / "net.nir"
    nir.write(str(path), g)
    x = dyadic(shape, 0, 9, seed=22)
    a = per_step(snncompile.from_nir(g), x)
    b = per_step(snncompile.from_nir(str(path)), x)
    c = per_step(snncompile.from_nir(path), x)  # a pathlib.Path
    assert np.array_equal(a, b) and np.array_equal(a, c)
    want = sim(nir.read(str(path)), x)
    if make is residual_graph:  # a readout's steps are its current: the I's state is their running sum
        b = np.cumsum(b, axis=0)
    assert np.allclose(b, want, atol=1e-5)


# ---------------------------------------------------------------- names and outputs

@pytest.mark.parametrize("neuron, fc", [("if", "fc"), ("class", "fc"), ("forward", "fc"), ("training", "fc"),
                                        ("spk", "self")])
def test_node_names_that_are_python_words(neuron, fc):
    g = chain((fc, nir.Affine(weight=W1, bias=B1)), (neuron, if_node(3)))
    x = dyadic((8, 2, 4), 0, 13, seed=23)
    assert np.array_equal(per_step(snncompile.from_nir(g), x), sim(g, x))


def test_odd_node_names_work():
    g = chain(("fc-1 (dense)", nir.Affine(weight=W1, bias=B1)), ("0", if_node(3)))
    x = dyadic((8, 2, 4), 0, 13, seed=23)
    assert np.array_equal(per_step(snncompile.from_nir(g), x), sim(g, x))


def test_two_inputs_in_name_order():
    """Several Inputs are taken in the order of their names (the order nir.read gives back, so a
    graph means the same in memory and from a file)."""
    g = graph({"x_b": nir.Input(input_type=np.array([4])), "x_a": nir.Input(input_type=np.array([3])),
               "fc": nir.Affine(weight=W1, bias=B1), "fcb": nir.Linear(weight=np.full((3, 3), 0.25, F32)),
               "spk": if_node(3), "output": nir.Output(output_type=np.array([3]))},
              [("x_b", "fc"), ("fc", "spk"), ("x_a", "fcb"), ("fcb", "spk"), ("spk", "output")])
    xb, xa = dyadic((8, 2, 4), 0, 9, seed=24), dyadic((8, 2, 3), 0, 9, seed=25)
    snn = snncompile.from_nir(g)
    y = snn.run_sequence(torch.from_numpy(xa), torch.from_numpy(xb)).numpy().reshape(8, 2, 3)
    assert np.array_equal(y, simulate(g, {"x_b": xb, "x_a": xa})["output"])


def test_two_outputs_run_or_are_refused():
    g = graph({"input": nir.Input(input_type=np.array([4])), "fc": nir.Affine(weight=W1, bias=B1), "spk": if_node(3),
               "lin": nir.Linear(weight=WO), "integ": nir.I(r=np.ones(2)),
               "out_s": nir.Output(output_type=np.array([3])), "out_i": nir.Output(output_type=np.array([2]))},
              [("input", "fc"), ("fc", "spk"), ("spk", "out_s"), ("spk", "lin"), ("lin", "integ"), ("integ", "out_i")])
    try:
        snn = snncompile.from_nir(g)
    except SnnCompileError:
        return  # refusing is fine
    x = dyadic((8, 2, 4), 0, 13, seed=26)
    ys = snn.run_sequence(torch.from_numpy(x))
    assert isinstance(ys, (tuple, list)) and len(ys) == 2


def test_sequence_input_brings_its_own_T():
    g = sinabs_graph()
    snn = snncompile.from_nir(g, T=4)
    x = dyadic((12, 3, 4), 0, 9, seed=27)
    y = per_step(snn, x)
    assert y.shape[0] == 12
    assert np.array_equal(y, sim(g, x))
    with pytest.raises(ConfigError, match="steps"):
        snn.run_sequence(torch.from_numpy(x), T=5)


def test_threshold_printed_is_next_float_above():
    """The IR threshold is the float32 just above NIR's v_threshold (v >= it  <=>  v > v_threshold)."""
    snn = snncompile.from_nir(sinabs_graph())
    th = [float(n.params["threshold"]) for n in snn.semantic_graph.nodes if n.op == "neuron"]
    assert th == [float(np.nextafter(F32(1), F32(2)))] * 2
    assert re.search(r"threshold=1\b", ir(snn))
