"""CUDA neuron kernels on the GPU (``@pytest.mark.gpu``, skipped without CUDA + CuPy), for every
registered neuron family: every specialisation on the device, spikes (or the fused sum pool's
window sums) element for element, the final membrane and the gradients (against autograd
through ``neuron_reference`` with the same surrogate) to tight tolerances; odd sizes, T=1,
T=512, empty tensors, non-contiguous and unaligned inputs, torch.compile, CUDA graphs, a family
registered from user code.
"""
from __future__ import annotations

import pytest
import torch

from cuda_kernel_cases import (BWD, FWD, check_forward, gain_family_registered, pool, rel_err, run_backward_checks,
                               run_forward_checks)
from snncompile.kernels import cuda_kernels as ck
from snncompile.kernels import cuda_launch as cl
from snncompile.neurons import NeuronSpec, neuron_reference

gain_family = pytest.fixture(gain_family_registered)


def _cuda_and_cupy() -> bool:
    return torch.cuda.is_available() and cl.cupy_available()  # CuPy is imported in kernels/ only


needs_gpu = pytest.mark.skipif(not _cuda_and_cupy(), reason="needs CUDA and CuPy")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("ks", FWD, ids=lambda s: s.kernel_name)
def test_gpu_forward_matches_reference(ks):
    run_forward_checks(ks, "cuda")
    if not ks.pooled:
        check_forward(ks, (5, 3), 1, "cuda", with_v=False)  # T=1


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("ks", BWD, ids=lambda s: s.kernel_name)
def test_gpu_backward_matches_autograd(ks):
    run_backward_checks(ks, "cuda")


