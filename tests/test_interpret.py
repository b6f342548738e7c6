"""The IR interpreter (snncompile.interpret) computes exactly what the emitted module computes."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from nets import Concat, Residual, rand_bn

import snncompile
from snncompile.emit import run_graph
from snncompile.errors import ConfigError
from snncompile.interpret import Interpreter, interpret, is_temporal
from snncompile.models import get_model
from snncompile.pipeline import PassContext, Pipeline


class Pools(nn.Module):
    """conv1d via view, max/avg/adaptive pools, dropout, sigmoid, GELU, clamp, a constant multiply."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = rand_bn(nn.BatchNorm2d(4))
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False)
        self.ada = nn.AdaptiveAvgPool2d((2, 2))
        self.drop = nn.Dropout(0.3)
        self.c1 = nn.Conv1d(4, 3, 2)
        self.act = nn.GELU()
        self.fc = nn.Linear(9, 3)

    def forward(self, x):
        y = self.pool(F.relu(self.bn(self.c(x))))
        y = self.ada(self.avg(y)) * 0.5
        y = self.drop(torch.sigmoid(y))
        z = self.c1(y.reshape(y.shape[0], 4, 4))
        z = torch.clamp(self.act(z), -0.5, 2.0)
        return self.fc(torch.flatten(z, 1))


class TwoInOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(5, 4)

    def forward(self, x, y):
        s = F.relu(self.a(x)) + self.b(y)
        return s, torch.cat([s, F.relu(s)], dim=1)


def _cases():
    torch.manual_seed(0)
    return [
        ("mnist_cnn", get_model("mnist_cnn").eval(), (torch.rand(5, 1, 28, 28),)),
        ("residual", Residual().eval(), (torch.randn(5, 2, 8, 8),)),
        ("concat", Concat().eval(), (torch.randn(5, 2, 8, 8),)),
        ("pools", Pools().eval(), (torch.randn(5, 2, 8, 8),)),
        ("two_in_out", TwoInOut().eval(), (torch.randn(5, 3), torch.randn(5, 5))),
    ]


def _same(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for u, v in zip(a, b):
            _same(u, v)
        return
    assert torch.equal(a, b), (a - b).abs().max()


@pytest.mark.parametrize("name,model,xs", _cases(), ids=[c[0] for c in _cases()])
def test_interpreter_equals_emitter_and_model(name, model, xs):
    g = snncompile.trace(model, xs)
    with torch.no_grad():
        got = interpret(g, *xs)
        _same(got, run_graph(g, *xs))
        ref = model(*xs)
    if isinstance(ref, tuple):
        for u, v in zip(got, ref):
            assert torch.allclose(u, v, atol=1e-6)
    else:
        assert torch.allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("name,model,xs", _cases()[:4], ids=[c[0] for c in _cases()[:4]])
def test_interpreter_equals_emitter_after_the_ann_passes(name, model, xs):
    """After canonicalize / fold-batchnorm / avgpool-to-sumpool / normalize the graph has sum
    pools, constant multiplies and scale nodes: the interpreter still agrees bit for bit."""
    g = snncompile.trace(model, xs)
    passes = "canonicalize,fold-batchnorm,swap-maxpool-relu,avgpool-to-sumpool"
    if name != "pools":  # normalize refuses the opaque activations
        passes += ",normalize{mode=max}"
    out = Pipeline(passes).run(g, PassContext(calibration_data=xs[0]))
    assert not is_temporal(out)
    with torch.no_grad():
        _same(interpret(out, *xs), run_graph(out, *xs))


def test_observer_sees_every_node_once_in_order():
    model, xs = _cases()[1][1:]
    g = snncompile.trace(model, xs)
    seen = []
    with torch.no_grad():
        interpret(g, *xs, observer=lambda node, v: seen.append((node.id, tuple(v.shape))))
    assert [i for i, _ in seen] == [n.id for n in g if n.op != "output"]
    for (i, shape), n in zip(seen, g):
        assert shape == (xs[0].shape[0],) + tuple(n.shape[1:])


def test_interpreter_never_changes_the_graph_and_runs_many_batches():
    model, xs = _cases()[0][1:]
    g = snncompile.trace(model, xs)
    text, w = str(g), g.find("conv2d")[0].params["weight"].clone()
    run = Interpreter(g)
    with torch.no_grad():
        a = run(xs[0])
        b = run.run(xs[0][:2])
    assert torch.equal(a[:2], b)
    assert str(g) == text and torch.equal(g.find("conv2d")[0].params["weight"], w)


def test_temporal_graphs_and_missing_inputs_are_refused():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x = torch.rand(4, 3)
    snn = Pipeline("normalize{mode=fixed},relu-to-if").run(snncompile.trace(model, x), PassContext())
    with pytest.raises(ConfigError, match=r"interpret: node %\d+ neuron .*sees time"):
        interpret(snn, x)
    g = snncompile.trace(TwoInOut().eval(), (torch.randn(2, 3), torch.randn(2, 5)))
    with pytest.raises(ConfigError, match="input 1 but 1 input"):
        interpret(g, torch.randn(2, 3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_interpreter_runs_on_the_gpu_without_moving_the_graph():
    model, xs = _cases()[3][1:]
    g = snncompile.trace(model, xs)
    with torch.no_grad():
        got = interpret(g, *xs, device="cuda")
        ref = interpret(g, *xs)
    assert got.is_cuda and torch.allclose(got.cpu(), ref, atol=1e-5)
    assert all(t.device.type == "cpu" for n in g for t in n.params.values())
