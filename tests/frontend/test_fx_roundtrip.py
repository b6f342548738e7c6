"""Every spelling of an op becomes its one canonical op, and trace -> emit reproduces the model.

Each case is a tiny model: its traced graph must hold exactly the expected canonical ops, and
running the emitted module must give the model's output (max abs diff <= 1e-5, fp32). The ops'
attributes are recorded, ops outside the table become opaque nodes that still round trip, and
a node's source line points at the user code.
"""
from __future__ import annotations

import inspect
from typing import Callable

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fx_cases import X1, X2, _randomize, ops, roundtrip
from snncompile import trace


# ------------------------------------------------------------------------------------------
# the spelling zoo: (model factory, input shape, expected ops)


class Act(nn.Module):
    """linear -> fn: the activation reads a non-leaf tensor (so in-place spellings are legal)."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.lin = nn.Linear(6, 5)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.lin(x))


class FConv(nn.Module):
    def __init__(self, dim: int, groups: int = 1, bias: bool = True):
        super().__init__()
        k = (3,) * dim
        self.weight = nn.Parameter(torch.randn(8, 4 // groups, *k) * 0.3)
        self.bias = nn.Parameter(torch.randn(8)) if bias else None
        self.conv = F.conv1d if dim == 1 else F.conv2d
        self.groups = groups

    def forward(self, x):
        return self.conv(x, self.weight, self.bias, stride=2, padding=1, groups=self.groups)


class FLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(5, 6))
        self.bias = nn.Parameter(torch.randn(5))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Fn(nn.Module):
    """conv -> fn(x): for pools, flattens and other one-input functional spellings."""

    def __init__(self, fn: Callable, head: nn.Module | None = None):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fn = fn
        self.head = head

    def forward(self, x):
        y = self.fn(self.conv(x))
        return y if self.head is None else self.head(y)


class Two(nn.Module):
    """two convs of x combined by fn(a, b): for add / cat spellings."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.a(x), self.b(x))


def _iadd(a, b):
    a += b
    return a


def _reshape_n(x):
    n = x.shape[0]
    return x.reshape(n, -1)


class FDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 5)

    def forward(self, x):
        return F.dropout(self.lin(x), 0.3, self.training)


