"""trace refuses what a graph cannot hold, with a TraceError that says where and what to do."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn

from snncompile import trace
from snncompile.errors import SnnCompileError, TraceError

HERE = os.path.basename(__file__)


def _line_of(marker: str) -> int:
    """The line number in this file of the (one) line holding ``marker`` in code."""
    with open(__file__) as f:
        hits = [i for i, line in enumerate(f, 1) if marker in line and "_line_of" not in line]
    assert len(hits) == 1, hits
    return hits[0]


class DataDependentBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        x = self.lin(x)
        if x.sum() > 0:  # marker: data-dependent branch
            x = torch.relu(x)
        return x


def test_data_dependent_control_flow_names_the_user_line():
    with pytest.raises(TraceError) as info:
        trace(DataDependentBranch(), torch.randn(2, 4))
    msg = str(info.value)
    line = _line_of("# marker: data-dependent branch")
    assert f"{HERE}:{line}" in msg
    assert "if x.sum() > 0" in msg
    assert "control flow" in msg
    assert "depend on constants" in msg
    assert isinstance(info.value, SnnCompileError)


class DataDependentLoop(nn.Module):
    def forward(self, x):
        while x.abs().max() > 1:  # marker: data-dependent loop
            x = x / 2
        return x


def test_data_dependent_loop_names_the_user_line():
    with pytest.raises(TraceError, match="control flow") as info:
        trace(DataDependentLoop(), torch.randn(2, 4))
    assert f"{HERE}:{_line_of('# marker: data-dependent loop')}" in str(info.value)


class ConstantBranch(nn.Module):
    """A branch on a module attribute is fine: it is a constant when tracing."""

    def __init__(self, use_relu: bool):
        super().__init__()
        self.use_relu = use_relu
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        x = self.lin(x)
        if self.use_relu:
            x = torch.relu(x)
        return x


def test_branch_on_a_constant_traces():
    assert [n.op for n in trace(ConstantBranch(True), torch.randn(2, 4))] == ["input", "linear", "relu", "output"]
    assert [n.op for n in trace(ConstantBranch(False), torch.randn(2, 4))] == ["input", "linear", "output"]


class ReturnsDict(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return {"logits": self.lin(x)}


def test_forward_returning_a_dict():
    with pytest.raises(TraceError, match="ReturnsDict.forward must return a tensor or a tuple of tensors"):
        trace(ReturnsDict(), torch.randn(2, 4))


class ReturnsConstant(nn.Module):
    def forward(self, x):
        return torch.zeros(3)


def test_forward_returning_something_not_computed_from_the_input():
    with pytest.raises(TraceError, match="computed from the input"):
        trace(ReturnsConstant(), torch.randn(2, 4))


def test_tuple_output_is_fine():
    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            y = self.lin(x)
            return y, torch.relu(y)

    graph = trace(Both(), torch.randn(2, 4))
    assert [i.op for i in graph.output.inputs] == ["linear", "relu"]


@pytest.mark.parametrize("obj", [lambda x: x + 1, "resnet18", torch.randn(2, 2)])
def test_not_a_module(obj):
    with pytest.raises(TraceError, match="expected a torch.nn.Module, got"):
        trace(obj, torch.randn(2, 4))


@pytest.mark.parametrize("bad", [[1, 2, 3], torch.tensor(1.0), ()])
def test_example_input_must_be_a_batched_tensor(bad):
    with pytest.raises(TraceError, match="example_input"):
        trace(nn.Linear(4, 4), bad)


def test_example_input_of_the_wrong_shape_names_the_run():
    with pytest.raises(TraceError, match="could not run the example input through Linear"):
        trace(nn.Linear(4, 4), torch.randn(2, 5))


def test_the_model_is_not_modified_by_a_failed_trace():
    model = DataDependentBranch().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TraceError):
        trace(model, torch.randn(2, 4))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
