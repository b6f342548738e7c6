"""ANN -> SNN conversion end to end: the SNN's output converges to the ANN's as T grows.

Small random ReLU nets (batch norms with random running statistics), calibrated with
normalize="max" (a percentile would clip the largest activations and bias the rates, so the error
would not go to zero), layer- and channel-wise, v_init 0.5. One run with return_all_steps gives
the output at T=16 and T=256. Error = mean|snn(x) - ann(x)| / mean|ann(x)| on the calibration set.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import snncompile
from nets import Concat, Residual, rand_bn

# Measured on these nets (seed 0, 32 samples, CPU, torch backend): err256 is 0.0011-0.0074
# (the residual net is the largest; err16 there is 0.11-0.14); err16/err256 is 14-19.
# The bound leaves 4x margin over the worst net.
ERR256_BOUND = 0.03
# err256 must beat err16 by at least this factor (rate coding error falls ~1/T; measured >= 13)
MIN_IMPROVEMENT = 2.0
T_SHORT, T_LONG = 16, 256


class ConvBnAvgpool(nn.Module):
    """(a) conv-BN-ReLU-avgpool-conv-ReLU-flatten-linear."""

    shape = (2, 8, 8)

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 6, 3, padding=1)
        self.bn = rand_bn(nn.BatchNorm2d(6))
        self.pool = nn.AvgPool2d(2)
        self.c2 = nn.Conv2d(6, 8, 3)
        self.fc = nn.Linear(8 * 2 * 2, 5)

    def forward(self, x):
        x = self.pool(F.relu(self.bn(self.c1(x))))
        x = F.relu(self.c2(x))
        return self.fc(torch.flatten(x, 1))


class MLP(nn.Module):
    """(b) linear-ReLU-linear-BN-ReLU-linear."""

    shape = (10,)

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 16), rand_bn(nn.BatchNorm1d(16)),
                                 nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x):
        return self.net(x)


class ConvMaxpoolConv(nn.Module):
    """(c) conv-ReLU-maxpool-conv (the pool reads the first layer, whose input is static)."""

    shape = (2, 8, 8)

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))

    def forward(self, x):
        return self.net(x)


class VGGLike(nn.Module):
    """(c') VGG blocks: conv-ReLU-maxpool twice; the second pool reads a spiking layer."""

    shape = (2, 8, 8)

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Flatten(), nn.Linear(8 * 2 * 2, 5))

    def forward(self, x):
        return self.net(x)


class ConcatThenRelu(nn.Module):
    """(e') concat of two conv outputs before the ReLU (the ReLU sees the joined channels)."""

    shape = (2, 8, 8)

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(2, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 3, 1)
        self.fc = nn.Linear(7 * 8 * 8, 4)

    def forward(self, x):
        x = F.relu(self.c0(x))
        x = F.relu(torch.cat([self.a(x), self.b(x)], 1))
        return self.fc(torch.flatten(x, 1))


def _errors(model_cls, granularity, n=32):
    torch.manual_seed(0)
    model = model_cls().eval()
    x = torch.rand((n,) + model_cls.shape)
    snn = snncompile.compile(model, x, T=T_LONG, normalize="max", granularity=granularity, v_init=0.5,
                             backend="torch")
    with torch.no_grad():
        ann = model(x)
        seq = snn(x, return_all_steps=True)
    assert seq.shape == (T_LONG,) + tuple(ann.shape)
    den = ann.abs().mean()
    assert den > 1e-3  # the ANN output is not trivially zero
    err = lambda t: float((seq[t - 1] - ann).abs().mean() / den)  # noqa: E731
    return err(T_SHORT), err(T_LONG), snn


CONVERGING = [ConvBnAvgpool, MLP, ConvMaxpoolConv, Residual, Concat, ConcatThenRelu]


@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("model_cls", CONVERGING, ids=lambda c: c.__name__)
def test_snn_converges_to_ann(model_cls, granularity):
    e16, e256, snn = _errors(model_cls, granularity)
    assert len(snn.neurons()) >= 2  # really spiking
    assert e256 < e16 / MIN_IMPROVEMENT, (e16, e256)
    assert e256 < ERR256_BOUND, (e16, e256)


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_vgg_like_maxpool_after_spiking_layer_converges(granularity):
    """A max pool whose input current comes from spikes must converge too.

    swap-maxpool-relu puts the pool before the neuron, so the neuron integrates the per-step max
    of fluctuating currents; E[max_t] > max(E), a bias that does not shrink with T (measured:
    err 0.09-0.13 at T=16 and still 0.07-0.12 at T=256). This test fails until the conversion
    handles spike-driven max pooling without that bias.
    """
    e16, e256, _ = _errors(VGGLike, granularity)
    assert e256 < e16 / MIN_IMPROVEMENT, (e16, e256)
    assert e256 < ERR256_BOUND, (e16, e256)


def test_error_with_v_init_zero_is_larger_at_short_T():
    """v_init 0.5 centres the rounding error of the spike count; v_init 0 biases it low."""
    torch.manual_seed(0)
    model = MLP().eval()
    x = torch.rand(32, 10)
    ann = model(x).detach()
    errs = {}
    for v_init in (0.0, 0.5):
        snn = snncompile.compile(model, x, T=T_SHORT, normalize="max", granularity="layer", v_init=v_init,
                                 backend="torch")
        with torch.no_grad():
            errs[v_init] = float((snn(x) - ann).abs().mean() / ann.abs().mean())
    assert errs[0.5] < errs[0.0], errs


