"""avgpool-to-sumpool: average pooling becomes sum pooling, its 1/k^2 folded into the next layer."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import snncompile
from snncompile import PassContext, Pipeline
from snncompile.emit import run_graph

FUNC_TOL = 1e-5  # relative to the output's max magnitude

GOLDEN = """\
%0 = input()                                                             # [N,2,8,8]
%1 = conv2d(%0) weight=f32[4,2,3,3] bias=f32[4] stride=1 padding=1       # 0  [N,4,8,8]
%2 = relu(%1)                                                            # 1  [N,4,8,8]
%3 = sumpool2d(%2) kernel_size=2 stride=2 padding=0                      # 2  [N,4,4,4]
%4 = conv2d(%3) weight=f32[5,4,3,3] bias=f32[5] stride=1 padding=0       # 3  [N,5,2,2]
%5 = relu(%4)                                                            # 4  [N,5,2,2]
%6 = sumpool2d(%5) kernel_size=2 stride=2 padding=0                      # 5  [N,5,1,1]
%7 = flatten(%6)                                                         # 6  [N,5]
%8 = linear(%7) weight=f32[3,5] bias=f32[3]                              # 7  [N,3]
%9 = output(%8)                                                          # [N,3]"""


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 5, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()


def _run(model, x, spec="canonicalize,avgpool-to-sumpool"):
    pipe = Pipeline(spec)
    return pipe, pipe.run(snncompile.trace(model, x), PassContext())


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_golden_text_and_folded_weights():
    model = _net()
    x = torch.rand(8, 2, 8, 8)
    pipe, g = _run(model, x)
    assert str(g) == GOLDEN
    assert not g.find("mul_const") and not g.find("avgpool2d") and not g.find("adaptive_avgpool2d")
    before = pipe.stage("canonicalize")
    # the 1/4 of each 2x2 pool went into the weights of the layer after it; biases untouched
    for layer_id in (4, 8):
        w0, w1 = before.node(layer_id).params["weight"], g.node(layer_id).params["weight"]
        assert torch.allclose(w1, w0 / 4, rtol=1e-6, atol=0), layer_id
        assert torch.equal(before.node(layer_id).params["bias"], g.node(layer_id).params["bias"])
    # the first layer reads no pool: unchanged
    assert torch.equal(before.node(1).params["weight"], g.node(1).params["weight"])


def test_function_unchanged():
    model = _net()
    x = torch.rand(16, 2, 8, 8)
    _, g = _run(model, x)
    with torch.no_grad():
        assert _rel(run_graph(g, x), model(x)) < FUNC_TOL


def test_mul_const_stays_when_no_weighted_layer_follows():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2)).eval()
    x = torch.rand(8, 2, 8, 8)
    _, g = _run(model, x)
    (pool,) = g.find("sumpool2d")
    (mc,) = g.find("mul_const")
    assert mc.inputs == [pool] and mc.attrs["value"] == 0.25
    assert g.output.inputs == [mc]
    with torch.no_grad():
        assert _rel(run_graph(g, x), model(x)) < FUNC_TOL


def test_adaptive_avgpool_divisible_becomes_sumpool():
    torch.manual_seed(2)
    # 8x8 -> (2, 4): windows of (4, 2), 8 values each
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((2, 4)), nn.Flatten(),
                          nn.Linear(4 * 2 * 4, 3)).eval()
    x = torch.rand(8, 2, 8, 8)
    pipe, g = _run(model, x)
    (pool,) = g.find("sumpool2d")
    assert tuple(pool.attrs["kernel_size"]) == (4, 2) and tuple(pool.attrs["stride"]) == (4, 2)
    assert "sumpool2d(%2) kernel_size=(4,2) stride=(4,2) padding=0" in str(g)
    assert not g.find("adaptive_avgpool2d") and not g.find("mul_const")
    lin0 = pipe.stage("canonicalize").find("linear")[0].params["weight"]
    assert torch.allclose(g.find("linear")[0].params["weight"], lin0 / 8, rtol=1e-6, atol=0)
    with torch.no_grad():
        assert _rel(run_graph(g, x), model(x)) < FUNC_TOL


def test_adaptive_avgpool_not_divisible_is_left_alone():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
                          nn.Linear(36, 2)).eval()
    x = torch.rand(8, 2, 8, 8)
    _, g = _run(model, x)
    assert len(g.find("adaptive_avgpool2d")) == 1 and not g.find("sumpool2d")
    with torch.no_grad():
        assert _rel(run_graph(g, x), model(x)) < FUNC_TOL


@pytest.mark.parametrize("pool", [nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
                                  nn.AvgPool2d(3, stride=2, ceil_mode=True),
                                  nn.AvgPool2d(2, divisor_override=3)],
                         ids=["exclude_pad", "ceil_mode", "divisor_override"])
def test_pools_with_varying_divisor_are_left_alone(pool):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), pool, nn.Flatten()).eval()
    x = torch.rand(4, 2, 8, 8)
    y = model(x)
    model = nn.Sequential(*model, nn.Linear(y.shape[1], 3)).eval()
    _, g = _run(model, x)
    assert len(g.find("avgpool2d")) == 1 and not g.find("sumpool2d")
    with torch.no_grad():
        assert _rel(run_graph(g, x), model(x)) < FUNC_TOL


def test_padded_avgpool_counting_pad_converts():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(3, stride=2, padding=1),
                          nn.Conv2d(4, 3, 3)).eval()
    x = torch.rand(4, 2, 8, 8)
    _, g = _run(model, x)
    (pool,) = g.find("sumpool2d")
    assert tuple(pool.attrs["padding"]) == (1, 1) and not g.find("mul_const")
    with torch.no_grad():
        assert _rel(run_graph(g, x), model(x)) < FUNC_TOL
