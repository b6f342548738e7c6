"""3-D data (video, volumes) where it is cheap: conv3d, batch norm 3d (folded or alone), ReLU and
a global average pool (every spelling), through both frontends and the conversion."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import snncompile
from fx_cases import _randomize, ops, roundtrip


class Net3d(nn.Module):
    def __init__(self, pool: str):
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(2, 6, 3, padding=1), nn.BatchNorm3d(6), nn.ReLU(),
                                  nn.Conv3d(6, 8, 3, stride=2, padding=1), nn.ReLU(), nn.BatchNorm3d(8),
                                  nn.Conv3d(8, 8, 1), nn.ReLU())
        self.pool = pool
        self.gap = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        y = self.body(x)
        y = self.gap(y).flatten(1) if self.pool == "module" else y.mean((2, 3, 4))
        return self.fc(y)


@pytest.mark.parametrize("pool", ["module", "mean"])
def test_a_3d_cnn_traces_to_canonical_ops_and_converges(pool):
    torch.manual_seed(0)
    model = _randomize(Net3d(pool))
    x = torch.rand(8, 2, 6, 8, 8)
    graph = roundtrip(model, x)
    assert "opaque" not in ops(graph) and ops(graph).count("conv3d") == 3
    snn = snncompile.compile(model, x, T=256, percentile=100.0)
    assert len(snn.graph.find("conv3d")) == 4  # the lone BN3d after a ReLU: a depthwise 1x1x1 conv
    with torch.no_grad():
        want = model(x)
        errs = {t: float((snn(x, T=t) - want).norm() / want.norm()) for t in (16, 256)}
    assert errs[256] < 0.5 * errs[16] and errs[256] < 0.1, errs


def test_a_3d_cnn_from_onnx_matches_onnxruntime(tmp_path):
    from onnx_cases import export, ort_run
    torch.manual_seed(0)
    model = _randomize(Net3d("mean"))
    x = torch.rand(2, 2, 6, 8, 8)
    path = export(model, x, tmp_path / "net3d.onnx", opset=13, dynamo=False)
    graph = snncompile.from_onnx(path)
    assert [n.op for n in graph.nodes].count("conv3d") == 3
    got = snncompile.run_graph(graph, x)
    (want,) = ort_run(path, x)
    assert float((got - torch.from_numpy(want)).abs().max()) <= 1e-4
