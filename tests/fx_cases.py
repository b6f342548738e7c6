"""Helpers the torch.fx frontend test modules share: ``roundtrip`` (trace -> emit -> run, compared
with the model: max abs diff <= 1e-5, fp32), the graph's ``ops``, random batch-norm statistics and
the input shapes of the small cases."""
from __future__ import annotations

import torch
import torch.nn as nn

from snncompile import run_graph, trace
from snncompile.ir import Graph

TOL = 1e-5


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN running stats (so BN is not the identity), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model.eval()


def roundtrip(model: nn.Module, x: torch.Tensor, tol: float = TOL) -> Graph:
    """Trace ``model`` on ``x``, emit, run, compare with the model; return the graph."""
    model.eval()
    with torch.no_grad():
        want = model(x.clone())
    graph = trace(model, x)
    got = run_graph(graph, x.clone())
    assert got.shape == want.shape
    diff = (got - want).abs().max().item()
    assert diff <= tol, f"round trip differs by {diff}\n{graph}"
    return graph


def ops(graph: Graph) -> list[str]:
    """The graph's ops without the input and output nodes."""
    return [n.op for n in graph.nodes if n.op not in ("input", "output")]


X1 = (3, 6)          # linear inputs
X2 = (2, 3, 8, 8)    # conv2d inputs
