"""The bad-input suite: each case is a wrong input a user (or an adversary) can give, with the
error type it must raise and the words the user needs to fix it (what was wrong, what is allowed
or what to do). Table-driven; every row is its own test. More cases for the compile path, the
runtime, save/load and the CLI live in the other tests of this folder."""
from __future__ import annotations

import pytest
import torch

import snncompile
from snncompile.errors import ConfigError, KernelError, SnnCompileError, TraceError, VerifyError
from snncompile.ir import Graph
from snncompile.kernels import run_neuron
from snncompile.kernels.cpu import run_cpu
from snncompile.neurons import NeuronFamily, NeuronSpec, Param
from snncompile.neurons.params import V_INIT, reset_param
from snncompile.ops import neuron_attrs

# --- neuron parameters: NeuronSpec checks every value against the family's Param records -------
SPEC_CASES = [
    (dict(kind="lif", tau=0.0), ["tau=0.0", "> 0"]),
    (dict(kind="lif", tau=-3.0), ["tau=-3.0", "> 0"]),
    (dict(kind="lif", tau=float("inf")), ["tau=inf", "finite"]),
    (dict(kind="lif", beta=-0.1), ["beta=-0.1", ">= 0"]),
    (dict(kind="lif", beta=2), ["beta=2", "<= 1"]),
    (dict(kind="lif", beta=True), ["beta=True", "number"]),
    (dict(kind="lif", form="Snntorch"), ["form='Snntorch'", "'spikingjelly', 'snntorch'"]),
    (dict(kind="lif", form=None), ["form=None", "'spikingjelly'"]),
    (dict(kind="if", reset="soft"), ["reset='soft'", "'subtract', 'value'"]),
    (dict(kind="if", reset="substract"), ["reset='substract'", "'subtract'"]),
    (dict(kind="if", v_init="0.5"), ["v_init='0.5'", "number"]),
    (dict(kind="if", v_init=float("nan")), ["v_init=nan", "finite"]),
    (dict(kind="if", v_reset=float("-inf")), ["v_reset=-inf", "finite"]),
    (dict(kind="if", beta=0.5), ["no parameter 'beta'", "v_init"]),
    (dict(kind="signed_if", v_reset=0.1), ["no parameter 'v_reset'", "reset"]),
    (dict(kind="signed_if", reset="value"), ["reset='value'", "'subtract'"]),
    (dict(kind="IF"), ["unknown neuron family 'IF'", "if, lif"]),
    (dict(kind="lif", input_kind="image"), ["input_kind", "'sequence' or 'static'"]),
    (dict(kind="lif", surrogate="atann"), ["unknown surrogate 'atann'", "atan"]),
    (dict(kind="lif", surrogate="Sigmoid"), ["unknown surrogate 'Sigmoid'", "sigmoid"]),
]


@pytest.mark.parametrize("kwargs,words", SPEC_CASES)
def test_bad_neuron_spec(kwargs, words):
    with pytest.raises(ConfigError) as e:
        NeuronSpec(**kwargs)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


# --- families registered by users: the record is checked when it is made -------------------------
def _charge(A, v, x, p):
    return A.add(v, x)


FAMILY_CASES = [
    (lambda: NeuronFamily("dup", (V_INIT, V_INIT, reset_param("subtract")), _charge, _charge),
     ["lists a parameter twice"]),
    (lambda: NeuronFamily("noreset", (V_INIT,), _charge, _charge), ["needs the common parameters v_init and reset"]),
    (lambda: NeuronFamily("sv", (V_INIT, reset_param("subtract", "value")), _charge, _charge, spikes="signed"),
     ["resets by subtraction only"]),
    (lambda: NeuronFamily("tri", (V_INIT, reset_param("subtract")), _charge, _charge, spikes="ternary"),
     ["spikes must be one of"]),
    (lambda: NeuronFamily("var", (V_INIT, reset_param("subtract"), Param("mode", str, "a", variant=True)),
                          _charge, _charge), ["variant parameter mode needs choices"]),
    (lambda: snncompile.register_family(snncompile.get_family("lif")), ["already registered", "replace=True"]),
    (lambda: snncompile.get_family("hodgkin_huxley"), ["unknown neuron family", "register_family"]),
]


