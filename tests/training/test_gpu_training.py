"""Direct training on a GPU (``@pytest.mark.gpu``; skipped without CUDA and CuPy): the MNIST CNN
from ``to_trainable`` with the CuPy kernels gives the torch reference's spikes and, to float
rounding, its gradients, including a learnable threshold and the hoisted static-input neuron."""
from __future__ import annotations

import pytest
import torch

import snncompile
from snncompile.kernels.cuda_launch import cupy_available
from snncompile.losses import ce_rate_loss
from snncompile.models import get_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not (torch.cuda.is_available() and cupy_available()), reason="needs CUDA and CuPy")]


@pytest.mark.parametrize("neuron", ["if", "lif"])
def test_cupy_training_step_matches_the_torch_reference(neuron):
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28, device="cuda")
    y = torch.randint(0, 10, (16,), device="cuda")
    res = {}
    for backend in ("torch", "cupy"):
        torch.manual_seed(1)
        snn = snncompile.to_trainable(get_model("mnist_cnn"), T=4, neuron=neuron, surrogate="atan",
                                      learn_threshold=True, backend=backend, device="cuda")
        assert all(n.backend == backend for n in snn.neurons().values())
        seq = snn.run_sequence(x)
        ce_rate_loss(seq, y).backward()
        res[backend] = (seq.detach(), {k: p.grad.detach().clone() for k, p in snn.named_parameters()})
    torch.testing.assert_close(res["cupy"][0], res["torch"][0], rtol=1e-5, atol=1e-5)
    for k, g in res["torch"][1].items():
        torch.testing.assert_close(res["cupy"][1][k], g, rtol=1e-3, atol=1e-5, msg=k)
