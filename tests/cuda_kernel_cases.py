"""Cases the CUDA kernel test modules share: the specialisations, the neurons' test values and
inputs, the checks of one kernel's forward and backward (on the host emulator or the GPU) against
``neuron_reference`` and autograd, and a neuron family registered from user code."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from snncompile.kernels import cuda_kernels as ck
from snncompile.kernels import cuda_launch as cl
from snncompile.kernels import custom_ops as co
from snncompile.kernels.cuda_source import list_specialisations
from snncompile.neurons import (NeuronFamily, NeuronSpec, Param, get_family, neuron_reference, register_family,
                                unregister_family)
from snncompile.neurons.params import V_INIT, reset_param
from snncompile.surrogate import SURROGATES


SPECS = list_specialisations()
FWD = [s for s in SPECS if s.mode != "backward"]
SURS = sorted(SURROGATES)
# one surrogate per kernel variant on the CPU (rotating); the GPU runs them all
BWD_SAMPLE = [dataclasses.replace(s, mode="backward", surrogate=SURS[i % len(SURS)])
              for i, s in enumerate(s for s in SPECS if s.mode == "train")]
BWD = [s for s in SPECS if s.mode == "backward"]
DT = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: the float parameters' test values (tau 2: its reciprocal is exact, so the CPU reference's
#: true division equals the kernels' multiply); a family's other parameters keep their defaults
VALUES = dict(v_init=0.5, v_reset=-0.1, v_rest=0.1, tau=2.0, beta=0.9, gain=1.5)
#: (step [N, C, H, W], k): windows cut by the bottom and right edges; k = 4 = KMAX; k = 3
POOLED = [((2, 3, 5, 7), 2), ((1, 2, 8, 8), 4), ((2, 2, 7, 6), 3)]


def neuron_spec(ks, detach=False) -> NeuronSpec:
    floats = {p.name: VALUES[p.name] for p in get_family(ks.family).float_params if p.name in VALUES}
    return NeuronSpec(ks.family, **ks.values, **floats, input_kind=ks.input_kind,
                      surrogate=ks.surrogate or "atan", detach_reset=detach)


def inputs(ks, step, T, device, with_v=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = step if ks.input_kind == "static" else (T,) + step
    signed = get_family(ks.family).spikes == "signed"  # centred, so both -1 and +1 spikes come
    x = (torch.randn(shape, generator=g) * (1.0 if signed else 0.7) + (0.0 if signed else 0.3)).to(DT[ks.dtype])
    th = torch.rand(step[1], generator=g) + 0.5 if ks.threshold == "channel" else torch.tensor(0.9)
    v = torch.randn(step, generator=g) * 0.3 if with_v else None
    return x.to(device), th.to(device), None if v is None else v.to(device)


def pool(s, k):
    """The sum pool's contract (kernels/cpu.py pooled_reference): avg_pool2d(divisor_override=1)."""
    T, N, C, H, W = s.shape
    return F.avg_pool2d(s.flatten(0, 1), k, k, divisor_override=1).reshape(T, N, C, H // k, W // k)


def rel_err(a, b) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-6)).item()


def check_forward(ks, step, T, device, with_v, k=None):
    spec = neuron_spec(ks)
    x, th, v = inputs(ks, step, T, device, with_v)
    xs, theta, vp, lay = cl.prepare(x, th, spec, T, v, require_cuda=False, sumpool=k)
    if k is None:
        assert ck._vectorised(ks.vec, lay.N, (xs, vp)) == (lay.N % ks.vec == 0)  # both paths are covered
    out, v_out, h = ck.forward(xs, theta, vp, spec, lay, ks.mode == "train", DT[ks.h_dtype or "float32"], sumpool=k)
    s_ref, v_ref = neuron_reference(x, th, spec, T, v)
    want = s_ref if k is None else pool(s_ref, k)
    assert out.dtype == x.dtype and torch.equal(out, want), f"{ks.kernel_name}: spikes differ"
    torch.testing.assert_close(v_out, v_ref, rtol=1e-6, atol=1e-6)
    if h is not None:  # the sign bit records the +1 spike
        assert torch.equal(~torch.signbit(h.float()), s_ref > 0)
    return s_ref


