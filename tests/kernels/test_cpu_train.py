"""The CPU training kernels (kernels/cpu_neuron_train.c via cpu_train.py) against the reference.

Forward: spikes and final v equal ``neuron_reference`` bit for bit. Backward: gradients of x,
the threshold and the initial v equal autograd through the reference to float rounding (the C
backward sums in another order; sigmoid's expf differs from torch's by an ulp), over every
neuron kind, reset, input kind, threshold kind, detach_reset and surrogate.
"""
from __future__ import annotations

import itertools
import zlib

import pytest
import torch

from snncompile.kernels import run_neuron
from snncompile.kernels.cpu import cpu_kernel_available
from snncompile.kernels.cpu_train import train_cpu, train_library
from snncompile.neurons import NeuronSpec, neuron_reference
from snncompile.surrogate import SURROGATES

pytestmark = pytest.mark.skipif(not cpu_kernel_available(), reason="no C compiler here")

_FAMILIES = [("if", "spikingjelly"), ("lif", "spikingjelly"), ("lif", "snntorch"), ("signed_if", "spikingjelly")]


def _spec(kind, form, **kw):
    """A spec of ``kind``; the LIF-only settings (form, tau, beta, v_rest) apply to LIF alone and
    the value reset only to the families that have it."""
    if kind == "lif":
        kw["form"] = form
    else:
        for k in ("tau", "beta", "v_rest"):
            kw.pop(k, None)
    if kind == "signed_if":
        kw.pop("v_reset", None)
    return NeuronSpec(kind, **kw)


def _grads(fn, x, th, v, spec, T):
    s, vo = fn(x, th, spec, T, v)
    w = torch.linspace(-1, 1, s.numel()).reshape(s.shape)  # a loss that weighs every spike differently
    loss = (s * w).sum() + 0.3 * vo.sum()
    wrt = [x, th] + ([v] if v is not None else [])
    return s.detach(), vo.detach(), torch.autograd.grad(loss, wrt)


_GRID = list(itertools.product(_FAMILIES, ["subtract", "value"], [False, True], [False, True], [False, True],
                               [False, True], ["atan"]))
# every surrogate on a smaller grid (the surrogate only changes one expression in the kernel)
_GRID += [(f, r, st, True, False, True, sur) for f in _FAMILIES for r in ("subtract", "value") for st in (False, True)
          for sur in sorted(SURROGATES) if sur != "atan"]


_GRID = [g for g in _GRID if not (g[0][0] == "signed_if" and g[1] == "value")]  # signed: subtract only


@pytest.mark.parametrize("family,reset,static,per_channel,detach,has_v,surrogate", _GRID)
def test_training_kernel_matches_reference(family, reset, static, per_channel, detach, has_v, surrogate):
    kind, form = family
    spec = _spec(kind, form, reset=reset, input_kind="static" if static else "sequence",
                 surrogate=surrogate, detach_reset=detach, v_init=0.3, v_reset=-0.1, tau=2.5, beta=0.8, v_rest=0.05)
    # (a seed from the case's text: hash() of strings changes with every process, PYTHONHASHSEED)
    gen = torch.Generator().manual_seed(zlib.crc32(repr((family, reset, static, per_channel, detach, has_v)).encode()))
    T, shape = 5, (3, 4, 2, 3)
    x = (1.2 * torch.randn(shape if static else (T,) + shape, generator=gen)).requires_grad_()
    th = (torch.rand(4, generator=gen) + 0.5 if per_channel else torch.tensor(1.0)).requires_grad_()
    v = (0.5 * torch.randn(shape, generator=gen)).requires_grad_() if has_v else None
    s_ref, v_ref, g_ref = _grads(neuron_reference, x, th, v, spec, T)
    s_c, v_c, g_c = _grads(train_cpu, x, th, v, spec, T)
    assert torch.equal(s_ref, s_c) and torch.equal(v_ref, v_c)
    assert (s_ref > 0).any() and (s_ref == 0).any()  # the case exercises both branches
    if spec.family.spikes == "signed":
        assert (s_ref < 0).any()
    for a, b in zip(g_ref, g_c):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()) + 1e-6)


def test_run_neuron_cpu_backend_takes_the_training_kernel_under_autograd():
    spec = NeuronSpec(kind="lif", surrogate="atan")
    x = torch.randn(4, 2, 8, requires_grad=True)
    s, _ = run_neuron(x, torch.tensor(1.0), spec, 4, None, "cpu")
    assert type(s.grad_fn).__name__ == "_CpuNeuronFunctionBackward"
    s_ref, _ = neuron_reference(x, torch.tensor(1.0), spec)
    assert torch.equal(s, s_ref)


