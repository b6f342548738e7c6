"""Passes that changed the network silently (issue 12, the compile path): swap-maxpool-relu
swapping a spike-driven pool under Poisson or sequence encoding, and insert-surrogate turning
``torch.clamp(x, max=c)`` (no floor: no activation) into a neuron."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import snncompile
from snncompile import PassContext, Pipeline
from snncompile.emit import run_graph


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16, 3)).eval()


def _swapped(g) -> list[bool]:
    """For each max pool, in order: True when it was moved before its ReLU (it reads a conv)."""
    return [p.inputs[0].op == "conv2d" for p in g.find("maxpool2d")]


def _compile(encoding):
    x = torch.rand(16, 2, 8, 8)
    return snncompile.compile(_net(), x, T=4, normalize="max", backend="torch", encoding=encoding)


def test_direct_encoding_swaps_only_the_pool_on_the_static_current():
    g = _compile("direct").pipeline.stage("swap-maxpool-relu")
    assert _swapped(g) == [True, False]


def test_poisson_encoding_swaps_no_pool():
    """Under Poisson encoding the first conv sees spikes, so its current changes every step: its
    pool stays after the neuron and becomes a count-gated spike pool, like the others."""
    snn = _compile("poisson")
    assert _swapped(snn.pipeline.stage("swap-maxpool-relu")) == [False, False]
    g = snn.pipeline.stage("spike-maxpool")
    assert not g.find("maxpool2d")  # both are spike pools now
    assert snn(torch.rand(4, 2, 8, 8)).shape == (4, 3)


@pytest.mark.parametrize("spec", [
    "swap-maxpool-relu,encode-input{method=poisson}",       # the encoding declared by a later pass
    "encode-input{method=poisson},swap-maxpool-relu",       # or an encode node already in the graph
    "swap-maxpool-relu,encode-input{method=sequence}",
])
def test_swap_sees_the_encoding_wherever_it_is(spec):
    g = Pipeline(spec).run(snncompile.trace(_net(), torch.rand(2, 2, 8, 8)), PassContext())
    assert _swapped(g) == [False, False]


def test_swap_after_a_direct_encode_still_swaps_and_keeps_the_ann():
    x = torch.randn(8, 2, 8, 8)
    g = Pipeline("swap-maxpool-relu").run(snncompile.trace(_net(), x), PassContext())
    assert _swapped(g) == [True, False]
    g2 = Pipeline("encode-input,swap-maxpool-relu").run(snncompile.trace(_net(), x), PassContext())
    assert _swapped(g2) == [True, False]
    with torch.no_grad():
        assert torch.equal(run_graph(g, x), _net()(x))


def test_where_all_still_swaps_everything_under_poisson():
    g = Pipeline("swap-maxpool-relu{where=all},encode-input{method=poisson}").run(
        snncompile.trace(_net(), torch.rand(2, 2, 8, 8)), PassContext())
    assert _swapped(g) == [True, True]


# ------------------------------------------------------------------------------------------
# insert-surrogate and clamps


class _Clamped(nn.Module):
    def __init__(self, lo, hi):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.lo, self.hi = nn.Linear(4, 8), nn.Linear(8, 3), lo, hi

    def forward(self, x):
        return self.b(torch.clamp(self.a(x), min=self.lo, max=self.hi))


def _trainable(model):
    return snncompile.to_trainable(model, T=2, example_input=torch.zeros(2, 4), backend="torch")


def test_clamp_with_no_floor_stays_a_clamp():
    """clamp(x, max=c) passes negative values through: it is no ReLU, so no neuron stands in."""
    snn = _trainable(_Clamped(None, 0.5))
    g = snn.pipeline.stage("insert-surrogate")
    (c,) = g.find("clamp")
    assert c.attrs.get("min") is None and c.attrs["max"] == 0.5
    assert not g.find("neuron") and not snn.neurons()


@pytest.mark.parametrize("lo", [0, 0.0])
def test_clamp_with_floor_zero_becomes_a_neuron(lo):
    g = _trainable(_Clamped(lo, 0.5)).pipeline.stage("insert-surrogate")
    assert not g.find("clamp") and len(g.find("neuron")) == 1


def test_clamp_with_another_floor_is_refused():
    with pytest.raises(snncompile.errors.UnsupportedOpError, match="clamps below at -1"):
        _trainable(_Clamped(-1.0, 0.5))
