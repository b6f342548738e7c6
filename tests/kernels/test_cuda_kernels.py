"""CUDA neuron kernels against the torch reference, for every registered neuron family.

GPU tests (``@pytest.mark.gpu``, skipped without CUDA + CuPy) run every specialisation on the
device: spikes (or the fused sum pool's window sums) element for element, the final membrane
and the gradients (against autograd through ``neuron_reference`` with the same surrogate) to
tight tolerances; odd sizes, T=1, T=512, empty tensors, non-contiguous and unaligned inputs,
torch.compile, CUDA graphs, a family registered from user code.

The CPU tests need no GPU: the custom ops' torch path against the reference, and an emulation
of the very CUDA sources (built for the host with ``nvcc -x c++``) driven through the launcher's
own ``forward``/``backward``, so argument order, vectorisation, the sum-pool thread mapping and
BPTT are checked here too, for IF, LIF, signed IF and a family registered in the test.
"""
from __future__ import annotations

import ctypes
import dataclasses
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snncompile.errors import KernelError
from snncompile.kernels import cuda_kernels as ck
from snncompile.kernels import cuda_launch as cl
from snncompile.kernels import custom_ops as co
from snncompile.kernels.cuda_layout import param_args
from snncompile.kernels.cuda_source import Specialisation, kernel_signature, list_specialisations, render_source
from snncompile.neurons import (NeuronFamily, NeuronSpec, Param, get_family, neuron_families, neuron_reference,
                                register_family, unregister_family)
from snncompile.neurons.params import V_INIT, reset_param
from snncompile.surrogate import SURROGATES


def _cuda_and_cupy() -> bool:
    return torch.cuda.is_available() and cl.cupy_available()  # CuPy is imported in kernels/ only


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


# ---------------------------------------------------------------- CPU: ops, errors, emulation
@pytest.mark.parametrize("with_v", [False, True])
def test_torch_path_of_the_ops_matches_reference_autograd(with_v):
    for ks in [s for s in BWD_SAMPLE if s.h_dtype == "float32"]:
        spec = neuron_spec(ks, detach=with_v)
        step, k = ((2, 3, 5, 7), 2) if ks.pooled else ((3, 4, 5), None)
        x, th, v = inputs(ks, step, 6, "cpu", with_v)
        x.requires_grad_(), th.requires_grad_()
        s, vo = co.neuron(x, th, spec, 6, v, sumpool=k)
        s_ref, v_ref = neuron_reference(x, th, spec, 6, v)
        s_ref = s_ref if k is None else pool(s_ref, k)
        assert torch.equal(s, s_ref) and torch.equal(vo, v_ref), ks
        grads = torch.autograd.grad(s.float().sum() + (vo * vo).sum(), [x, th])
        grads_ref = torch.autograd.grad(s_ref.float().sum() + (v_ref * v_ref).sum(), [x, th])
        tol = {"float32": 1e-5, "float16": 2e-2, "bfloat16": 1e-1}[ks.dtype]
        assert rel_err(grads[0], grads_ref[0]) < tol and rel_err(grads[1], grads_ref[1]) < 1e-4, ks


def test_custom_ops_opcheck_cpu():
    cfg = co.spec_to_config(NeuronSpec("lif", surrogate="atan", v_init=0.5))
    x, th = torch.randn(5, 3, 4, requires_grad=True), torch.rand(4) + 0.5
    for v in (None, torch.randn(3, 4)):
        torch.library.opcheck(torch.ops.snncompile.neuron_train.default, (x, th, v, cfg, 5, "float32", 0))
    torch.library.opcheck(torch.ops.snncompile.neuron_infer.default, (x.detach(), th, None, cfg, 5, 0))
    cfg = co.spec_to_config(NeuronSpec("signed_if", surrogate="atan"))
    xp = torch.randn(4, 2, 4, 5, 7, requires_grad=True)
    torch.library.opcheck(torch.ops.snncompile.neuron_train.default, (xp, th, None, cfg, 4, "float32", 2))
    torch.library.opcheck(torch.ops.snncompile.neuron_infer.default, (xp.detach(), th, None, cfg, 4, 3))