@pytest.mark.parametrize("make,words", FAMILY_CASES)
def test_bad_family_record(make, words):
    with pytest.raises(ConfigError) as e:
        make()
    for w in words:
        assert w in str(e.value)


# --- the IR: verify() checks every attribute value and names the node ----------------------------
def _graph(op, attrs, params=None, shape=(None, 2, 6, 6)):
    g = Graph(name="bad")
    x = g.add("input", [], {"index": 0}, meta={"shape": shape})
    n = g.add(op, [x], attrs, params or {}, meta={"shape": None})
    g.add("output", [n], meta={"shape": None})
    return g


_W = {"weight": torch.zeros(2, 2, 3, 3)}
_TH = {"threshold": torch.tensor(1.0)}
VERIFY_CASES = [
    ("conv2d", {"stride": 0}, _W, ["stride=0", ">= 1"]),
    ("conv2d", {"stride": -1}, _W, ["stride=-1", ">= 1"]),
    ("conv2d", {"padding": -2}, _W, ["padding=-2", ">= 0"]),
    ("conv2d", {"padding": "full"}, _W, ["padding='full'", "'same'"]),
    ("conv2d", {"groups": 0}, _W, ["groups=0", ">= 1"]),
    ("conv2d", {"dilation": 1.5}, _W, ["dilation=1.5", "int"]),
    ("avgpool2d", {"kernel_size": 0}, {}, ["kernel_size=0", ">= 1"]),
    ("avgpool2d", {"kernel_size": (2, 0)}, {}, ["kernel_size=(2, 0)", ">= 1"]),
    ("maxpool2d", {"kernel_size": 2, "ceil_mode": 1}, {}, ["ceil_mode=1", "bool"]),
    ("dropout", {"p": 1.0}, {}, ["p=1.0", "[0, 1)"]),
    ("dropout", {"p": -0.1}, {}, ["p=-0.1", "[0, 1)"]),
    ("encode", {"method": "rate"}, {}, ["method='rate'", "'direct', 'poisson', 'sequence'"]),
    ("readout", {"mode": "max"}, {}, ["mode='max'", "'mean', 'last'"]),
    ("cat", {"dim": 0}, {}, ["dim=0", "batch"]),
    ("batchnorm", {"eps": -1e-5}, {"running_mean": torch.zeros(2), "running_var": torch.ones(2)}, ["eps=", ">= 0"]),
    ("neuron", {"family": "if", "reset": "substract"}, _TH, ["reset='substract'", "'subtract', 'value'"]),
    ("neuron", {"family": "lif", "tau": 0.0}, _TH, ["tau=0.0", "> 0"]),
    ("neuron", {"family": "lif", "beta": 1.5}, _TH, ["beta=1.5", "[0, 1]"]),
    ("neuron", {"family": "lif", "form": "norse"}, _TH, ["form='norse'", "'spikingjelly', 'snntorch'"]),
    ("neuron", {"family": "if", "tau": 2.0}, _TH, ["unknown attribute", "tau"]),
    ("neuron", {"family": "hh"}, _TH, ["family='hh'", "register_family"]),
    ("neuron", {"reset": "subtract"}, _TH, ["missing required attribute 'family'"]),
    ("neuron", {"family": "if", "surrogate": "atann"}, _TH, ["surrogate='atann'", "'atan'"]),
    ("neuron", {"family": "if", "alpha": 0.0}, _TH, ["alpha=0.0", "> 0"]),
    ("neuron", {"family": "if", "input_kind": "dynamic"}, _TH, ["input_kind='dynamic'", "'sequence', 'static'"]),
    ("neuron", {"family": "if", "detach_reset": 1}, _TH, ["detach_reset=1", "bool"]),
    ("neuron", {"family": "if", "v_init": float("nan")}, _TH, ["v_init=nan", "finite"]),
    ("neuron", {"family": "if", "sumpool": 2}, _TH, ["unknown attribute", "sumpool"]),
    ("neuron_sumpool2d", {"family": "if", "kernel_size": 0}, _TH, ["kernel_size=0", ">= 1"]),
    ("neuron_sumpool2d", {"family": "if"}, _TH, ["missing required attribute 'kernel_size'"]),
    ("neuron", {"family": "if"}, {"threshold": torch.ones(3)}, ["threshold has 3 values", "one value per channel"]),
    ("neuron", {"family": "if"}, {}, ["missing parameter 'threshold'"]),
    ("no_such_op", {}, {}, ["'no_such_op' is not in the op table"]),
]