def test_compile_rejects_non_module_and_bad_backend():
    from snncompile.errors import ConfigError

    with pytest.raises(ConfigError, match="nn.Module"):
        snncompile.compile(lambda x: x, torch.rand(4, 3), T=4, backend="torch")
    with pytest.raises(ConfigError, match="backend"):
        snncompile.compile(nn.Sequential(nn.Linear(3, 2)), torch.rand(4, 3), T=4, backend="gpu-please")
    with pytest.raises(ConfigError, match=r"a path to a .onnx file or an onnx.ModelProto, got str 'net.pt'"):
        snncompile.compile("net.pt", torch.rand(4, 3), T=4)


# ------------------------------------------------------------------------------------------
# leaf_modules= and ONNX models in place of an nn.Module


class Gate(nn.Module):
    """A custom block the op table could express, kept as one opaque node when named a leaf."""

    def forward(self, x):
        return torch.relu(x) * 0.5


def _gated():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), Gate(), nn.Linear(8, 2)).eval()


def test_leaf_modules_keep_a_module_as_one_opaque_node():
    """Without leaf_modules Gate is traced through and converts; named a leaf it is one opaque
    node: compile refuses it naming the module, to_trainable keeps it as a Python call."""
    from snncompile.errors import ConfigError, UnsupportedOpError

    x = torch.rand(32, 4)
    assert not any(n.op == "opaque" for n in snncompile.compile(_gated(), x, T=4, backend="torch").semantic_graph)
    with pytest.raises(UnsupportedOpError, match=r"opaque \(1\) calls Gate"):
        snncompile.compile(_gated(), x, T=4, backend="torch", leaf_modules=[Gate])
    snn = snncompile.to_trainable(_gated(), T=2, backend="torch", leaf_modules=Gate)
    assert [n.attrs["name"] for n in snn.graph if n.op == "opaque"] == ["Gate"]
    assert snn(x).shape == (32, 2)
    with pytest.raises(ConfigError, match="leaf_modules takes torch.nn.Module subclasses"):
        snncompile.compile(_gated(), x, T=4, leaf_modules=[Gate()])


class TwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 8), nn.Linear(3, 8), nn.Linear(8, 2)

    def forward(self, x, y):
        return self.out(torch.relu(self.a(x)) + torch.relu(self.b(y)))


def _two():
    torch.manual_seed(0)
    return TwoBranches().eval(), torch.rand(64, 4), torch.rand(64, 3)


def test_onnx_models_go_through_from_onnx(monkeypatch, tmp_path):
    """A ".onnx" path (str or pathlib) or an onnx.ModelProto is read by frontend.onnx.from_onnx
    (here a stand-in returning the traced graph) instead of trace; compile and to_trainable give
    the SNN the torch model gives."""
    onnx_frontend = pytest.importorskip("snncompile.frontend.onnx", reason="onnx frontend not present")
    onnx = pytest.importorskip("onnx")
    from snncompile.errors import ConfigError

    model, x, y = _two()
    seen = []

    def fake_from_onnx(source, **kw):
        seen.append(source)
        return snncompile.trace(model, (x[:2], y[:2]))

    monkeypatch.setattr(onnx_frontend, "from_onnx", fake_from_onnx)
    proto = onnx.ModelProto()
    ref = snncompile.compile(model, (x, y), T=8, backend="torch", percentile=100)
    for source in ("net.onnx", tmp_path / "net.ONNX", proto):
        snn = snncompile.compile(source, (x, y), T=8, backend="torch", percentile=100)
        with torch.no_grad():
            assert torch.equal(snn(x, y), ref(x, y))
    trained = snncompile.to_trainable("net.onnx", T=2, backend="torch")
    assert trained.run_sequence(x, y).shape == (2, 64, 2)
    assert seen == ["net.onnx", tmp_path / "net.ONNX", proto, "net.onnx"]
    with pytest.raises(ConfigError, match="leaf_modules applies to torch models"):
        snncompile.compile("net.onnx", (x, y), T=8, leaf_modules=[Gate])


def test_an_exported_two_input_model_converts_from_its_onnx_file(tmp_path):
    """End to end with the real from_onnx: the ONNX input names key dict calibration data, and
    the SNN equals the one compiled from the torch model."""
    pytest.importorskip("snncompile.frontend.onnx", reason="onnx frontend not present")
    model, x, y = _two()
    path = tmp_path / "two.onnx"
    try:
        torch.onnx.export(model, (x[:2], y[:2]), str(path), dynamo=False, input_names=["x", "y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    except Exception as e:  # the exporter needs packages this install may lack
        pytest.skip(f"torch.onnx.export failed here: {type(e).__name__}: {e}")
    snn = snncompile.compile(path, {"x": x, "y": y}, T=16, backend="torch", percentile=100)
    ref = snncompile.compile(model, (x, y), T=16, backend="torch", percentile=100)
    with torch.no_grad():
        assert torch.allclose(snn(x, y), ref(x, y), atol=1e-5)
