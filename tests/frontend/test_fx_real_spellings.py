"""The spellings real model libraries use trace to canonical ops and round trip exactly.

torchvision and timm write a channel shuffle (view / transpose / view), ``chunk`` into two
branches, global means, ``F.pad`` and shape checks in forward; each case here is a small model
written the way they write it. ``roundtrip`` asserts trace -> emit gives the model's output
(max abs diff <= 1e-5) and the test names the canonical ops expected (no ``opaque``).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fx_cases import ops, roundtrip
from snncompile import run_graph, trace
from snncompile.errors import TraceError


class Shuffle(nn.Module):
    """shufflenet's unit: chunk into two branches, cat, channel shuffle by view/transpose/view."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        out = torch.cat((x1, F.relu(self.conv(x2))), dim=1)
        b, c, h, w = out.size()
        out = out.view(b, 2, c // 2, h, w)
        out = torch.transpose(out, 1, 2).contiguous()
        return out.view(b, -1, h, w)


class Splits(nn.Module):
    def forward(self, x):
        a, b = torch.split(x, [1, 3], dim=1)
        parts = x.unbind(1)
        return torch.cat([b, a], 1).sum(1) + parts[2] * 2.0


class GlobalMeans(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x.mean((2, 3))) + self.fc(x.mean([-1, -2], keepdim=True).flatten(1))


class Pads(nn.Module):
    def __init__(self):
        super().__init__()
        self.zp = nn.ZeroPad2d((1, 0, 2, 1))
        self.conv = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return self.conv(self.zp(F.pad(x, (0, 1, 1, 0))))


class ShapeChecked(nn.Module):
    """timm's style: a branch on the input's size, which the example's shapes decide."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        if x.shape[-2] < 16:
            x = F.adaptive_avg_pool2d(x, (4, 4))
        assert x.size(1) == 4
        return self.conv(x)


class ValueBranch(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2.0
        return x


@pytest.mark.parametrize("model, want", [
    (Shuffle(), ["slice", "slice", "conv2d", "relu", "cat", "reshape", "permute", "reshape"]),
    (GlobalMeans(), ["adaptive_avgpool2d", "reshape", "linear", "adaptive_avgpool2d", "flatten", "linear", "add"]),
    (Pads(), ["pad", "pad", "conv2d"]),
    (ShapeChecked(), ["adaptive_avgpool2d", "conv2d"]),
], ids=["channel-shuffle", "global-mean", "pad", "shape-branch"])
def test_real_spellings_become_canonical_ops(model, want):
    torch.manual_seed(0)
    graph = roundtrip(model, torch.randn(2, 4, 8, 8))
    assert [o for o in ops(graph) if o != "identity"] == want


def test_split_and_unbind_results_are_slices_and_selects():
    graph = roundtrip(Splits(), torch.randn(2, 4, 5, 5))
    assert ops(graph).count("slice") == 2 and ops(graph).count("select") == 1  # results never read: dropped
    assert "opaque" in ops(graph)  # sum(1) has no canonical op, and still round trips


def test_a_branch_on_tensor_values_is_refused():
    with pytest.raises(TraceError, match="branches on tensor values"):
        trace(ValueBranch(), torch.randn(2, 4))


class WithToken(nn.Module):
    """ViT's start: a learned token concatenated in front of the patches (a list holding a graph tensor)."""

    def __init__(self):
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, 6))
        self.attn = nn.MultiheadAttention(6, 2, batch_first=True)

    def forward(self, x):
        x = torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1)
        out, _ = self.attn(x, x, x, need_weights=False)
        return out[:, 0]


def test_tuple_valued_and_list_taking_calls_stay_opaque_and_survive_copy():
    """The attention layer (a tuple result) and the cat of a list holding a graph tensor stay
    opaque calls; the graph runs exactly, also after ``Graph.copy()`` deep-copies its attrs."""
    torch.manual_seed(0)
    model, x = WithToken().eval(), torch.randn(2, 5, 6)
    graph = roundtrip(model, x)
    assert ops(graph).count("opaque") == 2
    with torch.no_grad():
        assert (run_graph(graph.copy(), x) - model(x)).abs().max() <= 1e-5