@pytest.mark.parametrize("op,attrs,params,words", VERIFY_CASES)
def test_verify_refuses_bad_attributes_naming_the_node(op, attrs, params, words):
    g = _graph(op, attrs, params)
    with pytest.raises(VerifyError) as e:
        g.verify()
    msg = str(e.value)
    assert "node %1" in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def test_a_good_neuron_node_verifies():
    spec = NeuronSpec("lif", tau=3.0)
    _graph("neuron", neuron_attrs(spec), _TH).verify()


# --- the neuron kernels: wrong tensors and arguments -------------------------------------------
KERNEL_CASES = [
    (lambda: run_neuron(torch.rand(3, 2), 1.0, NeuronSpec(), 3, None, "gpu"), ConfigError,
     ["unknown neuron backend 'gpu'", "torch, cupy, cpu"]),
    (lambda: run_neuron(torch.rand(3, 2), torch.ones(5), NeuronSpec(), 3, None, "torch"), ConfigError,
     ["5 values", "one value per channel"]),
    (lambda: run_cpu([1.0, 2.0], 1.0, NeuronSpec(), 2), KernelError, ["torch.Tensor"]),
    (lambda: run_cpu(torch.rand(2, 3), 1.0, NeuronSpec(input_kind="static"), None), KernelError, ["needs T"]),
    (lambda: run_cpu(torch.rand(4, 2, 3), 1.0, NeuronSpec(), None, torch.zeros(5)), KernelError,
     ["step's shape", "[2, 3]"]),
    (lambda: run_cpu(torch.rand(4, 2, 3, 6, 6), 1.0, NeuronSpec(), None, sumpool=0), KernelError,
     ["positive int window size"]),
    (lambda: run_cpu(torch.rand(4, 2, 3, 6, 6), 1.0, NeuronSpec(), None, sumpool=7), KernelError,
     ["at least 7 x 7"]),
    (lambda: run_cpu(torch.rand(4, 2, 6), 1.0, NeuronSpec(), None, sumpool=2), KernelError,
     ["[N, C, H, W]", "without sumpool"]),
    (lambda: run_cpu(torch.rand(4, 2, 3), 1.0, NeuronSpec(), None, out=torch.empty(1)), KernelError,
     ["out must be", "torch.empty"]),
    (lambda: run_neuron(torch.rand(3, 2), 1.0, NeuronSpec("if"), 3, None, "torch", leak=torch.tensor(0.5)),
     ConfigError, ["learnable leak", "does not leak"]),
]


# --- pipelines, passes and entry points ------------------------------------------------------------
_MLP = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2)).eval()


def _SNN():
    return snncompile.compile(_MLP, torch.rand(16, 4), T=4, backend="torch")


