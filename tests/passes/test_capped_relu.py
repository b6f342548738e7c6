"""Capped ReLUs (ReLU6, clamp(0, c), Hardtanh(0, c)) convert with λ <= c.

An IF neuron's rate saturates at one spike per step, i.e. at λ in true units, so a ceiling c is
representable whenever λ <= c. normalize takes λ = min(percentile, c) and keeps the ceiling in λ
units (c/λ >= 1), so the normalized ANN computes the capped function exactly; relu-to-if turns
each capped ReLU into an IF neuron; the SNN then approaches the ANN as T grows.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import snncompile
from snncompile import PassContext, Pipeline, run_graph


class Capped(nn.Module):
    def __init__(self, act: nn.Module):
        super().__init__()
        self.c1 = nn.Conv2d(2, 6, 3, padding=1)
        self.act1 = act
        self.c2 = nn.Conv2d(6, 4, 3, padding=1)
        self.act2 = nn.ReLU6()
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.act2(self.c2(self.act1(self.c1(x)))), 1))


def _model(act, seed=0):
    torch.manual_seed(seed)
    m = Capped(act).eval()
    with torch.no_grad():
        m.c1.weight.mul_(25.0)  # so that many activations reach the ceiling
        m.c2.weight.mul_(10.0)
    return m


@pytest.mark.parametrize("act", [nn.ReLU6(), nn.Hardtanh(0.0, 2.5)], ids=["ReLU6", "Hardtanh(0,2.5)"])
@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_normalized_ann_computes_the_capped_function_exactly(act, granularity):
    model = _model(act)
    x = torch.rand(16, 2, 8, 8)
    pipe = Pipeline(f"canonicalize,fold-batchnorm,normalize{{mode=max granularity={granularity}}}")
    g = pipe.run(snncompile.trace(model, x), PassContext(calibration_data=x))
    with torch.no_grad():
        want = model(x)
        c1 = model.act1(model.c1(x))
    assert (c1 >= 6.0 if isinstance(act, nn.ReLU6) else c1 >= 2.5).float().mean() > 0.05  # the ceiling is hit
    assert torch.allclose(run_graph(g, x), want, atol=1e-5, rtol=1e-5)
    for n in g.find("clamp"):
        lam = n.meta["act_scale"]
        assert float(lam.max()) <= 6.0 + 1e-6 and float(n.params["ceiling"].min()) >= 1.0 - 1e-6


def test_capped_relus_become_if_neurons_and_converge():
    model = _model(nn.ReLU6())
    x = torch.rand(32, 2, 8, 8)
    snn = snncompile.compile(model, x, T=256, percentile=100.0)
    assert not snn.graph.find("clamp") and not snn.graph.find("relu")
    with torch.no_grad():
        want = model(x)
        errs = {t: float((snn(x, T=t) - want).norm() / want.norm()) for t in (16, 256)}
    assert errs[256] < 0.5 * errs[16] and errs[256] < 0.05, errs


def test_insert_surrogate_says_it_drops_the_ceiling_at_the_users_line():
    with pytest.warns(UserWarning, match="drops the ceiling") as record:
        snn = snncompile.to_trainable(_model(nn.ReLU6()), T=2, example_input=torch.rand(2, 2, 8, 8))
    assert not snn.graph.find("clamp")
    assert [w.filename for w in record if "ceiling" in str(w.message)] == [__file__]


def test_a_clamp_with_a_negative_floor_is_still_refused_naming_it():
    class Neg(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return torch.clamp(self.lin(x), -1.0, 1.0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(snncompile.errors.UnsupportedOpError, match="clamps below at -1.0"):
            snncompile.compile(Neg().eval(), torch.rand(8, 4), T=4)