SPELLINGS = {
    # relu: every spelling is one relu node
    "nn.ReLU": (lambda: nn.Sequential(nn.Linear(6, 5), nn.ReLU()), X1, ["linear", "relu"]),
    "nn.ReLU(inplace)": (lambda: nn.Sequential(nn.Linear(6, 5), nn.ReLU(inplace=True)), X1, ["linear", "relu"]),
    "F.relu": (lambda: Act(F.relu), X1, ["linear", "relu"]),
    "F.relu(inplace)": (lambda: Act(lambda y: F.relu(y, inplace=True)), X1, ["linear", "relu"]),
    "torch.relu": (lambda: Act(torch.relu), X1, ["linear", "relu"]),
    "x.relu()": (lambda: Act(lambda y: y.relu()), X1, ["linear", "relu"]),
    "x.relu_()": (lambda: Act(lambda y: y.relu_()), X1, ["linear", "relu"]),
    "torch.clamp(min=0)": (lambda: Act(lambda y: torch.clamp(y, min=0)), X1, ["linear", "relu"]),
    "x.clamp(min=0)": (lambda: Act(lambda y: y.clamp(min=0.0)), X1, ["linear", "relu"]),
    "x.clamp_min(0)": (lambda: Act(lambda y: y.clamp_min(0)), X1, ["linear", "relu"]),
    # clamp with both bounds
    "torch.clamp(lo,hi)": (lambda: Act(lambda y: torch.clamp(y, -0.25, 0.5)), X1, ["linear", "clamp"]),
    "x.clamp(min,max)": (lambda: Act(lambda y: y.clamp(min=-0.3, max=0.2)), X1, ["linear", "clamp"]),
    "nn.ReLU6": (lambda: nn.Sequential(nn.Linear(6, 5), nn.ReLU6()), X1, ["linear", "clamp"]),
    # convolutions
    "nn.Conv2d": (lambda: nn.Conv2d(3, 8, 3, stride=2, padding=1), X2, ["conv2d"]),
    "nn.Conv2d(groups=2)": (lambda: nn.Conv2d(4, 8, 3, groups=2), (2, 4, 7, 7), ["conv2d"]),
    "nn.Conv2d(bias=False)": (lambda: nn.Conv2d(3, 8, 3, bias=False), X2, ["conv2d"]),
    "nn.Conv2d(padding=same)": (lambda: nn.Conv2d(3, 8, 3, padding="same"), X2, ["conv2d"]),
    "nn.Conv1d": (lambda: nn.Conv1d(3, 8, 3, padding=1), (2, 3, 10), ["conv1d"]),
    "nn.Conv1d(groups=2,bias=False)": (lambda: nn.Conv1d(4, 8, 3, groups=2, bias=False), (2, 4, 10), ["conv1d"]),
    "F.conv2d": (lambda: FConv(2), (2, 4, 8, 8), ["conv2d"]),
    "F.conv2d(groups=2,bias=False)": (lambda: FConv(2, groups=2, bias=False), (2, 4, 8, 8), ["conv2d"]),
    "F.conv1d": (lambda: FConv(1), (2, 4, 9), ["conv1d"]),
    # linear and batch norm
    "nn.Linear": (lambda: nn.Linear(6, 5), X1, ["linear"]),
    "nn.Linear(bias=False)": (lambda: nn.Linear(6, 5, bias=False), X1, ["linear"]),
    "F.linear": (FLinear, X1, ["linear"]),
    "nn.BatchNorm1d": (lambda: nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5)), X1, ["linear", "batchnorm"]),
    "nn.BatchNorm1d(NCL)": (lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4)), (2, 3, 9),
                            ["conv1d", "batchnorm"]),
    "nn.BatchNorm2d": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), X2, ["conv2d", "batchnorm"]),
    "nn.BatchNorm2d(affine=False)": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False)),
                                     X2, ["conv2d", "batchnorm"]),
    # pools
    "nn.AvgPool2d": (lambda: Fn(nn.AvgPool2d(2)), X2, ["conv2d", "avgpool2d"]),
    "nn.MaxPool2d": (lambda: Fn(nn.MaxPool2d(2)), X2, ["conv2d", "maxpool2d"]),
    "nn.MaxPool2d(3,2,1)": (lambda: Fn(nn.MaxPool2d(3, 2, 1)), X2, ["conv2d", "maxpool2d"]),
    "F.avg_pool2d": (lambda: Fn(lambda y: F.avg_pool2d(y, 2)), X2, ["conv2d", "avgpool2d"]),
    "F.avg_pool2d(3,2,1)": (lambda: Fn(lambda y: F.avg_pool2d(y, 3, 2, 1, count_include_pad=False)), X2,
                            ["conv2d", "avgpool2d"]),
    "F.avg_pool2d(input=,kernel_size=)": (lambda: Fn(lambda y: F.avg_pool2d(input=y, kernel_size=2)), X2,
                                          ["conv2d", "avgpool2d"]),
    "F.max_pool2d": (lambda: Fn(lambda y: F.max_pool2d(y, 2)), X2, ["conv2d", "maxpool2d"]),
    "F.max_pool2d(input=,kernel_size=)": (lambda: Fn(lambda y: F.max_pool2d(input=y, kernel_size=2)), X2,
                                          ["conv2d", "maxpool2d"]),
    "F.max_pool2d(3,2,1)": (lambda: Fn(lambda y: F.max_pool2d(y, 3, stride=2, padding=1)), X2,
                            ["conv2d", "maxpool2d"]),
    "nn.AdaptiveAvgPool2d(1)": (lambda: Fn(nn.AdaptiveAvgPool2d(1)), X2, ["conv2d", "adaptive_avgpool2d"]),
    "nn.AdaptiveAvgPool2d(2)": (lambda: Fn(nn.AdaptiveAvgPool2d((2, 2))), X2, ["conv2d", "adaptive_avgpool2d"]),
    "F.adaptive_avg_pool2d": (lambda: Fn(lambda y: F.adaptive_avg_pool2d(y, 3)), X2,
                              ["conv2d", "adaptive_avgpool2d"]),
    # flatten / reshape, each followed by a linear over the 4*6*6 features
    "nn.Flatten": (lambda: Fn(nn.Flatten(), nn.Linear(144, 3)), X2, ["conv2d", "flatten", "linear"]),
    "torch.flatten(x,1)": (lambda: Fn(lambda y: torch.flatten(y, 1), nn.Linear(144, 3)), X2,
                           ["conv2d", "flatten", "linear"]),
    "x.flatten(1)": (lambda: Fn(lambda y: y.flatten(1), nn.Linear(144, 3)), X2, ["conv2d", "flatten", "linear"]),
    "x.view(x.size(0),-1)": (lambda: Fn(lambda y: y.view(y.size(0), -1), nn.Linear(144, 3)), X2,
                             ["conv2d", "reshape", "linear"]),
    "x.reshape(n,-1)": (lambda: Fn(_reshape_n, nn.Linear(144, 3)), X2, ["conv2d", "reshape", "linear"]),
    "torch.reshape": (lambda: Fn(lambda y: torch.reshape(y, (y.shape[0], 4, 36)).flatten(1), nn.Linear(144, 3)),
                      X2, ["conv2d", "reshape", "flatten", "linear"]),
    # add, cat
    "a + b": (lambda: Two(lambda a, b: a + b), X2, ["conv2d", "conv2d", "add"]),
    "torch.add": (lambda: Two(torch.add), X2, ["conv2d", "conv2d", "add"]),
    "a.add(b)": (lambda: Two(lambda a, b: a.add(b)), X2, ["conv2d", "conv2d", "add"]),
    "a += b": (lambda: Two(_iadd), X2, ["conv2d", "conv2d", "add"]),
    "torch.cat": (lambda: Two(lambda a, b: torch.cat([a, b], dim=1)), X2, ["conv2d", "conv2d", "cat"]),
    "torch.cat(dim=-1)": (lambda: Two(lambda a, b: torch.cat((a, b), -1)), X2, ["conv2d", "conv2d", "cat"]),
    # constant multiplies
    "x * 0.5": (lambda: Act(lambda y: y * 0.5), X1, ["linear", "mul_const"]),
    "0.5 * x": (lambda: Act(lambda y: 0.5 * y), X1, ["linear", "mul_const"]),
    "x / 2": (lambda: Act(lambda y: y / 2), X1, ["linear", "mul_const"]),
    "torch.mul(x, 3)": (lambda: Act(lambda y: torch.mul(y, 3)), X1, ["linear", "mul_const"]),
    # no-ops at inference
    "nn.Dropout": (lambda: nn.Sequential(nn.Linear(6, 5), nn.Dropout(0.3)), X1, ["linear", "dropout"]),
    "F.dropout": (FDropout, X1, ["linear", "dropout"]),
    "nn.Dropout2d": (lambda: Fn(nn.Dropout2d(0.1)), X2, ["conv2d", "dropout"]),
    "nn.Identity": (lambda: nn.Sequential(nn.Linear(6, 5), nn.Identity()), X1, ["linear", "identity"]),
}