def _ref_and_grads(fn, leaves, gs_seed=0):
    """Run ``fn``, then the gradients of a random weighting of its outputs (unused leaf: zeros)."""
    s, v = fn()
    g = torch.Generator(device="cuda").manual_seed(gs_seed)
    gs = torch.randn(s.shape, device="cuda", generator=g)
    gv = torch.randn(v.shape, device="cuda", generator=g)
    grads = torch.autograd.grad((s.float() * gs).sum() + (v * gv).sum(), leaves, allow_unused=True)
    return s, v, [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_run_cupy_autograd_non_contiguous(dtype):
    spec = NeuronSpec(kind="lif", form="snntorch", surrogate="sigmoid", v_init=0.5)
    leaf = torch.randn(6, 3, 7, 5, device="cuda", requires_grad=True)
    th = (torch.rand(5, device="cuda") + 0.5).requires_grad_()
    v0 = (torch.randn(3, 5, 7, device="cuda") * 0.3).requires_grad_()
    make_x = lambda: (leaf * 0.8 + 0.3).to(dtype).transpose(2, 3)  # noqa: E731  [6, 3, 5, 7], strided
    assert not make_x().is_contiguous()
    s, v, grads = _ref_and_grads(lambda: cl.run_cupy(make_x(), th, spec, None, v0), [leaf, th, v0])
    s_r, v_r, grads_r = _ref_and_grads(lambda: neuron_reference(make_x(), th, spec, None, v0), [leaf, th, v0])
    assert torch.equal(s, s_r)
    torch.testing.assert_close(v, v_r, rtol=1e-6, atol=1e-6)
    tol = {torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}[dtype]
    for a, b, t in zip(grads, grads_r, [tol, 1e-4, 1e-4]):
        assert rel_err(a, b) < t


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("kind", ["if", "signed_if", "lif"])
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_gpu_run_cupy_sum_pool(kind, static, k):
    """run_cupy(sumpool=k): the window sums of the reference spikes, the reference's v and, in
    training, its gradients (k = 5 > KMAX pools the spikes in torch, the backward stays fused)."""
    spec = NeuronSpec(kind, v_init=0.5, surrogate="atan", input_kind="static" if static else "sequence")
    x = (torch.randn((2, 3, 11, 13) if static else (6, 2, 3, 11, 13), device="cuda") * 0.8 + 0.2).requires_grad_()
    th = (torch.rand(3, device="cuda") + 0.5).requires_grad_()
    s, v, grads = _ref_and_grads(lambda: cl.run_cupy(x, th, spec, 6, sumpool=k), [x, th])
    ref_s, ref_v = neuron_reference(x, th, spec, 6)
    s_r, v_r, grads_r = _ref_and_grads(lambda: (pool(ref_s, k), ref_v), [x, th])
    assert s.shape == s_r.shape and torch.equal(s, s_r)
    torch.testing.assert_close(v, v_r, rtol=1e-6, atol=1e-6)
    for a, b in zip(grads, grads_r):
        assert rel_err(a, b) < 1e-4
    with torch.no_grad():  # the inference kernel
        s2, v2 = cl.run_cupy(x, th, spec, 6, sumpool=k)
    assert torch.equal(s2, s_r) and torch.equal(v2, v)


@pytest.mark.gpu
@needs_gpu
def test_gpu_a_user_family(gain_family):
    spec = NeuronSpec("gain_if", gain=1.7, reset="value", v_reset=-0.1, v_init=0.5, surrogate="atan")
    x = torch.randn(7, 2, 3, 6, 10, device="cuda", requires_grad=True)
    th = torch.rand(3, device="cuda") + 0.5
    def ref(k):
        s, v = neuron_reference(x, th, spec)
        return (s if k is None else pool(s, k)), v

    for k in (None, 2):
        s, v, (gx,) = _ref_and_grads(lambda: cl.run_cupy(x, th, spec, sumpool=k), [x])
        s_r, v_r, (gx_r,) = _ref_and_grads(lambda: ref(k), [x])
        assert torch.equal(s, s_r)
        torch.testing.assert_close(v, v_r, rtol=1e-6, atol=1e-6)
        assert rel_err(gx, gx_r) < 1e-4


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("shape,T,static", [((4, 250), 512, False), ((5, 0, 3), 6, False), ((4, 3), 0, False),
                                           ((4, 3), 0, True), ((0, 3), 5, True), ((1,), 1, True),
                                           ((3, 7), 1, False)])
def test_gpu_sizes(shape, T, static):
    spec = NeuronSpec(kind="if", v_init=0.5, input_kind="static" if static else "sequence", surrogate="atan")
    x = torch.randn(shape if static else (T,) + shape, device="cuda", requires_grad=True)
    th = torch.tensor(0.7, device="cuda", requires_grad=True)
    s, v, (gx, gth) = _ref_and_grads(lambda: cl.run_cupy(x, th, spec, T), [x, th])
    s_r, v_r, (gx_r, gth_r) = _ref_and_grads(lambda: neuron_reference(x, th, spec, T), [x, th])
    assert s.shape == s_r.shape and torch.equal(s, s_r)
    torch.testing.assert_close(v, v_r, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gx, gx_r, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gth, gth_r, rtol=1e-4, atol=1e-3)
    with torch.no_grad():  # the inference kernel
        s2, v2 = cl.run_cupy(x, th, spec, T)
    assert torch.equal(s2, s_r) and torch.equal(v2, v)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("tau", [3.0, 1.7])
def test_gpu_unaligned_and_tau_with_inexact_reciprocal(tau):
    spec = NeuronSpec(kind="lif", tau=tau, v_rest=0.1, v_init=0.5)
    buf = torch.randn(1 + 64 * 4096 * 8, device="cuda") + 0.4
    x = buf[1:].view(64, 4096, 8)  # contiguous, but 4 bytes off 16-byte alignment
    assert not ck._vectorised(4, 4096 * 8, (x,))
    for xx in (x, x.clone()):
        s, v = cl.run_cupy(xx, 1.0, spec)
        s_r, v_r = neuron_reference(xx, torch.tensor(1.0, device="cuda"), spec)
        assert torch.equal(s, s_r) and torch.equal(v, v_r)


@pytest.mark.gpu
@needs_gpu
def test_gpu_torch_compile_module():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(16, 32)
            self.theta = torch.nn.Parameter(torch.rand(32) + 0.5)
            self.spec = NeuronSpec(kind="lif", surrogate="atan", v_init=0.5)

        def forward(self, x):  # [T, B, 16]
            y = self.fc(x).unsqueeze(-1)  # [T, B, 32, 1]: channel dim 1 of a step
            s, v = cl.run_cupy(y, self.theta, self.spec)
            p, _ = cl.run_cupy(y.reshape(x.shape[0], x.shape[1], 2, 4, 4), 1.0, self.spec, sumpool=2)
            return s.float().mean(0).sum() + v.mean() + p.float().mean()

    net, x = Net().cuda(), torch.randn(8, 4, 16, device="cuda")
    eager = net(x)
    g_eager = torch.autograd.grad(eager, [net.fc.weight, net.theta])
    compiled = torch.compile(net, fullgraph=True)
    out = compiled(x)
    g_comp = torch.autograd.grad(out, [net.fc.weight, net.theta])
    torch.testing.assert_close(out, eager)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # CUDA graphs through torch.compile
        ro = torch.compile(net, mode="reduce-overhead", fullgraph=True)
        for _ in range(3):
            out = ro(x)
        torch.testing.assert_close(out, eager.detach())


@pytest.mark.gpu
@needs_gpu
def test_gpu_cuda_graph_capture():
    spec = NeuronSpec(kind="lif", form="snntorch", surrogate="atan", v_init=0.5)
    th = torch.rand(6, device="cuda") + 0.5
    x = torch.randn(10, 4, 6, 9, device="cuda", requires_grad=True)

    def step():
        s, v = cl.run_cupy(x, th, spec)
        (s.float().sum() + v.sum()).backward()
        return s, v

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up: compile and load every kernel outside the capture
        for _ in range(2):
            x.grad = None
            step()
            with torch.no_grad():
                cl.run_cupy(x, th, spec)
    torch.cuda.current_stream().wait_stream(side)
    x.grad = None
    g_train, g_infer = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
    with torch.cuda.graph(g_train):
        s, v = step()
    with torch.cuda.graph(g_infer), torch.no_grad():
        s_inf, v_inf = cl.run_cupy(x, th, spec)
    with torch.no_grad():
        x.copy_(torch.randn_like(x))
    g_train.replay()
    g_infer.replay()
    torch.cuda.synchronize()
    xr = x.detach().clone().requires_grad_()
    s_r, v_r = neuron_reference(xr, th, spec)
    (s_r.float().sum() + v_r.sum()).backward()
    assert torch.equal(s, s_r) and torch.equal(s_inf, s_r)
    torch.testing.assert_close(v, v_r, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-4, atol=1e-5)
