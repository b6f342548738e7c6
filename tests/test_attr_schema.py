"""Typed attribute schemas: verify() checks every attribute's value (type, range, choices) and
names the node, the bad value and what is allowed."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn

import snncompile
from snncompile.errors import VerifyError
from snncompile.ir import Graph
from snncompile.ops import OPS, REQUIRED, Attr, OpDef, get_op, register_op
from snncompile.pipeline import PassContext, Pipeline


def _neuron_graph(family="if", op="neuron", **attrs) -> Graph:
    """A neuron of ``family`` (op ``neuron``, or ``neuron_sumpool2d`` fused with a 2x2 sum pool)."""
    fused = op == "neuron_sumpool2d"
    shape, out = ((None, 4, 4, 4), (None, 4, 2, 2)) if fused else ((None, 4), (None, 4))
    attrs = {"family": family, **({"kernel_size": 2} if fused else {}), **attrs}
    g = Graph(name="neuron")
    x = g.add("input", meta={"shape": shape})
    n = g.add(op, [x], attrs, {"threshold": torch.tensor(1.0)}, meta={"shape": out})
    g.add("output", [n], meta={"shape": out})
    g.nodes[0].attrs["kind"] = "sequence"
    return g


def _converted() -> Graph:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3), nn.ReLU(),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Dropout(0.2), nn.Linear(4, 3)).eval()
    return snncompile.trace(model, torch.rand(2, 1, 10, 10))


def _bad(graph: Graph, node, key: str, value, allowed: str):
    """Set ``node.attrs[key] = value``; verify() must name the node, the value and ``allowed``."""
    node.attrs[key] = value
    with pytest.raises(VerifyError) as ei:
        graph.verify()
    msg = str(ei.value)
    assert msg.startswith(node.describe() + ":"), msg
    assert f"{key}={value!r}" in msg, msg
    assert allowed in msg, msg
    return msg


def test_misspelt_reset_names_the_node_and_the_value():
    g = _neuron_graph(reset="substract")
    n = g.nodes[1]
    with pytest.raises(VerifyError) as ei:
        g.verify()
    msg = str(ei.value)
    assert n.describe() in msg and "reset='substract'" in msg
    assert "one of 'subtract', 'value'" in msg


@pytest.mark.parametrize("family,op,key,value,allowed", [
    ("if", "neuron", "reset", "substract", "one of 'subtract', 'value'"),
    ("if", "neuron", "input_kind", "dynamic", "one of 'sequence', 'static'"),
    ("if", "neuron", "v_init", "0.5", "a number"),
    ("if", "neuron", "detach_reset", 1, "a bool"),
    ("if", "neuron", "alpha", 0.0, "a number > 0"),
    ("if", "neuron_sumpool2d", "kernel_size", 0, "an int >= 1"),
    ("if", "neuron", "surrogate", "atann", "'atan'"),
    ("if", "neuron", "surrogate", 3, "a string"),
    ("lif", "neuron", "form", "brian", "one of 'spikingjelly', 'snntorch'"),
    ("lif", "neuron", "tau", 0.0, "a number > 0"),
    ("lif", "neuron", "tau", -2.0, "a number > 0"),
    ("lif", "neuron", "beta", 1.5, "a number in [0, 1]"),
])
def test_bad_neuron_attrs(family, op, key, value, allowed):
    g = _neuron_graph(family, op)
    g.verify()
    _bad(g, g.nodes[1], key, value, allowed)


def test_sumpool_is_not_an_attribute_of_a_neuron():
    """The fused neuron + sum pool is an op of its own (neuron_sumpool2d kernel_size=k), not an
    attribute of a neuron."""
    g = _neuron_graph("if", sumpool=2)
    with pytest.raises(VerifyError, match=re.escape(g.nodes[1].describe()) + r": unknown attribute\(s\) \['sumpool'\]"):
        g.verify()


def test_good_neuron_attrs_verify():
    _neuron_graph("if", reset="value", v_init=0.5, v_reset=0, input_kind="static", surrogate="atan",
                  alpha=2.0, detach_reset=True).verify()
    _neuron_graph("lif", tau=3, beta=0.5, form="snntorch", alpha=None, surrogate=None).verify()
    _neuron_graph("if", "neuron_sumpool2d", reset="value", v_init=0.5, surrogate="atan").verify()


@pytest.mark.parametrize("op,key,value,allowed", [
    ("conv2d", "groups", 0, "an int >= 1"),
    ("conv2d", "stride", (1, 0), "an int >= 1 or a tuple of them"),
    ("conv2d", "padding", -1, "an int >= 0 or a tuple of them or 'same' or 'valid'"),
    ("conv2d", "padding", "full", "'same' or 'valid'"),
    ("conv2d", "dilation", 1.5, "an int >= 1"),
    ("maxpool2d", "kernel_size", 0, "an int >= 1 or a tuple of them"),
    ("maxpool2d", "kernel_size", (2, -1), "an int >= 1 or a tuple of them"),
    ("maxpool2d", "kernel_size", (), "an int >= 1 or a tuple of them"),
    ("maxpool2d", "padding", (-1, 0), "an int >= 0"),
    ("maxpool2d", "ceil_mode", "no", "a bool"),
    ("avgpool2d", "stride", 0, "an int >= 1 or a tuple of them or None"),
    ("avgpool2d", "divisor_override", 0, "an int >= 1 or None"),
    ("dropout", "p", 1.0, "a number in [0, 1)"),
    ("dropout", "p", -0.1, "a number in [0, 1)"),
    ("flatten", "start_dim", "1", "an int"),
    ("linear", "bias", 0, None),  # not an attribute of linear at all
])
def test_bad_layer_attrs(op, key, value, allowed):
    g = _converted()
    g.verify()
    node = g.find(op)[0]
    if allowed is None:
        node.attrs[key] = value
        with pytest.raises(VerifyError, match=re.escape(node.describe()) + r": unknown attribute"):
            g.verify()
        return
    _bad(g, node, key, value, allowed)


def test_bad_values_of_the_snn_ops():
    g = Pipeline("canonicalize,fold-batchnorm,normalize{mode=fixed},relu-to-if,encode-input,readout").run(
        _converted(), PassContext())
    g.verify()
    _bad(g, g.find("encode")[0], "method", "rate", "one of 'direct', 'poisson', 'sequence'")
    g.find("encode")[0].attrs["method"] = "direct"
    _bad(g, g.find("readout")[0], "mode", "avg", "one of 'mean', 'last'")
    g.find("readout")[0].attrs["mode"] = "mean"
    _bad(g, g.inputs[0], "kind", "dynamic", "one of 'static', 'sequence', 'state'")
    g.inputs[0].attrs["kind"] = "static"
    _bad(g, [n for n in g.find("neuron") if n.attrs["family"] == "if"][0], "reset", "substract",
         "one of 'subtract', 'value'")


def test_other_table_schemas():
    g = Graph()
    x = g.add("input", meta={"shape": (None, 4)})
    m = g.add("mul_const", [x], {"value": 2.0}, meta={"shape": (None, 4)})
    r = g.add("reshape", [m], {"shape": (2, 2)}, meta={"shape": (None, 2, 2)})
    g.add("output", [r], meta={"shape": (None, 2, 2)})
    g.verify()
    _bad(g, m, "value", "2", "a number")
    m.attrs["value"] = 2
    g.verify()  # an int is a number
    _bad(g, r, "shape", 4, "a tuple of ints")
    _bad(g, r, "shape", (2, 0), "one of them may be -1")
    r.attrs["shape"] = [2, -1]  # a list (a JSON round trip) is a tuple too
    g.verify()


def test_opaque_activation_must_be_a_known_kind():
    g = snncompile.trace(nn.Sequential(nn.Linear(3, 4), nn.GELU()), torch.rand(2, 3))
    (op,) = g.find("opaque")
    assert op.attrs["activation"] == "gelu"
    _bad(g, op, "activation", "swish", "one of 'gelu', 'sigmoid'")


def test_plain_defaults_check_only_their_type():
    saved = dict(OPS)
    try:
        register_op(OpDef("plain", 1, {"k": 3, "eps": 0.1, "name": "x", "flag": False, "free": None,
                                       "must": REQUIRED}, target=lambda x, **kw: x))
        g = Graph()
        x = g.add("input", meta={"shape": (None, 4)})
        n = g.add("plain", [x], {"must": object()}, meta={"shape": (None, 4)})
        g.add("output", [n], meta={"shape": (None, 4)})
        g.verify()
        n.attrs.update(k=-5, eps=7, name="y", flag=True, free=[1, "anything"])
        g.verify()  # no ranges or choices: only types
        _bad(g, n, "k", 2.5, "an int")
        n.attrs["k"] = 1
        _bad(g, n, "eps", "small", "a number")
        n.attrs["eps"] = 1e-3
        _bad(g, n, "flag", 0, "a bool")
        n.attrs["flag"] = False
        _bad(g, n, "name", 3, "a string")
    finally:
        OPS.clear()
        OPS.update(saved)


def test_attr_descriptions_and_defaults():
    assert Attr(int, 1, low=1, tuple_ok=True).describe() == "an int >= 1 or a tuple of them"
    assert Attr(float, 0.5, low=0, high=1, high_open=True).describe() == "a number in [0, 1)"
    assert Attr(str, "a", choices=("a", "b")).describe() == "one of 'a', 'b'"
    assert Attr(float, None, low=0, low_open=True).describe() == "a number > 0 or None"
    assert Attr.from_default(2).problem(3) is None and Attr.from_default(2).problem("3") == "an int"
    assert Attr.from_default(None).problem(object()) is None
    assert Attr(int, 1).problem(True) == "an int"  # a bool is not an int here
    d = get_op("conv2d")
    assert d.defaults["stride"] == 1 and d.defaults["groups"] == 1
    assert get_op("avgpool2d").defaults["kernel_size"] is REQUIRED


def test_each_stage_of_the_conversion_verifies():
    g = _converted()
    for p in ("canonicalize", "fold-batchnorm", "swap-maxpool-relu", "avgpool-to-sumpool", "normalize{mode=fixed}",
              "relu-to-if", "spike-maxpool", "encode-input", "readout", "hoist-static", "fuse-neuron-sumpool"):
        g = Pipeline(p).run(g, PassContext())
        g.verify()
