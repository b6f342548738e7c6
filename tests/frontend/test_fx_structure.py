"""trace -> emit keeps the model's structure: module paths through nested sequentials, a module
called twice (two nodes, each owning its weights), a residual add, and in-place ops whose
mutation a later reader of the tensor sees (or trace refuses the model)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fx_cases import X1, X2, _randomize, ops, roundtrip


def test_nested_sequentials_keep_module_paths():
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()),
        nn.Sequential(nn.Sequential(nn.Conv2d(4, 4, 3)), nn.ReLU()),
    )
    graph = roundtrip(_randomize(model), torch.randn(X2))
    assert ops(graph) == ["conv2d", "relu", "conv2d", "relu"]
    paths = [n.source.module_path for n in graph.nodes if n.op not in ("input", "output")]
    assert paths == ["0.0", "0.1", "1.0.0", "1.1"]


def test_module_called_twice_gives_two_nodes_with_equal_weights():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.conv(torch.relu(self.conv(x)))

    model = Twice()
    graph = roundtrip(model, torch.randn(2, 4, 6, 6))
    a, b = graph.find("conv2d")
    assert ops(graph) == ["conv2d", "relu", "conv2d"]
    assert b.inputs[0].inputs[0] is a
    assert torch.equal(a.params["weight"], b.params["weight"])
    assert torch.equal(a.params["bias"], b.params["bias"])
    assert torch.equal(a.params["weight"], model.conv.weight)
    # each node owns its tensors: a pass rescaling one call must not rescale the other
    a.params["weight"].mul_(2)
    assert not torch.equal(a.params["weight"], b.params["weight"])


def test_residual_block():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(4)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(4)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + x)

    graph = roundtrip(_randomize(Block()), torch.randn(2, 4, 6, 6))
    assert ops(graph) == ["conv2d", "batchnorm", "relu", "conv2d", "batchnorm", "add", "relu"]
    (add,) = graph.find("add")
    assert add.inputs[0].op == "batchnorm" and add.inputs[1] is graph.inputs[0]


# ------------------------------------------------------------------------------------------
# in-place spellings must keep eager semantics


class _InplaceAlias(nn.Module):
    """The in-place relu changes ``y`` itself, so ``y + z`` is ``2 * relu(lin(x))`` in eager."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 5)

    def forward(self, x):
        y = self.lin(x)
        z = y.relu_()
        return y + z


class _IaddAlias(nn.Module):
    """``c`` aliases ``a``; after ``a += b`` both are the sum in eager."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 5)
        self.b = nn.Linear(6, 5)

    def forward(self, x):
        a = self.a(x)
        c = a
        a += self.b(x)
        return c * 2.0


@pytest.mark.parametrize("factory", [
    _InplaceAlias,
    pytest.param(_IaddAlias, marks=pytest.mark.xfail(
        strict=True, reason="torch.fx limitation: Proxy has no __iadd__, so `a += b` is recorded as "
        "`a + b` and the alias keeps the old value; the fx graph carries no trace of the mutation")),
])
def test_inplace_op_on_a_tensor_read_later(factory):
    """An in-place op mutates its input: a later reader of that input sees the new value.

    Either the graph reproduces that, or trace refuses the model; a silently different
    function is the one wrong answer.
    """
    from snncompile.errors import TraceError

    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(X1)
    try:
        roundtrip(model, x)
    except TraceError as e:
        assert "in-place" in str(e) or "inplace" in str(e)