def test_input_errors_are_kernel_errors():
    spec = NeuronSpec()
    with pytest.raises(KernelError, match="CUDA"):
        cl.run_cupy(torch.randn(4, 2, 3), 1.0, spec)
    with pytest.raises(KernelError, match="float32"):
        cl.prepare(torch.zeros(4, 2, 3, dtype=torch.int32), 1.0, spec, require_cuda=False)
    with pytest.raises(KernelError, match="per-channel"):
        cl.prepare(torch.randn(4, 2, 3), torch.ones(5), spec, require_cuda=False)
    with pytest.raises(KernelError, match="broadcast"):
        cl.prepare(torch.randn(4, 2, 3), 1.0, spec, v=torch.zeros(5), require_cuda=False)
    with pytest.raises(KernelError, match="needs T"):
        cl.prepare(torch.randn(2, 3), 1.0, NeuronSpec(input_kind="static"), require_cuda=False)
    for k, shape, words in [(0, (4, 1, 2, 4, 4), "positive int"), (True, (4, 1, 2, 4, 4), "positive int"),
                            (2, (4, 2, 3), r"\[N, C, H, W\]"), (3, (4, 1, 2, 2, 8), "at least 3 x 3")]:
        with pytest.raises(KernelError, match=words):
            cl.prepare(torch.randn(shape), 1.0, spec, sumpool=k, require_cuda=False)


def test_specialisations_name_family_variants():
    ks = Specialisation("lif", {"form": "snntorch"}, "float16", mode="backward", surrogate="atan")
    assert ks.values == {"reset": "subtract", "form": "snntorch"} and ks.h_dtype == "float32"
    assert dataclasses.replace(ks, mode="train", surrogate=None) in SPECS
    assert Specialisation.for_neuron(NeuronSpec("lif", form="snntorch", surrogate="atan"), torch.float16,
                                     False, "backward") == ks
    assert {s.family for s in SPECS} == set(neuron_families()) >= {"if", "lif", "signed_if"}
    for bad in [dict(family="hh"), dict(family="if", variant={"form": "snntorch"}),
                dict(family="lif", variant={"tau": 2.0}), dict(family="signed_if", variant={"reset": "value"}),
                dict(mode="backward"), dict(mode="train", h_dtype="float16")]:
        with pytest.raises(KernelError, match="invalid kernel specialisation"):
            Specialisation(**bad)
    sig = [n for _, n in kernel_signature(ks)]
    assert sig[-10:] == [f"p_{n}{i}" for n in ("v_init", "v_reset", "tau", "beta", "v_rest") for i in ("", "_inv")]


def test_float_parameters_and_fp32_reciprocals_reach_the_kernel():
    args = param_args(NeuronSpec("lif", tau=1.7, v_init=0.5, beta=0.25))
    inv = np.float32(1) / np.float32(1.7)  # torch's CUDA x / 1.7: x * (fp32(1) / fp32(1.7))
    assert inv != np.float32(1 / 1.7) and args[4:6] == (np.float32(1.7), inv) and args[5].dtype == np.float32
    assert args[:4] == (np.float32(0.5), np.float32(2.0), np.float32(0.0), np.float32(np.inf))
    assert len(param_args(NeuronSpec("signed_if"))) == 2


@pytest.mark.skipif(cl.cupy_available(), reason="CuPy is installed")
def test_missing_cupy_is_a_clear_kernel_error():
    with pytest.raises(KernelError, match="pip install cupy"):
        cl.get_kernel(SPECS[0], 0)


EMU_SHIM = """#include <math.h>
#define __host__
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(n)
struct snn_emu_dim3 { unsigned x; };
static snn_emu_dim3 blockIdx, blockDim, threadIdx;
"""
CT = {"long long": ctypes.c_longlong, "int": ctypes.c_int, "float": ctypes.c_float}


def _wrapper(ks) -> str:
    params = kernel_signature(ks)
    decl = ", ".join(f"{'void*' if '*' in t else t} {n}" for t, n in params)
    call = ", ".join(f"({t}){n}" if "*" in t else n for t, n in params)
    name = ks.kernel_name
    return (f'extern "C" void emu_{name}({decl}, long long n_threads) {{\n  using namespace {name}_impl;\n'
            f"  blockDim.x = 256;\n  for (long long i = 0; i < (n_threads + 255) / 256 * 256; ++i) {{\n"
            f"    blockIdx.x = (unsigned)(i / 256); threadIdx.x = (unsigned)(i % 256);\n"
            f"    {name}({call});\n  }}\n}}\n")


class EmuKernel:
    """A host-compiled kernel with the launcher's calling convention (``run(n_threads, args)``)."""

    def __init__(self, lib, ks):
        self.fn = getattr(lib, "emu_" + ks.kernel_name)
        types = [ctypes.c_void_p if "*" in t else CT[t] for t, _ in kernel_signature(ks)]
        self.fn.argtypes = types + [ctypes.c_longlong]

    def run(self, n_threads, args):
        self.fn(*[a.item() if isinstance(a, np.generic) else a for a in args], n_threads)


