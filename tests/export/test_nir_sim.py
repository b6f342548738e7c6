"""Tests of the NIR oracle interpreter (nir_sim.py) against hand-computed values and
torch.nn.functional (torch is used here only, never in nir_sim)."""
import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as tF

from nir_sim import simulate

F32 = np.float32


def g(nodes, edges):
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def inp(*shape):
    return nir.Input(input_type=np.array(shape))


def out(*shape):
    return nir.Output(output_type=np.array(shape))


def chain(node, in_shape, out_shape):
    """input -> node -> output."""
    return g({"input": inp(*in_shape), "n": node, "output": out(*out_shape)},
             [("input", "n"), ("n", "output")])


def const(value, T, N=1, n=1):
    return np.full((T, N, n), value, dtype=F32)


def spike_steps(train):
    """1-based steps at which a [T, 1, 1] train spikes."""
    return list(np.flatnonzero(train[:, 0, 0]) + 1)


def if_node(n=1, thr=1.0, reset=0.0, r=1.0):
    return nir.IF(r=np.full(n, r), v_threshold=np.full(n, thr), v_reset=np.full(n, reset))


# ---------------------------------------------------------------- stateful nodes

def test_if_constant_input_spikes_every_second_step():
    y = simulate(chain(if_node(), [1], [1]), const(0.6, 8))["output"]
    assert spike_steps(y) == [2, 4, 6, 8]  # v: .6, 1.2 -> fire -> 0, .6, 1.2, ...
    assert y.dtype == np.float32 and y.shape == (8, 1, 1)


def test_if_threshold_is_strict():
    # 0.5 + 0.5 == 1.0 exactly: equal to the threshold does not fire, 1.5 does.
    rec = simulate(chain(if_node(), [1], [1]), const(0.5, 9), record=True)
    assert spike_steps(rec["output"]) == [3, 6, 9]
    assert np.array_equal(rec["n"], rec["output"])


def test_if_reset_value_r_and_dt():
    # v += dt*r*x = 0.5*2*0.75 = 0.75 per step; fire above 1, reset to 0.25.
    node = if_node(thr=1.0, reset=0.25, r=2.0)
    y = simulate(chain(node, [1], [1]), const(0.75, 6), dt=0.5)["output"]
    # v: .75, 1.5 F ->.25, 1.0 (no), 1.75 F -> .25, 1.0, 1.75 F
    assert spike_steps(y) == [2, 4, 6]


def test_integrator_with_dt():
    node = nir.I(r=np.array([1.0, 2.0]))
    x = np.array([[[1.0, 1.0]], [[0.5, -1.0]], [[0.0, 0.25]]], dtype=F32)
    y = simulate(chain(node, [2], [2]), x, dt=0.5)["output"]
    want = np.array([[0.5, 1.0], [0.75, 0.0], [0.75, 0.25]], dtype=F32)[:, None]
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-7)


def test_lif_and_li_hand_values():
    lif = nir.LIF(tau=np.array([2.0]), r=np.array([1.0]), v_leak=np.array([0.0]),
                  v_threshold=np.array([1.0]), v_reset=np.array([0.0]))
    # v: .75, 1.125 F -> 0, .75, 1.125 F
    assert spike_steps(simulate(chain(lif, [1], [1]), const(1.5, 4))["output"]) == [2, 4]
    li = nir.LI(tau=np.array([2.0]), r=np.array([1.0]), v_leak=np.array([1.0]))
    y = simulate(chain(li, [1], [1]), const(1.0, 3))["output"][:, 0, 0]
    # v <- v + (1 - v + 1)/2: 1, 1.5, 1.75
    np.testing.assert_allclose(y, [1.0, 1.5, 1.75], rtol=0, atol=1e-7)


def _loop_lif(x, tau, r, vl, th, vr, dt, spiking=True):
    v, outs = np.zeros(x.shape[1:], F32), []
    for xt in x:
        v = v + dt * (vl - v + r * xt) / tau
        if spiking:
            z = v > th
            v = np.where(z, vr, v)
            outs.append(z.astype(F32))
        else:
            outs.append(v)
    return np.stack(outs)


