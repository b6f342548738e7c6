"""readout and hoist-static, through compile(): the printed graph and the SNN's output."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import snncompile
from snncompile import PassContext, Pipeline
from snncompile.ops import NEURON_OPS

T = 24


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(6, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, 5)).eval()


class SkipFromInput(nn.Module):
    """The output adds a path that never meets a neuron (static) to a spiking one."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(4, 8), nn.Linear(8, 3), nn.Linear(4, 3)

    def forward(self, x):
        return self.l2(F.relu(self.l1(x))) + self.l3(x)


def _compile(model, x, **kw):
    kw.setdefault("normalize", "max")
    return snncompile.compile(model, x, T=T, backend="torch", **kw)


def _neurons(g):
    return [n for n in g.nodes if n.op in NEURON_OPS]


def test_direct_encoding_graph_has_readout_static_first_neuron_and_no_encode():
    x = torch.rand(16, 2, 8, 8)
    snn = _compile(_cnn(), x)
    g = snn.graph
    lines = str(g).splitlines()
    # readout is the line before output and output reads it
    assert lines[-1].startswith(f"%{g.output.id} = output(%{g.output.inputs[0].id})")
    assert "= readout(" in lines[-2]
    (ro,) = g.find("readout")
    assert g.output.inputs == [ro] and ro.inputs[0].op == "linear"
    # no encode node is left (direct), and the input feeds the first conv directly
    assert not g.find("encode") and "encode(" not in str(g)
    first = _neurons(g)[0]
    assert first.attrs["input_kind"] == "static"
    assert "input_kind=static" in lines[g.nodes.index(first)]
    # only the first neuron is static: the second reads spikes
    assert all(n.attrs.get("input_kind", "sequence") == "sequence" for n in _neurons(g)[1:])
    # stage by stage: readout added after encode-input, encode removed by hoist-static
    assert snn.pipeline.stage("encode-input").find("encode")
    assert snn.pipeline.stage("readout").find("encode") and snn.pipeline.stage("readout").find("readout")
    assert not snn.pipeline.stage("hoist-static").find("encode")


def test_poisson_encoding_keeps_encode_and_hoists_nothing():
    x = torch.rand(16, 2, 8, 8)
    snn = _compile(_cnn(), x, encoding="poisson")
    g = snn.graph
    (enc,) = g.find("encode")
    assert enc.attrs["method"] == "poisson" and enc.inputs[0].op == "input"
    assert "encode(%0) method=poisson" in str(g)
    assert all(n.attrs.get("input_kind", "sequence") == "sequence" for n in _neurons(g))
    assert "input_kind=static" not in str(g) and not g.find("repeat_time")
    assert g.find("readout") and g.output.inputs[0].op == "readout"


def test_hoisting_does_not_change_the_snn_output():
    x = torch.rand(16, 2, 8, 8)
    a = _compile(_cnn(), x, hoist=True)
    b = _compile(_cnn(), x, hoist=False)
    assert "input_kind=static" in str(a.graph) and "input_kind=static" not in str(b.graph)
    assert b.graph.find("encode")  # without hoisting the direct encode stays
    with torch.no_grad():
        ya, yb = a(x, return_all_steps=True), b(x, return_all_steps=True)
    assert ya.shape == yb.shape == (T, 16, 5)
    assert torch.allclose(ya, yb, atol=1e-5, rtol=0)
    assert ya[-1].abs().max() > 1e-2


def test_hoisting_a_static_skip_reads_it_through_repeat_time():
    torch.manual_seed(1)
    model = SkipFromInput().eval()
    x = torch.rand(16, 4)
    a = _compile(model, x, hoist=True)
    b = _compile(model, x, hoist=False)
    (rep,) = a.graph.find("repeat_time")
    (add,) = a.graph.find("add")
    assert rep in add.inputs and rep.inputs[0].op == "linear"
    with torch.no_grad():
        assert torch.allclose(a(x, return_all_steps=True), b(x, return_all_steps=True), atol=1e-5, rtol=0)
        # and the SNN is close to the ANN (exact on the static skip)
        assert (a(x) - model(x)).abs().max() < 0.1


def test_readout_pass_is_idempotent():
    x = torch.rand(8, 2, 8, 8)
    snn = _compile(_cnn(), x)
    g = Pipeline("readout").run(snn.graph, PassContext())
    assert len(g.find("readout")) == 1
    assert str(g) == str(snn.graph)


def test_readout_integrates_the_last_layer_instead_of_spiking():
    # a single linear layer: no neuron at all; the readout must give exactly the ANN output
    torch.manual_seed(2)
    model = nn.Linear(4, 3).eval()
    x = torch.rand(8, 4)
    snn = _compile(model, x)
    assert not _neurons(snn.graph)
    with torch.no_grad():
        assert torch.allclose(snn(x), model(x), atol=1e-6)


def test_stateful_ops_on_a_static_input_get_their_steps():
    """A recurrent container or synapse filter right after a static layer is not hoisted with it:
    it reads the static value through repeat_time (it used to run once, on [N, ...], and fail)."""
    from snncompile import layers

    model = nn.Sequential(nn.Linear(5, 6), layers.LinearRecurrent(6, layers.IF(1.0)), nn.Linear(6, 3))
    synapse = nn.Sequential(nn.Linear(5, 6), layers.SynapseFilter(tau=2.0), layers.IF(1.0), nn.Linear(6, 3))
    x = torch.rand(5, 5)
    for net in (model, synapse):
        hoisted = snncompile.to_trainable(net, T=8, example_input=x)
        whole = snncompile.to_trainable(net, T=8, example_input=x, hoist=False)
        assert "repeat_time" in str(hoisted.graph)
        with torch.no_grad():
            assert torch.equal(hoisted(x), whole(x))
