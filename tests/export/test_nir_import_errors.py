"""``snncompile.from_nir`` refusing what it cannot run exactly (each error names the NIR node),
files, node names and inputs/outputs (see test_nir_import.py for the graphs of other tools)."""
import re

import nir
import numpy as np
import pytest
import torch

import snncompile
from snncompile.errors import ConfigError, SnnCompileError, UnsupportedOpError
from nir_sim import simulate
from nir_import_cases import *  # noqa: F401,F403  (graph builders and helpers)


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
