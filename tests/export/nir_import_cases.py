"""Graphs written the way other tools write NIR (built with nir's Python API), and helpers, shared
by test_nir_import.py and test_nir_import_errors.py."""
import nir
import numpy as np
import torch

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



def subtract_graph(theta=1.0, W=None, n=1):
    W = np.eye(n, dtype=F32) if W is None else W
    n = W.shape[0]
    nodes = {"input": nir.Input(input_type=np.array([W.shape[1]])), "fc": nir.Linear(weight=W),
             "mem": nir.I(r=np.ones(n)), "fire": nir.Threshold(threshold=np.full(n, theta)),
             "reset": nir.Scale(scale=np.full(n, -theta)), "output": nir.Output(output_type=np.array([n]))}
    edges = [("input", "fc"), ("fc", "mem"), ("mem", "fire"), ("fire", "reset"), ("reset", "mem"),
             ("fire", "output")]
    return graph(nodes, edges)



def subtract_recurrent_graph():
    return graph({"input": nir.Input(input_type=np.array([4])), "fc": nir.Affine(weight=W1, bias=B1),
               "mem": nir.I(r=np.ones(3)), "fire": nir.Threshold(threshold=np.ones(3)),
               "reset": nir.Scale(scale=-np.ones(3)), "rec": nir.Linear(weight=WR),
               "output": nir.Output(output_type=np.array([3]))},
              [("input", "fc"), ("fc", "mem"), ("mem", "fire"), ("fire", "reset"), ("reset", "mem"),
               ("fire", "rec"), ("rec", "mem"), ("fire", "output")])