def test_lif_and_li_against_loop():
    rng = np.random.default_rng(0)
    tau, r = rng.uniform(1.5, 5, 4).astype(F32), rng.uniform(0.5, 2, 4).astype(F32)
    vl, th, vr = rng.uniform(-.2, .2, 4).astype(F32), rng.uniform(.5, 1, 4).astype(F32), F32([0, .1, -.1, 0])
    x = rng.uniform(-0.5, 2.0, (30, 3, 4)).astype(F32)
    dt = F32(0.7)
    lif = nir.LIF(tau=tau, r=r, v_leak=vl, v_threshold=th, v_reset=vr)
    z = simulate(chain(lif, [4], [4]), x, dt=0.7)["output"]
    want = _loop_lif(x, tau, r, vl, th, vr, dt)
    assert want.sum() > 10 and np.array_equal(z, want)
    v = simulate(chain(nir.LI(tau=tau, r=r, v_leak=vl), [4], [4]), x, dt=0.7)["output"]
    np.testing.assert_allclose(v, _loop_lif(x, tau, r, vl, th, vr, dt, spiking=False), rtol=1e-6, atol=1e-7)


def cuba(cls, thr=None, w_in=1.0):
    kw = dict(tau_syn=np.array([2.0]), tau_mem=np.array([2.0]), r=np.array([1.0]),
              v_leak=np.array([0.0]), w_in=w_in)
    if thr is not None:
        kw.update(v_threshold=np.array([thr]), v_reset=np.array([0.0]))
    return cls(**kw)


def test_cuba_membrane_reads_this_steps_current():
    pulse = np.array([1.0, 0.0, 0.0], F32).reshape(3, 1, 1)
    v = simulate(chain(cuba(nir.CubaLI), [1], [1]), pulse)["output"][:, 0, 0]
    # i: .5, .25, .125 ; v: .25 (reads the NEW i; old i would give 0), .25, .1875
    np.testing.assert_allclose(v, [0.25, 0.25, 0.1875], rtol=0, atol=1e-7)
    v2 = simulate(chain(cuba(nir.CubaLI, w_in=2.0), [1], [1]), pulse)["output"][:, 0, 0]
    np.testing.assert_allclose(v2, [0.5, 0.5, 0.375], rtol=0, atol=1e-7)
    z = simulate(chain(cuba(nir.CubaLIF, thr=0.2), [1], [1]), pulse)["output"][:, 0, 0]
    assert list(z) == [1.0, 0.0, 0.0]  # v1 = .25 > .2 fires; then v = .125, .125


# ---------------------------------------------------------------- stateless nodes

def _conv_graph(node, x):
    return simulate(chain(node, x.shape[2:], [1]), x)["output"]


