"""swap-maxpool-relu: maxpool(relu(x)) becomes relu(maxpool(x)), exactly the same ANN."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import snncompile
from snncompile import PassContext, Pipeline
from snncompile.emit import run_graph

GOLDEN = """\
%0 = input()                                                             # [N,2,8,8]
%1 = conv2d(%0) weight=f32[4,2,3,3] bias=f32[4] stride=1 padding=1       # 0  [N,4,8,8]
%3 = maxpool2d(%1) kernel_size=2 stride=2 padding=0                      # 2  [N,4,4,4]
%2 = relu(%3)                                                            # 1  [N,4,4,4]
%4 = conv2d(%2) weight=f32[4,4,3,3] bias=f32[4] stride=1 padding=1       # 3  [N,4,4,4]
%6 = maxpool2d(%4) kernel_size=3 stride=2 padding=1                      # 5  [N,4,2,2]
%5 = relu(%6)                                                            # 4  [N,4,2,2]
%7 = flatten(%5)                                                         # 6  [N,16]
%8 = linear(%7) weight=f32[3,16] bias=f32[3]                             # 7  [N,3]
%9 = output(%8)                                                          # [N,3]"""


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
                         nn.Flatten(), nn.Linear(16, 3)).eval()


def test_golden_text_relu_after_maxpool():
    model = _net()
    x = torch.randn(8, 2, 8, 8)
    pipe = Pipeline("swap-maxpool-relu{where=all}")
    g = pipe.run(snncompile.trace(model, x), PassContext())
    assert str(g) == GOLDEN
    for r in g.find("relu"):
        assert r.inputs[0].op == "maxpool2d"
        assert r.shape == r.inputs[0].shape
    for p in g.find("maxpool2d"):
        assert p.inputs[0].op == "conv2d"
    # the input graph is not modified
    assert "%2 = relu(%1)" in str(pipe.stage("input"))


def test_default_swaps_only_pools_on_static_currents():
    model = _net()
    x = torch.randn(8, 2, 8, 8)
    g = Pipeline("swap-maxpool-relu").run(snncompile.trace(model, x), PassContext())
    text = str(g)
    assert "%3 = maxpool2d(%1)" in text and "%2 = relu(%3)" in text  # first pool: input static
    assert "%5 = relu(%4)" in text and "%6 = maxpool2d(%5)" in text  # second: reads spikes later
    with torch.no_grad():
        assert torch.equal(run_graph(g, x), model(x))


def test_bad_option_is_refused():
    with pytest.raises(snncompile.errors.ConfigError, match="where must be"):
        Pipeline("swap-maxpool-relu{where=sometimes}").run(snncompile.trace(_net(), torch.randn(2, 2, 8, 8)))


def test_ann_function_is_exactly_the_same():
    model = _net()
    x = torch.randn(32, 2, 8, 8)  # negative inputs: the ReLUs really clip
    g = Pipeline("swap-maxpool-relu").run(snncompile.trace(model, x), PassContext())
    with torch.no_grad():
        assert torch.equal(run_graph(g, x), model(x))


def test_relu_with_another_reader_is_not_swapped():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(2, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 4 * 4 + 4 * 8 * 8, 3)

        def forward(self, x):
            r = F.relu(self.c(x))
            p = F.max_pool2d(r, 2)
            return self.fc(torch.cat([torch.flatten(p, 1), torch.flatten(r, 1)], 1))

    torch.manual_seed(1)
    model = Two().eval()
    x = torch.randn(4, 2, 8, 8)
    g0 = snncompile.trace(model, x)
    g = Pipeline("swap-maxpool-relu").run(g0, PassContext())
    assert str(g) == str(g0)  # relu read by the pool and the cat: nothing to swap
    with torch.no_grad():
        assert torch.equal(run_graph(g, x), model(x))