def test_lstm_refusal_points_at_snncompile_layers():
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 8, batch_first=True)

        def forward(self, x):
            out, _ = self.lstm(x)
            return out

    with pytest.raises(TraceError, match="snncompile.layers") as ei:
        trace(Seq(), torch.randn(2, 3, 4))
    assert "LSTM" in str(ei.value)


@pytest.mark.parametrize("pool, want", [
    (nn.MaxPool1d(2), "maxpool2d"), (nn.AvgPool1d(3, stride=2, padding=1), "avgpool2d"),
    (nn.AdaptiveAvgPool1d(2), "adaptive_avgpool2d"),
    (lambda x: F.max_pool1d(x, 2, ceil_mode=True), "maxpool2d"),
    (lambda x: F.avg_pool1d(x, 2), "avgpool2d"),
], ids=["MaxPool1d", "AvgPool1d", "AdaptiveAvgPool1d", "F.max_pool1d", "F.avg_pool1d"])
def test_1d_pools_are_2d_pools_of_height_one(pool, want):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(3, 4, 3)
            self.pool = pool if isinstance(pool, nn.Module) else None

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return self.pool(y) if self.pool is not None else pool(y)

    torch.manual_seed(0)
    graph = roundtrip(Net(), torch.randn(2, 3, 11))
    assert ops(graph) == ["conv1d", "relu", "reshape", want, "reshape"]


def test_capped_relu_spellings_are_one_clamp():
    for act in (nn.ReLU6(), nn.Hardtanh(0.0, 3.0), lambda x: x.clamp(0, 6), F.relu6, lambda x: torch.clip(x, min=0.0)):
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(4, 4)
                self.act = act if isinstance(act, nn.Module) else None

            def forward(self, x):
                return (self.act or act)(self.lin(x))

        graph = roundtrip(Net(), torch.randn(3, 4) * 5)
        assert ops(graph) in (["linear", "clamp"], ["linear", "relu"])


def test_example_inputs_are_not_changed_by_in_place_ops():
    class InPlace(nn.Module):
        def forward(self, x):
            return x.relu_()

    x = torch.randn(2, 4)
    before = x.clone()
    trace(InPlace(), x)
    assert torch.equal(x, before)


class Net1d(nn.Module):
    """A 1-D CNN (audio / time-series style): conv1d, BN, max and avg pools, adaptive pool."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(2, 6, 5, padding=2), nn.BatchNorm1d(6), nn.ReLU(), nn.MaxPool1d(2),
                                  nn.Conv1d(6, 8, 3, padding=1), nn.ReLU(), nn.AvgPool1d(2),
                                  nn.Conv1d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(2))
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.body(x), 1))


def test_a_1d_cnn_converts_and_trains():
    import snncompile
    from fx_cases import _randomize
    torch.manual_seed(0)
    model = _randomize(Net1d())
    x = torch.rand(16, 2, 32)
    snn = snncompile.compile(model, x, T=256, percentile=100.0)
    with torch.no_grad():
        want = model(x)
        errs = {t: float((snn(x, T=t) - want).norm() / want.norm()) for t in (16, 256)}
    assert errs[256] < 0.5 * errs[16] and errs[256] < 0.1, errs
    train = snncompile.to_trainable(Net1d(), T=4, example_input=x[:2])
    out = train(x[:4])
    out.sum().backward()
    assert out.shape == (4, 3) and all(p.grad is not None for p in train.parameters() if p.requires_grad)


class LayerScale(nn.Module):
    """convnext/timm style: a parameter read in forward arithmetic (a learned per-channel scale)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.gamma = nn.Parameter(torch.rand(4) + 0.5)

    def forward(self, x):
        y = self.lin(x) * self.gamma
        return y * (self.gamma.shape[0] / 4.0)


def test_parameters_in_forward_arithmetic_trace_and_round_trip():
    roundtrip(LayerScale(), torch.randn(3, 4))


def test_a_refusal_counts_the_other_ops_that_would_stop_the_conversion():
    """convnext-style: a layer norm and a GELU; the refusal names the GELU and its module, and
    also the layer norm the user will meet next."""
    import snncompile
    from snncompile.errors import UnsupportedOpError
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 2)).eval()
    with pytest.raises(UnsupportedOpError) as ei:
        snncompile.compile(model, torch.rand(8, 4), T=4)
    msg = str(ei.value)
    assert "GELU" in msg and "(2" in msg and "1 more op that does not convert: LayerNorm (1)" in msg