@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (1, 0, 1, 1), ((2, 1), (1, 2), (1, 2), 2), (1, "same", (2, 1), 1), (2, "valid", 1, 4), (1, 1, 2, 2)])
def test_conv2d_matches_torch(stride, padding, dilation, groups):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 7, 8)).astype(F32)
    w = rng.standard_normal((4, 4 // groups, 3, 3)).astype(F32)
    b = rng.standard_normal(4).astype(F32)
    node = nir.Conv2d(input_shape=(7, 8), weight=w, bias=b, stride=stride, padding=padding,
                      dilation=dilation, groups=groups)
    y = _conv_graph(node, x)
    want = tF.conv2d(torch.from_numpy(x.reshape(6, 4, 7, 8)), torch.from_numpy(w), torch.from_numpy(b),
                     stride=stride, padding=padding, dilation=dilation, groups=groups).numpy()
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, want.reshape((2, 3) + want.shape[1:]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (1, 0, 1, 1), (2, 1, 2, 3), (1, "same", 2, 1), (3, "valid", 1, 3)])
def test_conv1d_matches_torch(stride, padding, dilation, groups):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 6, 11)).astype(F32)
    w = rng.standard_normal((6, 6 // groups, 3)).astype(F32)
    b = rng.standard_normal(6).astype(F32)
    node = nir.Conv1d(input_shape=11, weight=w, bias=b, stride=stride, padding=padding,
                      dilation=dilation, groups=groups)
    y = _conv_graph(node, x)
    want = tF.conv1d(torch.from_numpy(x.reshape(6, 6, 11)), torch.from_numpy(w), torch.from_numpy(b),
                     stride=stride, padding=padding, dilation=dilation, groups=groups).numpy()
    np.testing.assert_allclose(y, want.reshape((3, 2) + want.shape[1:]), rtol=1e-5, atol=1e-5)


def test_conv_same_with_even_kernel_raises():
    node = nir.Conv2d(input_shape=(4, 4), weight=np.ones((1, 1, 2, 2)), bias=np.zeros(1),
                      stride=1, padding="same", dilation=1, groups=1)
    with pytest.raises(ValueError, match="same"):
        _conv_graph(node, np.ones((1, 1, 1, 4, 4), F32))


def test_sumpool_and_avgpool():
    x = np.arange(16, dtype=F32).reshape(1, 1, 1, 4, 4)
    sp = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    y = _conv_graph(sp, x)
    np.testing.assert_array_equal(y[0, 0, 0], [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]])
    # padded 3x3 windows, stride 2: corner window sees only x[0:2, 0:2] (plus zeros)
    ap = nir.AvgPool2d(kernel_size=np.array([3, 3]), stride=np.array([2, 2]), padding=np.array([1, 1]))
    xs = np.random.default_rng(3).standard_normal((2, 2, 3, 5, 6)).astype(F32)
    ya = _conv_graph(ap, xs)
    want = tF.avg_pool2d(torch.from_numpy(xs.reshape(4, 3, 5, 6)), 3, 2, 1, count_include_pad=True).numpy()
    np.testing.assert_allclose(ya, want.reshape((2, 2) + want.shape[1:]), rtol=1e-5, atol=1e-6)
    sp1 = nir.SumPool2d(kernel_size=np.array([3, 3]), stride=np.array([2, 2]), padding=np.array([1, 1]))
    np.testing.assert_allclose(_conv_graph(sp1, xs), ya * 9, rtol=1e-5, atol=1e-5)
    assert _conv_graph(sp1, x)[0, 0, 0, 0, 0] == 0 + 1 + 4 + 5


@pytest.mark.parametrize("start,end,shape", [(0, -1, (24,)), (1, -1, (2, 12)), (0, 1, (6, 4)), (1, 2, (2, 12))])
def test_flatten_dims_exclude_batch(start, end, shape):
    x = np.random.default_rng(4).standard_normal((2, 3, 2, 3, 4)).astype(F32)
    node = nir.Flatten(input_type={"input": np.array([2, 3, 4])}, start_dim=start, end_dim=end)
    y = _conv_graph(node, x)
    np.testing.assert_array_equal(y, x.reshape((2, 3) + shape))


def test_affine_linear_scale_threshold():
    W = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    x = np.array([[[1.0, 1.0], [0.0, -1.0]]], F32)  # T=1, N=2
    ya = simulate(chain(nir.Affine(weight=W, bias=np.array([1.0, 0.0, -1.0])), [2], [3]), x)["output"]
    np.testing.assert_array_equal(ya[0], [[4, 7, 10], [-1, -4, -7]])
    yl = simulate(chain(nir.Linear(weight=W), [2], [3]), x)["output"]
    np.testing.assert_array_equal(yl[0], [[3, 7, 11], [-2, -4, -6]])
    ys = simulate(chain(nir.Scale(scale=np.array([2.0, -0.5])), [2], [2]), x)["output"]
    np.testing.assert_array_equal(ys[0], [[2, -0.5], [0, 0.5]])
    th = nir.Threshold(threshold=np.array([1.0, -1.0]))
    np.testing.assert_array_equal(simulate(chain(th, [2], [2]), x)["output"][0], [[0, 1], [0, 0]])


# ---------------------------------------------------------------- graph structure

def test_residual_edges_sum():
    nodes = {"input": inp(3), "s": nir.Scale(scale=np.full(3, 2.0)), "lif": if_node(3, thr=2.5),
             "output": out(3)}
    edges = [("input", "s"), ("s", "lif"), ("input", "lif"), ("lif", "output")]
    rec = simulate(g(nodes, edges), np.full((3, 1, 3), [1.0, 0.5, 0.25], F32), record=True)
    # lif input is 2x + x = 3x: v per step 3, 1.5, .75 -> spikes at [1,2,3], [2], [-]... (thr 2.5)
    assert rec["output"][:, 0].tolist() == [[1, 0, 0], [1, 1, 0], [1, 0, 0]]
    two = g({"input": inp(2), "a": nir.Scale(scale=np.array([1.0, 2.0])), "output": out(2)},
            [("input", "a"), ("a", "output"), ("input", "output")])
    np.testing.assert_array_equal(simulate(two, np.ones((1, 1, 2), F32))["output"], [[[2, 3]]])


def _soft_reset_graph(theta=1.0, order=0):
    nodes = {"input": inp(1), "i": nir.I(r=np.ones(1)), "thr": nir.Threshold(threshold=np.full(1, theta)),
             "fb": nir.Scale(scale=np.full(1, -theta)), "output": out(1)}
    edges = [("i", "thr"), ("thr", "fb"), ("fb", "i"), ("input", "i"), ("thr", "output")]
    return g(nodes, edges if order == 0 else edges[::-1])


@pytest.mark.parametrize("order", [0, 1])
def test_reset_by_subtraction_loop_is_delayed_one_step(order):
    rec = simulate(_soft_reset_graph(order=order), const(0.7, 9), record=True)
    # v_t = v_{t-1} + 0.7 - z_{t-1}: .7, 1.4 F, 1.1 F, .8, 1.5 F, 1.2 F, .9, 1.6 F, 1.3 F
    assert spike_steps(rec["output"]) == [2, 3, 5, 6, 8, 9]
    np.testing.assert_allclose(rec["i"][:, 0, 0], [.7, 1.4, 1.1, .8, 1.5, 1.2, .9, 1.6, 1.3], atol=1e-6)
    np.testing.assert_array_equal(rec["fb"], -rec["thr"])
    # the same against a hand loop on a random input
    x = np.random.default_rng(5).uniform(0, 1.5, (40, 2, 1)).astype(F32)
    v, z, want = np.zeros((2, 1), F32), np.zeros((2, 1), F32), []
    for xt in x:
        v = v + F32(1) * F32(1) * ((-z if order == 0 else xt) + (xt if order == 0 else -z))
        z = (v > 1).astype(F32)
        want.append(z)
    assert np.array_equal(simulate(_soft_reset_graph(order=order), x)["output"], np.stack(want))


def test_recurrent_affine_into_lif_uses_previous_spikes():
    rng = np.random.default_rng(6)
    n, T, N = 4, 25, 2
    Win, bin_ = rng.standard_normal((n, 3)).astype(F32), rng.uniform(0, .3, n).astype(F32)
    Wr, br = rng.standard_normal((n, n)).astype(F32), rng.uniform(-.3, .3, n).astype(F32)
    p = dict(tau=np.full(n, 2.0, F32), r=np.ones(n, F32), v_leak=np.zeros(n, F32),
             v_threshold=np.full(n, 0.5, F32), v_reset=np.zeros(n, F32))
    nodes = {"input": inp(3), "fc": nir.Affine(weight=Win, bias=bin_), "lif": nir.LIF(**p),
             "rec": nir.Affine(weight=Wr, bias=br), "output": out(n)}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")]
    x = rng.uniform(0, 1.5, (T, N, 3)).astype(F32)
    rec = simulate(g(nodes, edges), {"input": x}, record=True)
    fb, v, want = None, np.zeros((N, n), F32), []
    for xt in x:
        cur = xt @ Win.T + bin_
        if fb is not None:  # nothing (not even the bias) arrives at t=1
            cur = cur + fb
        v = v + F32(1) * (p["v_leak"] - v + p["r"] * cur) / p["tau"]
        z = v > p["v_threshold"]
        v = np.where(z, p["v_reset"], v)
        want.append(z.astype(F32))
        fb = want[-1] @ Wr.T + br
    want = np.stack(want)
    assert 5 < want.sum() < want.size - 5 and np.array_equal(rec["output"], want)
    np.testing.assert_allclose(rec["rec"], want @ Wr.T + br, rtol=1e-6, atol=1e-6)
    no_fb = simulate(g({k: v for k, v in nodes.items() if k != "rec"}, [e for e in edges if "rec" not in e]), x)
    assert not np.array_equal(no_fb["output"], want)


def test_record_all_nodes_single_array_and_multiple_inputs():
    graph = _soft_reset_graph()
    x = const(0.7, 5, N=3)
    rec = simulate(graph, x, record=True)
    assert list(rec) == list(graph.nodes) and all(a.shape == (5, 3, 1) for a in rec.values())
    np.testing.assert_array_equal(rec["input"], x)
    assert np.array_equal(simulate(graph, {"input": x})["output"], rec["output"])
    assert list(simulate(graph, x)) == ["output"]
    two = g({"a": inp(2), "b": inp(2), "o": out(2)}, [("a", "o"), ("b", "o")])
    y = simulate(two, {"a": np.ones((2, 1, 2)), "b": np.full((2, 1, 2), 2.5)})["o"]
    assert y.dtype == np.float32 and np.all(y == 3.5)
    with pytest.raises(ValueError, match="exactly one Input"):
        simulate(two, np.ones((2, 1, 2)))
    with pytest.raises(ValueError, match="shape"):
        simulate(graph, np.ones((2, 1, 3)))


def test_nested_subgraph_is_inlined():
    sub = g({"i": inp(2), "s": nir.Scale(scale=np.array([2.0, 3.0])), "o": out(2)}, [("i", "s"), ("s", "o")])
    graph = g({"input": inp(2), "sub": sub, "lif": if_node(2, thr=3.5), "output": out(2)},
              [("input", "sub"), ("sub", "lif"), ("lif", "output")])
    rec = simulate(graph, np.ones((3, 1, 2), F32), record=True)
    assert {"sub.i", "sub.s", "sub.o"} <= set(rec)
    np.testing.assert_array_equal(rec["sub.s"][:, 0], [[2, 3]] * 3)
    assert rec["output"][:, 0].tolist() == [[0, 0], [1, 1], [0, 0]]  # v: 2,3 -> 4,6 fire -> 2,3


def test_float32_throughout():
    lif = nir.LIF(tau=np.array([3.0]), r=np.array([1.1]), v_leak=np.array([0.1]),
                  v_threshold=np.array([10.0]), v_reset=np.array([0.0]))
    rec = simulate(chain(lif, [1], [1]), np.full((50, 1, 1), 0.3), dt=0.1, record=True)
    assert all(a.dtype == np.float32 for a in rec.values())
    v, dt = F32(0), F32(0.1)
    for _ in range(50):
        v = v + dt * (F32(0.1) - v + F32(1.1) * F32(0.3)) / F32(3.0)
    li = nir.LI(tau=np.array([3.0]), r=np.array([1.1]), v_leak=np.array([0.1]))
    assert simulate(chain(li, [1], [1]), np.full((50, 1, 1), 0.3), dt=0.1)["output"][-1, 0, 0] == v


# ---------------------------------------------------------------- errors

def test_algebraic_loop_raises():
    nodes = {"input": inp(1), "a": nir.Scale(scale=np.ones(1)), "b": nir.Scale(scale=np.ones(1)),
             "output": out(1)}
    graph = g(nodes, [("input", "a"), ("a", "b"), ("b", "a"), ("b", "output")])
    with pytest.raises(ValueError, match=r"algebraic loop.*'b' -> 'a'"):
        simulate(graph, const(1.0, 2))
    self_loop = g({"input": inp(1), "a": nir.Scale(scale=np.ones(1)), "output": out(1)},
                  [("input", "a"), ("a", "a"), ("a", "output")])
    with pytest.raises(ValueError, match="algebraic loop"):
        simulate(self_loop, const(1.0, 2))


def test_delay_not_implemented():
    with pytest.raises(NotImplementedError, match="Delay"):
        simulate(chain(nir.Delay(delay=np.ones(1)), [1], [1]), const(1.0, 2))


def test_unreachable_node_raises():
    nodes = {"input": inp(1), "a": nir.Scale(scale=np.ones(1)), "orphan": nir.Scale(scale=np.ones(1)),
             "output": out(1)}
    graph = g(nodes, [("input", "a"), ("a", "output"), ("orphan", "output")])
    with pytest.raises(ValueError, match="not reachable.*orphan"):
        simulate(graph, const(1.0, 2))