ENTRY_CASES = [
    (lambda: snncompile.Pipeline("nosuchpass"), ConfigError, ["unknown pass 'nosuchpass'", "canonicalize"]),
    (lambda: snncompile.Pipeline("normalize{pp=3}"), ConfigError, ["bad options", "pp", "mode"]),
    (lambda: snncompile.Pipeline("normalize{"), ConfigError, ["cannot read", "normalize{mode=max p=99.9}"]),
    (lambda: snncompile.get_pass("relu-to-if", v_init=2.0)(Graph(), None), ConfigError, ["v_init=2.0", "[0, 1)"]),
    (lambda: snncompile.get_pass("relu-to-if", neuron="hh")(Graph(), None), ConfigError, ["unknown neuron family 'hh'"]),
    (lambda: snncompile.get_pass("normalize", mode="minmax")(Graph(), None), ConfigError, ["mode must be", "'max'"]),
    (lambda: snncompile.get_pass("normalize", granularity="pixel")(Graph(), None), ConfigError,
     ["granularity must be", "'channel'"]),
    (lambda: snncompile.get_pass("normalize", p=0.0)(Graph(), None), ConfigError, ["p=0.0", "(0, 100]"]),
    (lambda: snncompile.get_pass("readout", mode="sum")(Graph(), None), ConfigError, ["mode must be", "'last'"]),
    (lambda: snncompile.get_pass("encode-input", method="rate")(Graph(), None), ConfigError,
     ["method must be", "'poisson'"]),
    (lambda: snncompile.get_pass("insert-surrogate", neuron="hh")(Graph(), None), ConfigError,
     ["neuron must be a neuron family", "hh"]),
    (lambda: snncompile.get_pass("insert-surrogate", surrogate="erf")(Graph(), None), ConfigError,
     ["unknown surrogate 'erf'", "atan"]),
    (lambda: snncompile.get_pass("insert-surrogate", neuron="lif", tau=1.0)(Graph(), None), ConfigError,
     ["tau must be > 1"]),
    (lambda: snncompile.get_pass("insert-surrogate", neuron="lif", beta=1.0)(Graph(), None), ConfigError,
     ["beta must be in (0, 1)"]),
    (lambda: snncompile.get_pass("insert-surrogate", neuron="if", learn_leak=True)(Graph(), None), ConfigError,
     ["learn_leak needs a leaky neuron"]),
    (lambda: snncompile.get_pass("insert-surrogate", threshold=0.0)(Graph(), None), ConfigError,
     ["threshold must be a positive number", "0.0"]),
    (lambda: snncompile.trace(42, torch.rand(1)), TraceError, ["expected a torch.nn.Module", "int"]),
    (lambda: snncompile.compile("model", torch.rand(4, 2)), ConfigError, ["expected a torch.nn.Module"]),
    (lambda: snncompile.compile(torch.nn.Linear(2, 2), None), SnnCompileError, ["calibration data"]),
    (lambda: snncompile.compile(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()), torch.rand(4, 2),
                                backend="gpu"), ConfigError, ["backend must be", "'cpu'"]),
    (lambda: snncompile.to_trainable(torch.nn.Linear(2, 2), T=4, neuron="hh"), ConfigError, ["neuron must be"]),
    (lambda: snncompile.to_trainable(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()), T=4,
                                     encoding="rate", example_input=torch.rand(1, 2)), ConfigError, ["method must be"]),
    (lambda: snncompile.compile(_MLP, torch.rand(8, 4), T=2.5), ConfigError, ["T (the number of time steps)", "2.5"]),
    (lambda: snncompile.compile(_MLP, torch.rand(8, 4), T="8"), ConfigError, ["positive int", "'8'"]),
    (lambda: snncompile.compile(_MLP, torch.rand(8, 4), T=0), ConfigError, ["at least 1", "0"]),
    (lambda: snncompile.compile(_MLP, torch.rand(8, 4), T=True), ConfigError, ["positive int", "True"]),
    (lambda: snncompile.compile(_MLP, torch.rand(8, 4), T=float("nan")), ConfigError, ["positive int", "nan"]),
    (lambda: _SNN()(torch.rand(2, 4), T=0), ConfigError, ["at least 1", "T=32"]),
    (lambda: _SNN()(torch.rand(2, 4), T=3.5), ConfigError, ["positive int", "3.5"]),
    (lambda: _SNN()(torch.rand(2, 5)), ConfigError, ["traced for inputs", "[N, 4]"]),
    (lambda: _SNN()(torch.full((2, 4), float("nan"))), SnnCompileError, ["NaN", "allow_nonfinite"]),
    (lambda: snncompile.load("/nonexistent/dir/net.snn"), SnnCompileError, ["/nonexistent/dir/net.snn"]),
    (lambda: snncompile.ops.get_op("conv4d"), ConfigError, ["unknown op 'conv4d'", "register_op"]),
    (lambda: snncompile.ops.has_trait("conv2d", "weigthed"), ConfigError, ["unknown op trait 'weigthed'", "weighted"]),
]


@pytest.mark.parametrize("call,etype,words", KERNEL_CASES + ENTRY_CASES)
def test_bad_kernel_or_entry_point_input(call, etype, words):
    with pytest.raises(etype) as e:
        call()
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_the_suite_has_at_least_100_cases():
    n = len(SPEC_CASES) + len(FAMILY_CASES) + len(VERIFY_CASES) + len(KERNEL_CASES) + len(ENTRY_CASES)
    assert n >= 100, n
