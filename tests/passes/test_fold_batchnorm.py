"""fold-batchnorm: the BN lines vanish from the printed graph and the function is unchanged."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from snncompile import run_graph, trace
from snncompile.ir import Graph
from snncompile.pipeline import Pipeline

from graph_text import golden, plain

TOL = 1e-5


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """BN running stats and affine params far from identity, eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 2 + 0.2)
                if m.affine:
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g))
    return model.eval()


def fold(model: nn.Module, x: torch.Tensor) -> tuple[Graph, Graph]:
    """Trace, fold (verified by the pipeline), check the function; return (before, after)."""
    model = _randomize_bn(model)
    before = trace(model, x)
    after = Pipeline("fold-batchnorm").run(before)
    with torch.no_grad():
        want = model(x)
        diff = (run_graph(after, x) - want).abs().max().item()
    assert diff <= TOL, f"fold-batchnorm changed the function by {diff}:\n{after}"
    return before, after


def test_conv2d_bn_golden():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    before, after = fold(model, torch.randn(2, 3, 6, 6))
    assert plain(before) == golden("""
        %0 = input() # [N,3,6,6]
        %1 = conv2d(%0) weight=f32[4,3,3,3] stride=1 padding=0 # [N,4,4,4]
        %2 = batchnorm(%1) running_mean=f32[4] running_var=f32[4] weight=f32[4] bias=f32[4] # [N,4,4,4]
        %3 = relu(%2) # [N,4,4,4]
        %4 = output(%3) # [N,4,4,4]
    """)
    assert plain(after) == golden("""
        %0 = input() # [N,3,6,6]
        %1 = conv2d(%0) weight=f32[4,3,3,3] bias=f32[4] stride=1 padding=0 # [N,4,4,4]
        %3 = relu(%1) # [N,4,4,4]
        %4 = output(%3) # [N,4,4,4]
    """)
    assert after.node(1).meta["folded"] == ["batchnorm %2"]
    # the printed diff is exactly: BN line gone, conv gains a bias, relu reads the conv
    d = before.diff(after)
    removed = [ln for ln in d.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    assert sum("batchnorm(" in ln for ln in removed) == 1


@pytest.mark.parametrize("case", [
    "conv2d+bn", "conv2d(no bias)+bn", "conv2d(groups=2,stride=2)+bn", "conv2d+bn(affine=False)",
    "conv1d+bn", "conv1d(no bias)+bn", "linear+bn1d", "linear(no bias)+bn1d",
])
def test_fold_keeps_the_function(case):
    torch.manual_seed(0)
    bias = "no bias" not in case
    if case.startswith("conv2d"):
        groups, stride = (2, 2) if "groups" in case else (1, 1)
        model = nn.Sequential(nn.Conv2d(4, 6, 3, stride=stride, padding=1, groups=groups, bias=bias),
                              nn.BatchNorm2d(6, affine="affine=False" not in case), nn.ReLU())
        x = torch.randn(3, 4, 7, 7)
        layer_op = "conv2d"
    elif case.startswith("conv1d"):
        model = nn.Sequential(nn.Conv1d(4, 6, 3, bias=bias), nn.BatchNorm1d(6), nn.ReLU())
        x = torch.randn(3, 4, 9)
        layer_op = "conv1d"
    else:
        model = nn.Sequential(nn.Linear(5, 6, bias=bias), nn.BatchNorm1d(6), nn.ReLU())
        x = torch.randn(3, 5)
        layer_op = "linear"
    before, after = fold(model, x)
    assert "batchnorm(" in str(before)
    assert "batchnorm" not in str(after)
    assert [n.op for n in after] == ["input", layer_op, "relu", "output"]
    layer = after.find(layer_op)[0]
    assert set(layer.params) == {"weight", "bias"}
    assert layer.params["weight"].dtype == torch.float32
    assert layer.params["weight"].shape == before.find(layer_op)[0].params["weight"].shape


def test_fold_every_bn_of_a_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    before, after = fold(model, torch.randn(2, 2, 4, 4))
    assert len(before.find("batchnorm")) == 3 and not after.find("batchnorm")
    assert len(after) == len(before) - 3


def test_input_graph_is_not_changed():
    model = _randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    graph = trace(model, torch.randn(2, 3, 6, 6))
    w = graph.find("conv2d")[0].params["weight"].clone()
    Pipeline("fold-batchnorm").run(graph)
    assert len(graph.find("batchnorm")) == 1
    assert torch.equal(graph.find("conv2d")[0].params["weight"], w)


class BnFirst(nn.Module):
    """A BN on the input, a BN after a relu: neither follows a layer."""

    def __init__(self):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn1 = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn1(torch.relu(self.conv(self.bn0(x))))


def test_bn_not_after_a_layer_becomes_a_depthwise_affine():
    """A lone BN (densenet's after a concat, a pre-activation block) is a per-channel affine: a
    depthwise 1x1 conv, which normalize rescales like any layer (fold() checks the function)."""
    torch.manual_seed(0)
    _, after = fold(BnFirst(), torch.randn(2, 3, 6, 6))
    assert golden("""
        %0 = input() # [N,3,6,6]
        %1 = conv2d(%0) weight=f32[3,1,1,1] bias=f32[3] stride=1 padding=0 groups=3 # [N,3,6,6]
        %2 = conv2d(%1) weight=f32[4,3,3,3] bias=f32[4] stride=1 padding=0 # [N,4,4,4]
        %3 = relu(%2) # [N,4,4,4]
        %4 = conv2d(%3) weight=f32[4,1,1,1] bias=f32[4] stride=1 padding=0 groups=4 # [N,4,4,4]
        %5 = output(%4) # [N,4,4,4]
    """) == plain(after)


@pytest.mark.parametrize("shape", [(2, 5), (2, 5, 7)])
def test_lone_bn1d_becomes_a_diagonal_linear_or_depthwise_conv1d(shape):
    model = nn.Sequential(nn.BatchNorm1d(5), nn.ReLU())
    _, after = fold(model, torch.randn(*shape))
    assert [n.op for n in after] == ["input", "linear" if len(shape) == 2 else "conv1d", "relu", "output"]


class SharedConv(nn.Module):
    """The conv output is read by the BN and by the add: folding would change the add."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_bn_after_a_layer_read_elsewhere_is_not_folded_into_it():
    torch.manual_seed(0)
    before, after = fold(SharedConv(), torch.randn(2, 3, 5, 5))
    conv = before.find("conv2d")[0]
    assert torch.equal(after.find("conv2d")[0].params["weight"], conv.params["weight"])  # the add's input kept
    assert [n.op for n in after] == ["input", "conv2d", "conv2d", "add", "output"]  # the BN: its own affine
    assert after.nodes[2].attrs["groups"] == 3


class LinearOnSequence(nn.Module):
    """A linear on [N, C, L] and BatchNorm1d over C: the BN's channels are not the linear's outputs."""

    def __init__(self, c: int):
        super().__init__()
        self.lin = nn.Linear(6, 4)
        self.bn = nn.BatchNorm1d(c)

    def forward(self, x):
        return self.bn(self.lin(x))


@pytest.mark.parametrize("c", [4, 3])
def test_bn_over_another_dim_than_the_linear_outputs_is_not_folded_into_it(c):
    """``W' = W * g`` scales the linear's output features; here BN normalises dim 1, which is
    the sequence dim of [N, C, L_out]. Folding is wrong (c=4: a silently different function;
    c=3: a crash); the pass must leave this BN alone."""
    torch.manual_seed(0)
    _, after = fold(LinearOnSequence(c), torch.randn(2, c, 6))
    assert [n.op for n in after] == ["input", "linear", "conv1d", "output"]  # the BN over dim 1: depthwise