@pytest.mark.parametrize("case", list(SPELLINGS))
def test_spelling(case):
    torch.manual_seed(0)
    factory, shape, expected = SPELLINGS[case]
    model = _randomize(factory())
    graph = roundtrip(model, torch.randn(shape))
    assert ops(graph) == expected, f"{case}:\n{graph}"


def test_mul_const_values():
    g_mul = trace(Act(lambda y: y * 0.5), torch.randn(X1))
    g_div = trace(Act(lambda y: y / 4), torch.randn(X1))
    assert g_mul.find("mul_const")[0].attrs["value"] == 0.5
    assert g_div.find("mul_const")[0].attrs["value"] == 0.25


def test_clamp_bounds_recorded():
    graph = trace(Act(lambda y: torch.clamp(y, -0.25, 0.5)), torch.randn(X1))
    (node,) = graph.find("clamp")
    assert node.attrs == {"min": -0.25, "max": 0.5}


def test_conv_attrs_recorded():
    graph = trace(nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, bias=False), torch.randn(2, 4, 9, 9))
    (conv,) = graph.find("conv2d")
    assert conv.attrs == {"stride": (2, 2), "padding": (1, 1), "dilation": (1, 1), "groups": 2}
    assert set(conv.params) == {"weight"}
    assert conv.shape == (None, 8, 5, 5)


# ------------------------------------------------------------------------------------------
# ops outside the table


@pytest.mark.parametrize("case,name", [
    ("torch.sigmoid", "sigmoid"),
    ("nn.GELU", "GELU"),
    ("x.tanh()", "tanh"),
    ("a - b", "sub"),
    ("torch.div(rounding_mode=floor)", "div"),
])
def test_unknown_op_becomes_opaque(case, name):
    factories = {
        "torch.sigmoid": lambda: Act(torch.sigmoid),
        "nn.GELU": lambda: nn.Sequential(nn.Linear(6, 5), nn.GELU(), nn.Linear(5, 4)),
        "x.tanh()": lambda: Act(lambda y: y.tanh()),
        "a - b": lambda: Two(lambda a, b: a - b),
        # floor division is not a constant multiply: it must not become mul_const
        "torch.div(rounding_mode=floor)": lambda: Act(lambda y: torch.div(y, 2, rounding_mode="floor")),
    }
    model = factories[case]()
    x = torch.randn(X2 if case == "a - b" else X1)
    graph = roundtrip(model, x)
    (node,) = graph.find("opaque")
    assert node.attrs["name"].endswith(name)
    line = node.format()
    assert line.startswith(f"%{node.id} = opaque(")
    assert name in line
    assert "opaque" in str(graph)


def test_opaque_with_constant_arguments_round_trips():
    """Constant arguments of an unknown call are baked into the node (here ``alpha=2``)."""
    graph = roundtrip(Two(lambda a, b: torch.add(a, b, alpha=2)), torch.randn(X2))
    assert ops(graph) == ["conv2d", "conv2d", "opaque"]


def test_source_lines_point_at_user_code():
    graph = trace(Act(torch.relu), torch.randn(X1))
    (relu,) = graph.find("relu")
    assert relu.source.short_file == "test_fx_roundtrip.py"
    lines, start = inspect.getsourcelines(Act.forward)
    assert relu.source.line == start + [i for i, ln in enumerate(lines) if "self.fn(" in ln][0]
    assert "self.fn(self.lin(x))" in relu.source.code
    lin = graph.find("linear")[0]
    assert lin.source.module_path == "lin"
