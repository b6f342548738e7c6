"""canonicalize: golden text after the pass, and the function it computes is unchanged."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from snncompile import run_graph, trace
from snncompile.ir import Graph
from snncompile.pipeline import Pipeline

from graph_text import golden, plain

TOL = 1e-5


def canonicalize(model: nn.Module, x: torch.Tensor, spec: str = "canonicalize") -> tuple[Graph, Graph]:
    """Trace, run the pass (verified by the pipeline), check the function; return (before, after)."""
    model.eval()
    before = trace(model, x)
    after = Pipeline(spec).run(before)
    with torch.no_grad():
        want = model(x)
        assert (run_graph(before, x) - want).abs().max() <= TOL
        diff = (run_graph(after, x) - want).abs().max().item()
    assert diff <= TOL, f"canonicalize changed the function by {diff}:\n{after}"
    return before, after


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph if n.op not in ("input", "output")]


def test_drops_dropout_and_identity():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Dropout(0.2), nn.ReLU(), nn.Identity(), nn.Linear(5, 3))
    before, after = canonicalize(model, torch.randn(3, 6))
    assert ops(before) == ["linear", "dropout", "relu", "identity", "linear"]
    assert plain(after) == golden("""
        %0 = input() # [N,6]
        %1 = linear(%0) weight=f32[5,6] bias=f32[5] # [N,5]
        %3 = relu(%1) # [N,5]
        %5 = linear(%3) weight=f32[3,5] bias=f32[3] # [N,3]
        %6 = output(%5) # [N,3]
    """)


def test_drops_dropout_right_before_the_output():
    model = nn.Sequential(nn.Linear(6, 5), nn.Dropout(0.5))
    _, after = canonicalize(model, torch.randn(3, 6))
    assert ops(after) == ["linear"]
    assert after.output.inputs[0].op == "linear"


class TwoReshapes(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(144, 5)

    def forward(self, x):
        y = self.conv(x)
        y = y.reshape(y.shape[0], 4, 36)
        y = y.flatten(1)
        y = self.fc(y)
        return y.view(y.size(0), -1)  # leaves the shape as it is


def test_merges_reshapes_and_drops_no_op_reshapes():
    torch.manual_seed(0)
    before, after = canonicalize(TwoReshapes(), torch.randn(2, 3, 8, 8))
    assert ops(before) == ["conv2d", "reshape", "flatten", "linear", "reshape"]
    assert plain(after) == golden("""
        %0 = input() # [N,3,8,8]
        %1 = conv2d(%0) weight=f32[4,3,3,3] bias=f32[4] stride=1 padding=0 # [N,4,6,6]
        %3 = reshape(%1) shape=144 # [N,144]
        %4 = linear(%3) weight=f32[5,144] bias=f32[5] # [N,5]
        %6 = output(%4) # [N,5]
    """)
    assert after.node(3).attrs == {"shape": (144,)}


def test_keeps_a_reshape_read_twice():
    class Fork(nn.Module):
        def forward(self, x):
            y = x.reshape(x.shape[0], 2, 8)
            return torch.cat([y.flatten(1), y.reshape(y.shape[0], 4, 4).flatten(1)], dim=1)

    _, after = canonicalize(Fork(), torch.randn(2, 16))
    first = after.nodes[1]
    assert first.op == "reshape" and first.shape == (None, 2, 8)
    assert len(after.users(first)) == 2


class ScaledInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x * 0.5)


def test_folds_a_constant_multiply_into_the_next_conv():
    torch.manual_seed(0)
    model = ScaledInput()
    before, after = canonicalize(model, torch.randn(2, 3, 6, 6))
    assert plain(before) == golden("""
        %0 = input() # [N,3,6,6]
        %1 = mul_const(%0) value=0.5 # [N,3,6,6]
        %2 = conv2d(%1) weight=f32[4,3,3,3] bias=f32[4] stride=1 padding=1 # [N,4,6,6]
        %3 = output(%2) # [N,4,6,6]
    """)
    assert plain(after) == golden("""
        %0 = input() # [N,3,6,6]
        %2 = conv2d(%0) weight=f32[4,3,3,3] bias=f32[4] stride=1 padding=1 # [N,4,6,6]
        %3 = output(%2) # [N,4,6,6]
    """)
    conv = after.node(2)
    assert torch.allclose(conv.params["weight"], model.conv.weight * 0.5)
    assert torch.equal(conv.params["bias"], model.conv.bias)  # the bias is not scaled


class ScaledThroughRelu(nn.Module):
    """conv -> * c -> relu -> avgpool -> flatten -> linear: c > 0 reaches the linear."""

    def __init__(self, c: float, divide: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 3 * 3, 5)
        self.c, self.divide = c, divide

    def forward(self, x):
        y = self.conv(x)
        y = y / self.c if self.divide else y * self.c
        y = F.avg_pool2d(F.relu(y), 2)
        y = F.max_pool2d(y, 1)
        return self.fc(torch.flatten(y, 1))


@pytest.mark.parametrize("c,divide", [(0.5, False), (4.0, True), (3.0, False)])
def test_folds_a_positive_constant_through_relu_and_pools(c, divide):
    torch.manual_seed(0)
    model = ScaledThroughRelu(c, divide)
    before, after = canonicalize(model, torch.randn(2, 3, 8, 8))
    assert "mul_const" in ops(before)
    assert ops(after) == ["conv2d", "relu", "avgpool2d", "maxpool2d", "flatten", "linear"]
    want = 1 / c if divide else c
    assert torch.allclose(after.find("linear")[0].params["weight"], model.fc.weight * want)
    assert torch.equal(after.find("conv2d")[0].params["weight"], model.conv.weight)


def test_does_not_fold_a_negative_constant_through_relu():
    torch.manual_seed(0)
    _, after = canonicalize(ScaledThroughRelu(-2.0), torch.randn(2, 3, 8, 8))
    (m,) = after.find("mul_const")
    assert m.attrs["value"] == -2.0
    assert after.users(m)[0].op == "relu"


def test_folds_a_negative_constant_through_linear_ops():
    class NegPool(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 3)

        def forward(self, x):
            return self.fc(F.avg_pool2d(x * -3.0, 2).flatten(1))

    torch.manual_seed(0)
    model = NegPool()
    _, after = canonicalize(model, torch.randn(2, 3, 4, 4))
    assert ops(after) == ["avgpool2d", "flatten", "linear"]
    assert torch.allclose(after.find("linear")[0].params["weight"], model.fc.weight * -3.0)


def test_merges_consecutive_constants():
    class TwoConsts(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(torch.relu(x * 0.5) * 3.0)

    torch.manual_seed(0)
    model = TwoConsts()
    _, after = canonicalize(model, torch.randn(3, 4))
    assert ops(after) == ["relu", "linear"]
    assert torch.allclose(after.find("linear")[0].params["weight"], model.fc.weight * 1.5)


def test_keeps_constants_that_reach_no_layer():
    class Tail(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x) * 0.25

    _, after = canonicalize(Tail(), torch.randn(3, 4))
    assert ops(after) == ["linear", "mul_const"]


def test_keeps_a_constant_whose_value_is_read_twice():
    class Fork(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3)

        def forward(self, x):
            y = torch.relu(x * 2.0)
            return torch.cat([self.a(y), y], dim=1)  # the scaled relu is also an output

    _, after = canonicalize(Fork(), torch.randn(3, 4))
    assert ops(after) == ["mul_const", "relu", "linear", "cat"]


def test_fold_constants_off():
    torch.manual_seed(0)
    _, after = canonicalize(ScaledInput(), torch.randn(2, 3, 6, 6), "canonicalize{fold_constants=False}")
    assert ops(after) == ["mul_const", "conv2d"]


def test_canonicalize_is_idempotent():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(), nn.ReLU(), nn.Flatten(), nn.Identity(),
                          nn.Linear(144, 3))
    _, once = canonicalize(model, torch.randn(2, 3, 8, 8))
    twice = Pipeline("canonicalize").run(once)
    assert once.diff(twice) == ""
