"""trace -> emit reproduces the reference models (snncompile.models): the canonical ops they
trace to, per-sample shapes in the graph (an emitted graph runs at another batch size), and an
emitted module that reads like the model and holds its parameters."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from fx_cases import TOL, _randomize, roundtrip
from snncompile import emit, run_graph, trace
from snncompile.models import MODELS, get_model

# the big ones at batch 2; resnet18 is fully convolutional, so an 8x8 image keeps it quick
_INPUT_SHAPE = {"resnet18": (3, 8, 8)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_round_trip(name):
    torch.manual_seed(0)
    model = _randomize(get_model(name))
    shape = _INPUT_SHAPE.get(name, MODELS[name].input_shape)
    x = torch.rand((2, *shape), generator=torch.Generator().manual_seed(1))
    graph = roundtrip(model, x)
    n_conv = sum(isinstance(m, (nn.Conv1d, nn.Conv2d)) for m in model.modules())
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    n_lin = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert len(graph.find("conv2d")) == n_conv
    assert len(graph.find("batchnorm")) == n_bn
    assert len(graph.find("linear")) == n_lin
    assert not graph.find("opaque"), f"{name} traced with opaque nodes:\n{graph}"
    assert graph.output.shape == (None, 10)


def test_mnist_cnn_shapes_in_meta():
    graph = trace(get_model("mnist_cnn"), torch.rand(2, 1, 28, 28))
    by_path = {n.source.module_path: n for n in graph.nodes if n.source and n.source.module_path}
    assert graph.inputs[0].shape == (None, 1, 28, 28)
    assert by_path["network.0"].shape == (None, 32, 26, 26)
    assert by_path["network.3"].shape == (None, 32, 13, 13)
    assert by_path["network.4"].op == "conv2d"
    assert by_path["network.4"].shape == (None, 32, 11, 11)
    assert graph.node(5) is by_path["network.4"]
    assert by_path["network.11"].shape == (None, 32, 1, 1)
    assert by_path["network.12"].op == "flatten" and by_path["network.12"].shape == (None, 32)
    assert by_path["network.13"].shape == (None, 10)
    assert all(n.meta.get("dtype") == torch.float32 for n in graph.nodes if n.op != "output")


def test_emitted_graph_runs_at_another_batch_size():
    """Shapes are per sample: ``x.view(x.size(0), -1)`` traced at batch 2 runs at batch 5."""

    class ViewNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4 * 4 * 4, 3)

        def forward(self, x):
            x = self.conv(x)
            return self.fc(x.view(x.size(0), -1))

    model = ViewNet().eval()
    graph = trace(model, torch.rand(2, 1, 6, 6))
    x = torch.rand(5, 1, 6, 6)
    with torch.no_grad():
        assert torch.allclose(run_graph(graph, x), model(x), atol=TOL)


def test_emitted_module_is_readable_and_holds_params():
    model = _randomize(get_model("mnist_cnn"))
    graph = trace(model, torch.rand(2, 1, 28, 28))
    gm = emit(graph)
    code = gm.code
    assert "conv2d" in code and "avg_pool2d" in code
    # batch norm is a module so that .train() switches it to batch statistics
    assert "self.network_1(" in code and type(gm.network_1).__name__ == "_BatchNorm"
    assert not gm.training  # emitted modules start in eval mode, computing what the graph says
    n_params = sum(p.numel() for p in gm.parameters()) + sum(
        b.numel() for name, b in gm.named_buffers() if "running" in name)
    assert n_params == sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for name, b in model.named_buffers() if "running" in name)
    assert set(gm.ir_names) == {n.id for n in graph.nodes if n.op != "output"}
