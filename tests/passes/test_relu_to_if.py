"""relu-to-if: every ReLU becomes a soft-reset IF neuron (threshold 1, v_init as given)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import snncompile
from snncompile import PassContext, Pipeline
from snncompile.errors import ConfigError, UnsupportedOpError

# after canonicalize,normalize{mode=max},relu-to-if on _mlp(); every column is significant
GOLDEN = """\
%0 = input()                                                             # [N,4]
%1 = linear(%0) weight=f32[8,4] bias=f32[8]                              # 0  [N,8]
%2 = neuron(%1) family=if threshold=1 v_init=0.5                         # 1  [N,8]
%3 = linear(%2) weight=f32[6,8] bias=f32[6]                              # 2  [N,6]
%4 = neuron(%3) family=if threshold=1 v_init=0.5                         # 3  [N,6]
%5 = linear(%4) weight=f32[3,6] bias=f32[3]                              # 4  [N,3]
%6 = output(%5)                                                          # [N,3]"""

GOLDEN_DIFF = """\
--- normalize
+++ relu-to-if
@@ -2,5 +2,5 @@
 %1 = linear(%0) weight=f32[8,4] bias=f32[8]                              # 0  [N,8]
-%2 = relu(%1)                                                            # 1  [N,8]
+%2 = neuron(%1) family=if threshold=1 v_init=0.5                         # 1  [N,8]
 %3 = linear(%2) weight=f32[6,8] bias=f32[6]                              # 2  [N,6]
-%4 = relu(%3)                                                            # 3  [N,6]
+%4 = neuron(%3) family=if threshold=1 v_init=0.5                         # 3  [N,6]
 %5 = linear(%4) weight=f32[3,6] bias=f32[3]                              # 4  [N,3]"""


def _mlp():
    torch.manual_seed(0)
    # two spellings of ReLU: both must become neurons
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(inplace=True), nn.Linear(6, 3)).eval()


def _run(spec, model=None, x=None):
    model = model or _mlp()
    x = torch.rand(16, 4) if x is None else x
    pipe = Pipeline(spec)
    return pipe, pipe.run(snncompile.trace(model, x), PassContext(calibration_data=x))


def test_golden_text():
    pipe, g = _run("canonicalize,normalize{mode=max},relu-to-if")
    assert str(g) == GOLDEN
    assert pipe.diff("normalize", "relu-to-if") == GOLDEN_DIFF


def test_neuron_params_and_attrs():
    _, g = _run("canonicalize,normalize{mode=max},relu-to-if")
    assert not g.find("relu")
    neurons = g.find("neuron")
    assert len(neurons) == 2
    for n in neurons:
        assert n.attrs == {"family": "if", "v_init": 0.5, "reset": "subtract", "v_reset": 0.0,
                           "input_kind": "sequence", "surrogate": None, "alpha": None, "detach_reset": False}
        assert torch.equal(n.params["threshold"], torch.tensor(1.0))


def test_options_v_init_and_threshold():
    _, g = _run("relu-to-if{v_init=0.0 threshold=2.0}")
    lines = [ln for ln in str(g).splitlines() if " = neuron(" in ln]
    assert len(lines) == 2
    for ln in lines:
        # v_init 0 is the op's default and is not printed
        assert "family=if threshold=2 " in ln and "v_init" not in ln
    assert all(float(n.params["threshold"]) == 2.0 and n.attrs["v_init"] == 0.0 and n.attrs["family"] == "if"
               for n in g.find("neuron"))


def test_relu_to_if_changes_nothing_else():
    pipe, g = _run("canonicalize,normalize{mode=max},relu-to-if")
    before = pipe.stage("normalize")
    assert [n.id for n in before.nodes] == [n.id for n in g.nodes]
    for a, b in zip(before.nodes, g.nodes):
        if a.op == "relu":
            assert b.op == "neuron" and b.attrs["family"] == "if"
            assert [i.id for i in a.inputs] == [i.id for i in b.inputs]
        else:
            assert a.op == b.op and a.attrs == b.attrs
            assert a.params.keys() == b.params.keys()
            assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)


def test_compile_prints_the_same_neuron_line():
    model = _mlp()
    x = torch.rand(16, 4)
    snn = snncompile.compile(model, x, T=4, normalize="max", backend="torch")
    text = str(snn.pipeline.stage("relu-to-if"))
    assert "%2 = neuron(%1) family=if threshold=1 v_init=0.5 " in text
    assert "relu(" not in text


class GeluNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def test_gelu_model_is_refused_naming_node_module_and_relu():
    model = GeluNet().eval()
    x = torch.rand(8, 4)
    (node,) = snncompile.trace(model, x).find("opaque")
    with pytest.raises(UnsupportedOpError) as ei:
        snncompile.compile(model, x, T=4, backend="torch")
    msg = str(ei.value)
    assert f"%{node.id}" in msg, msg           # the node
    assert "(act," in msg, msg                 # its module path
    assert "GELU" in msg, msg                  # what it is
    assert "ReLU" in msg, msg                  # and what to use instead


def test_gelu_is_refused_by_relu_to_if_itself():
    model = GeluNet().eval()
    x = torch.rand(8, 4)
    with pytest.raises(UnsupportedOpError) as ei:
        _run("relu-to-if", model, x)
    msg = str(ei.value)
    assert "relu-to-if" in msg and "GELU" in msg and "(act" in msg and "ReLU" in msg


def test_clamp_with_negative_floor_is_refused():
    class Clamp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.fc2(torch.clamp(self.fc1(x), min=-1.0))

    g = snncompile.trace(Clamp().eval(), torch.rand(8, 4))
    assert g.find("clamp")  # the model really has a clamp node
    with pytest.raises(UnsupportedOpError, match="clamp"):
        Pipeline("relu-to-if").run(g, PassContext())


@pytest.mark.parametrize("v_init", [1.0, 1.5, -0.1])
def test_v_init_out_of_range_is_a_config_error(v_init):
    x = torch.rand(8, 4)
    with pytest.raises(ConfigError, match="v_init"):
        snncompile.compile(_mlp(), x, T=4, v_init=v_init, normalize="max", backend="torch")
    with pytest.raises(ConfigError, match="v_init"):
        _run(f"relu-to-if{{v_init={v_init}}}")


@pytest.mark.parametrize("v_init", [0.0, 0.5, 0.99])
def test_v_init_in_range_is_accepted(v_init):
    _, g = _run(f"relu-to-if{{v_init={v_init}}}")
    neurons = g.find("neuron")
    assert len(neurons) == 2 and {n.attrs["family"] for n in neurons} == {"if"}
    assert {n.attrs["v_init"] for n in neurons} == {v_init}