def check_backward(ks, step, T, device, with_v, detach, k=None):
    spec = neuron_spec(ks, detach)
    x, th, v = inputs(ks, step, T, device, with_v)
    x.requires_grad_(), th.requires_grad_()
    if v is not None:
        v.requires_grad_()
    s_ref, v_ref = neuron_reference(x, th, spec, T, v)
    out_ref = s_ref if k is None else pool(s_ref, k)
    g = torch.Generator().manual_seed(1)
    gs = torch.randn(out_ref.shape, generator=g).to(device)
    gv = torch.randn(v_ref.shape, generator=g).to(device)
    wrt = [x, th] + ([v] if v is not None else [])
    ref = torch.autograd.grad((out_ref.float() * gs).sum() + (v_ref * gv).sum(), wrt)
    xs, theta, vp, lay = cl.prepare(x.detach(), th.detach(), spec, T, None if v is None else v.detach(),
                                    require_cuda=False, sumpool=k)
    out, v_out, h = ck.forward(xs, theta, vp, spec, lay, train=True, h_dtype=DT[ks.h_dtype], sumpool=k)
    assert torch.equal(out, out_ref.detach())
    gs_io = gs.to(x.dtype)
    got = ck.backward(gs_io, gv, h, theta, spec, lay, x.dtype, v is not None, sumpool=k)
    mirror = co.torch_backward(gs_io, gv, h, theta, spec, lay, x.dtype, v is not None, sumpool=k)
    x_tol = {"float32": 1e-4, "float16": 4e-3, "bfloat16": 3e-2}[ks.dtype]
    if ks.input_kind == "static" and ks.dtype != "float32":
        x_tol *= 4  # the reference sums the T steps' gradients in the io dtype
    for name, a, m, r, tol in zip(["x", "v", "theta"], got, mirror, [ref[0], ref[2] if v is not None else None,
                                                                    ref[1]], [x_tol, 1e-4, 1e-4]):
        assert rel_err(a, m) < max(tol, 1e-5), f"{ks.kernel_name} d{name} vs the torch mirror"
        if r is not None and ks.h_dtype == "float32":  # an fp16/bf16 h moves the surrogate's argument
            assert rel_err(a.reshape(r.shape), r) < tol, f"{ks.kernel_name} d{name} vs autograd"


def run_forward_checks(ks, device):
    if ks.pooled:
        for i, (step, k) in enumerate(POOLED):
            check_forward(ks, step, 4 + i, device, with_v=i % 2 == 1, k=k)
        return
    s = check_forward(ks, (2, 4, 8), 5, device, with_v=False)  # N=64: vectorised
    if get_family(ks.family).spikes == "signed":
        assert (s < 0).any() and (s > 0).any()
    check_forward(ks, (3, 5, 7), 4, device, with_v=True)  # N=105: element-wise, a partial last thread


def run_backward_checks(ks, device):
    if ks.pooled:
        for i, (step, k) in enumerate(POOLED):
            check_backward(ks, step, 4 + i, device, with_v=i % 2 == 1, detach=i == 1, k=k)
        return
    check_backward(ks, (2, 4, 8), 5, device, with_v=False, detach=False)
    check_backward(ks, (3, 5, 7), 4, device, with_v=True, detach=True)


# --- a family from user code: IF with an input gain, v <- v + gain * x (no kernel file names it)
def _gain_family():
    return NeuronFamily("gain_if", (V_INIT, reset_param("subtract", "value"), Param("v_reset", float, 0.0),
                                    Param("gain", float, 1.0, low=0.0, low_open=True)),
                        lambda A, v, x, p: A.add(v, A.mul(p.gain, x)),
                        lambda A, g, p: (A.mul(p.gain, g), g), short="gif", doc="IF with an input gain")


def gain_family_registered():
    """``gain_if`` registered for the length of one test. A fixture in the module that needs it:
    ``gain_family = pytest.fixture(gain_family_registered)`` (a fixture imported by name would read
    as an unused import)."""
    fam = register_family(_gain_family())
    yield fam
    unregister_family("gain_if")