def build_emulator(specs, d, parts=2) -> dict:
    """Build the CUDA sources of ``specs`` for the host (``parts`` compiler processes), keyed by spec."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH")

    def build(i):
        part = specs[i::parts]
        (d / f"emu{i}.cpp").write_text(EMU_SHIM + "".join(render_source(s) + _wrapper(s) for s in part))
        r = subprocess.run(["nvcc", "-x", "c++", "-std=c++14", "-O0", "-shared", "-Xcompiler", "-fPIC,-w",
                            str(d / f"emu{i}.cpp"), "-o", str(d / f"emu{i}.so")], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        lib = ctypes.CDLL(str(d / f"emu{i}.so"))
        return {s: EmuKernel(lib, s) for s in part}

    with ThreadPoolExecutor(parts) as pool:
        return {k: v for part in pool.map(build, range(parts)) for k, v in part.items()}


def _emulate(monkeypatch, kernels: dict) -> list:
    used = []
    monkeypatch.setattr(ck, "get_kernel", lambda ks, device_index: used.append(ks) or kernels[ks])
    monkeypatch.setattr(ck, "_launch", lambda kernel, device, n, args: kernel.run(n, args))
    return used


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    return build_emulator(FWD + BWD_SAMPLE, tmp_path_factory.mktemp("emu"))


@pytest.fixture
def on_emulator(emulated, monkeypatch):
    return _emulate(monkeypatch, emulated)


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


@pytest.mark.parametrize("ks", FWD, ids=lambda s: s.kernel_name)
def test_emulated_forward_matches_reference(ks, on_emulator):
    run_forward_checks(ks, "cpu")
    assert set(on_emulator) == {ks}


@pytest.mark.parametrize("ks", BWD_SAMPLE, ids=lambda s: s.kernel_name)
def test_emulated_backward_matches_autograd(ks, on_emulator):
    run_backward_checks(ks, "cpu")
    assert ks in on_emulator


def test_emulated_sum_pool_beyond_kmax_pools_the_spikes(on_emulator):
    ks = next(s for s in BWD_SAMPLE if s.family == "lif" and s.pooled and s.dtype == "float32")
    check_forward(dataclasses.replace(ks, mode="train", surrogate=None), (1, 2, 11, 13), 3, "cpu", False, k=5)
    check_backward(ks, (1, 2, 11, 13), 3, "cpu", with_v=True, detach=False, k=5)
    assert [s.pooled for s in on_emulator] == [False, False, True] and on_emulator[2] == ks  # fused backward


# --- a family from user code: IF with an input gain, v <- v + gain * x (no kernel file names it)
def _gain_family():
    return NeuronFamily("gain_if", (V_INIT, reset_param("subtract", "value"), Param("v_reset", float, 0.0),
                                    Param("gain", float, 1.0, low=0.0, low_open=True)),
                        lambda A, v, x, p: A.add(v, A.mul(p.gain, x)),
                        lambda A, g, p: (A.mul(p.gain, g), g), short="gif", doc="IF with an input gain")


@pytest.fixture
def gain_family():
    fam = register_family(_gain_family())
    yield fam
    unregister_family("gain_if")


def test_a_user_family_gets_cuda_kernels(gain_family, tmp_path, monkeypatch):
    specs = [s for s in list_specialisations(["atan"], families=["gain_if"])
             if s.threshold == "channel" and s.dtype in ("float32", "bfloat16")]
    _emulate(monkeypatch, build_emulator(specs, tmp_path))
    for ks in specs:
        (run_backward_checks if ks.mode == "backward" else run_forward_checks)(ks, "cpu")


def test_custom_op_under_torch_compile_cpu():
    spec = NeuronSpec(kind="lif", surrogate="atan", v_init=0.5)
    fc, th = torch.nn.Linear(4, 4), torch.rand(4) + 0.5

    def f(x):
        s, v = co.neuron(fc(x), th, spec)
        return s.mean(0).sum() + v.sum()

    x = torch.randn(6, 3, 4)
    eager = f(x)
    (g_eager,) = torch.autograd.grad(eager, [fc.weight])
    compiled = torch.compile(f, fullgraph=True)(x)
    (g_comp,) = torch.autograd.grad(compiled, [fc.weight])
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(g_comp, g_eager)


# ---------------------------------------------------------------- GPU: every specialisation
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