def test_fused_sumpool_under_autograd_pools_the_training_kernel_spikes():
    spec = NeuronSpec(kind="if", surrogate="atan", input_kind="static")
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    p, _ = run_neuron(x, torch.tensor(0.7), spec, 3, None, "cpu", sumpool=2)
    assert type(p.grad_fn).__name__ == "_CpuNeuronFunctionBackward"  # the fused training kernel
    s_ref, _ = neuron_reference(x, torch.tensor(0.7), spec, 3)
    p_ref = torch.nn.functional.avg_pool2d(s_ref.reshape(6, 3, 6, 6), 2, 2, divisor_override=1).reshape(3, 2, 3, 3, 3)
    assert torch.equal(p, p_ref)
    g, = torch.autograd.grad(p.sum(), x)
    g_ref, = torch.autograd.grad(p_ref.sum(), x)
    torch.testing.assert_close(g, g_ref)


def test_no_surrogate_or_other_dtype_means_no_training_kernel():
    x = torch.randn(3, 4, requires_grad=True)
    assert train_cpu(x, torch.tensor(1.0), NeuronSpec(), None, None) is None
    assert train_cpu(x.double(), torch.tensor(1.0), NeuronSpec(surrogate="atan"), None, None) is None


def test_a_registered_surrogate_gets_its_own_training_library():
    from snncompile.surrogate import Surrogate, register_surrogate
    register_surrogate(Surrogate("test_rect", 1.0, lambda x, a: (x.abs() < 0.5 / a).float() * a,
                                 "(fabsf(x) < 0.5f / alpha ? alpha : 0.0f)"))
    try:
        assert train_library("test_rect") is not None
        spec = NeuronSpec(kind="if", surrogate="test_rect")
        x = torch.randn(4, 5, 6, requires_grad=True)
        _, _, g_ref = _grads(neuron_reference, x, torch.tensor(1.0).requires_grad_(), None, spec, None)
        _, _, g_c = _grads(train_cpu, x, torch.tensor(1.0).requires_grad_(), None, spec, None)
        for a, b in zip(g_ref, g_c):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    finally:
        from snncompile.surrogate import SURROGATES
        SURROGATES.pop("test_rect", None)


def test_a_failed_training_build_falls_back_to_the_reference(monkeypatch, tmp_path):
    from snncompile.kernels import cpu_train
    bad = tmp_path / "cpu_neuron_train.c"
    bad.write_text("this is not C;\n")
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cpu_train, "TRAIN_SOURCE", bad)
    monkeypatch.setattr(cpu_train, "_libs", {})
    monkeypatch.setattr(cpu_train, "_errors", {})
    spec = NeuronSpec(kind="if", surrogate="atan")
    x = torch.randn(3, 2, 5, requires_grad=True)
    assert cpu_train.train_cpu(x, torch.tensor(1.0), spec, None, None) is None
    assert "building the CPU neuron kernel failed" in cpu_train.train_library_error("atan")
    s, _ = run_neuron(x, torch.tensor(1.0), spec, 3, None, "cpu")  # the reference instead
    assert type(s.grad_fn).__name__ != "_CpuNeuronFunctionBackward"
    assert torch.equal(s, neuron_reference(x, torch.tensor(1.0), spec)[0])


@pytest.mark.parametrize("family,reset,static,per_channel,has_v,k,hw", [
    (f, r, st, pc, hv, k, hw) for f in _FAMILIES for r in ("subtract", "value") for st in (False, True)
    for pc, hv in ((False, False), (True, True)) for k, hw in ((2, (6, 7)), (3, (5, 5)))
    if not (f[0] == "signed_if" and r == "value")])
def test_pooled_training_kernel_matches_pooled_reference(family, reset, static, per_channel, has_v, k, hw):
    """The neuron fused with a k x k sum pool (floor: a 7-wide plane with k=2 drops a column, which
    must still be simulated and get no pooled gradient): window sums and v bit for bit, gradients
    to float rounding, against neuron_reference + avg_pool2d(divisor_override=1)."""
    from snncompile.kernels.cpu import pooled_reference
    kind, form = family
    spec = _spec(kind, form, reset=reset, input_kind="static" if static else "sequence",
                 surrogate="atan", v_init=0.3, v_reset=-0.1, tau=2.5, beta=0.8)
    gen = torch.Generator().manual_seed(11)
    T, shape = 4, (2, 3) + hw
    x = (1.2 * torch.randn(shape if static else (T,) + shape, generator=gen)).requires_grad_()
    th = (torch.rand(3, generator=gen) + 0.5 if per_channel else torch.tensor(1.0)).requires_grad_()
    v = (0.5 * torch.randn(shape, generator=gen)).requires_grad_() if has_v else None
    ref = _grads(lambda *a: pooled_reference(*a, sumpool=k), x, th, v, spec, T)
    got = _grads(lambda *a: train_cpu(*a, sumpool=k), x, th, v, spec, T)
    assert got[0].shape == (T, 2, 3, hw[0] // k, hw[1] // k)
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])
    for a, b in zip(ref[2], got[2]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()) + 1e-6)
