"""Known activations the op table has no op for stay opaque but get a canonical identity
(``activation="gelu"``) from the fx spelling table, in every spelling; passes ask that, never
the node's name."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import snncompile
from snncompile.emit import run_graph
from snncompile.errors import UnsupportedOpError
from snncompile.frontend.fx import register_leaf_module
from snncompile.ops import ACTIVATIONS
from snncompile.pipeline import PassContext, Pipeline


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fc, self.fn = nn.Linear(4, 4), fn

    def forward(self, x):
        return self.fn(self.fc(x))


SPELLINGS = [
    ("nn.GELU", lambda: nn.GELU(), "gelu"), ("F.gelu", lambda: F.gelu, "gelu"),
    ("F.gelu(tanh)", lambda: lambda y: F.gelu(y, approximate="tanh"), "gelu"),
    ("nn.Sigmoid", lambda: nn.Sigmoid(), "sigmoid"), ("torch.sigmoid", lambda: torch.sigmoid, "sigmoid"),
    ("F.sigmoid", lambda: F.sigmoid, "sigmoid"), ("x.sigmoid()", lambda: lambda y: y.sigmoid(), "sigmoid"),
    ("torch.special.expit", lambda: torch.special.expit, "sigmoid"),
    ("nn.Tanh", lambda: nn.Tanh(), "tanh"), ("torch.tanh", lambda: torch.tanh, "tanh"),
    ("x.tanh()", lambda: lambda y: y.tanh(), "tanh"), ("F.tanh", lambda: F.tanh, "tanh"),
    ("nn.SiLU", lambda: nn.SiLU(), "silu"), ("F.silu", lambda: F.silu, "silu"),
    ("nn.ELU", lambda: nn.ELU(), "elu"), ("F.elu", lambda: F.elu, "elu"),
    ("nn.LeakyReLU", lambda: nn.LeakyReLU(0.1), "leaky_relu"), ("F.leaky_relu", lambda: F.leaky_relu, "leaky_relu"),
    ("nn.Softplus", lambda: nn.Softplus(), "softplus"), ("F.softplus", lambda: F.softplus, "softplus"),
    ("nn.Hardswish", lambda: nn.Hardswish(), "hardswish"), ("F.hardswish", lambda: F.hardswish, "hardswish"),
    ("nn.Mish", lambda: nn.Mish(), "mish"), ("F.mish", lambda: F.mish, "mish"),
    ("nn.SELU", lambda: nn.SELU(), "selu"), ("F.selu", lambda: F.selu, "selu"), ("torch.selu", lambda: torch.selu, "selu"),
    ("nn.CELU", lambda: nn.CELU(), "celu"), ("nn.Hardsigmoid", lambda: nn.Hardsigmoid(), "hardsigmoid"),
    ("nn.LogSigmoid", lambda: nn.LogSigmoid(), "logsigmoid"), ("nn.PReLU", lambda: nn.PReLU(), "prelu"),
]


@pytest.mark.parametrize("name,make,kind", SPELLINGS, ids=[s[0] for s in SPELLINGS])
def test_every_spelling_gets_its_canonical_kind(name, make, kind):
    model = Fn(make()).eval()
    x = torch.randn(3, 4)
    g = snncompile.trace(model, x)
    (op,) = g.find("opaque")
    assert op.attrs["activation"] == kind and kind in ACTIVATIONS
    assert f"activation={kind}" in op.format()
    with torch.no_grad():
        assert torch.allclose(run_graph(g, x), model(x), atol=1e-6)  # still runs what it called


@pytest.mark.parametrize("pipeline", ["relu-to-if", "normalize{mode=fixed}", "insert-surrogate"])
@pytest.mark.parametrize("make", [lambda: nn.SiLU(), lambda: torch.tanh, lambda: lambda y: y.sigmoid()],
                         ids=["nn.SiLU", "torch.tanh", "x.sigmoid()"])
def test_passes_refuse_marked_activations(pipeline, make):
    model = Fn(make()).eval()
    g = snncompile.trace(model, torch.randn(3, 4))
    (op,) = g.find("opaque")
    with pytest.raises(UnsupportedOpError) as ei:
        Pipeline(pipeline).run(g, PassContext())
    msg = str(ei.value)
    assert f"%{op.id} opaque" in msg and op.attrs["name"] in msg and "ReLU" in msg
    assert "is the activation" in msg


class MyGELUGate(nn.Module):
    """A user op whose name contains 'GELU' but is not one: x * 2."""

    def forward(self, x):
        return x * 2


def test_names_are_not_guessed():
    """An unknown op named like an activation is not one (no substring matching), and an
    opaque that is no activation (``a - b``) carries none."""
    register_leaf_module(MyGELUGate, lambda mod, site: None)  # traced as one opaque call
    g = snncompile.trace(nn.Sequential(nn.Linear(4, 4), MyGELUGate()), torch.randn(3, 4))
    (op,) = g.find("opaque")
    assert "GELU" in op.attrs["name"] and "activation" not in op.attrs
    Pipeline("relu-to-if").run(g, PassContext())  # not refused as an activation

    class Sub(nn.Module):
        def forward(self, x):
            return x - x.mean()
    g = snncompile.trace(Sub(), torch.randn(3, 4))
    assert all("activation" not in n.attrs for n in g.find("opaque"))


def test_opaque_calls_survive_graph_copies():
    """Graph.copy deep-copies attrs; the opaque call's input holes must survive it."""
    model = Fn(lambda y: torch.sigmoid(y) * 3).eval()
    x = torch.randn(3, 4)
    g = snncompile.trace(model, x).copy().copy()
    with torch.no_grad():
        assert torch.allclose(run_graph(g, x), model(x))
