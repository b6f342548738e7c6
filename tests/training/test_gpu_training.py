"""Direct training on a GPU (``@pytest.mark.gpu``; skipped without CUDA and CuPy): the MNIST CNN
from ``to_trainable`` with the CuPy kernels gives the torch reference's spikes and, to float
rounding, its gradients, including a learnable threshold and the hoisted static-input neuron;
and a conv -> neuron fused with a 2 x 2 sum pool -> linear step of every standard family."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import snncompile
from snncompile.kernels.cuda_launch import cupy_available, run_cupy
from snncompile.losses import ce_rate_loss
from snncompile.models import get_model
from snncompile.neurons import NeuronSpec, neuron_reference

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


@pytest.mark.parametrize("kind", ["if", "lif", "signed_if"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_sum_pool_training_step_matches_the_reference(kind, dtype):
    """conv -> neuron + 2 x 2 sum pool (one kernel: the spikes never reach memory) -> linear."""
    torch.manual_seed(0)
    conv, fc = torch.nn.Conv2d(3, 8, 3).cuda(), torch.nn.Linear(8 * 7 * 7, 10).cuda()
    theta = (torch.rand(8, device="cuda") + 0.5).requires_grad_()
    spec = NeuronSpec(kind, v_init=0.5, surrogate="atan")
    x, y = torch.rand(4, 5, 3, 16, 16, device="cuda"), torch.randint(0, 10, (5,), device="cuda")

    def step(neuron):
        cur = conv(x.flatten(0, 1)).unflatten(0, (4, 5)).to(dtype)  # [T, N, 8, 14, 14]
        p, v = neuron(cur)
        loss = F.cross_entropy(fc(p.float().flatten(2)).mean(0), y) + v.square().mean()
        return p, torch.autograd.grad(loss, [conv.weight, theta, fc.weight])

    def reference(cur):
        s, v = neuron_reference(cur, theta, spec)
        return F.avg_pool2d(s.flatten(0, 1), 2, divisor_override=1).unflatten(0, s.shape[:2]), v

    p, grads = step(lambda cur: run_cupy(cur, theta, spec, sumpool=2))
    p_r, grads_r = step(reference)
    assert p.shape == (4, 5, 8, 7, 7) and torch.equal(p, p_r)
    for g, g_r in zip(grads, grads_r):
        torch.testing.assert_close(g, g_r, rtol=1e-3, atol=1e-5)
