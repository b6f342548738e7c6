"""The CPU kernel's fused neuron + k x k sum pool (``run_cpu(..., sumpool=k)``) against the torch
composition (reference neuron, then avg_pool2d(divisor_override=1)): window sums and v bit for bit."""
from __future__ import annotations

import zlib

import pytest
import torch

from snncompile.errors import KernelError
from snncompile.kernels import cpu, cpu_library, run_neuron
from snncompile.neurons import NeuronSpec, neuron_reference

from cpu_kernel_cases import INPUTS, KINDS, RESETS, _fresh_kernel_state, _input, _spec  # noqa: F401  (the fixture applies here too)

# --- fused neuron + k x k sum pool (run_cpu(..., sumpool=k)) -----------------------------------

def _pool_composition(x, th, spec, T, v, k):
    """What the fused path must equal: the reference neuron, then avg_pool2d(divisor_override=1)."""
    s, v = neuron_reference(x, th, spec, T, v)
    n, c, h, w = s.shape[1:]
    p = torch.nn.functional.avg_pool2d(s.reshape(s.shape[0] * n, c, h, w), k, k, divisor_override=1)
    return p.reshape(s.shape[0], n, c, h // k, w // k), v


def _check_pool(x, th, spec, T, k, v=None, out=None):
    p_ref, v_ref = _pool_composition(x, th, spec, T, None if v is None else v.clone(), k)
    p_cpu, v_cpu = cpu.run_cpu(x, th, spec, T, v, out=out, sumpool=k)
    assert p_cpu.dtype == p_ref.dtype and p_cpu.shape == p_ref.shape
    assert v_cpu.dtype == torch.float32 and v_cpu.shape == v_ref.shape
    assert torch.equal(p_cpu, p_ref), f"pooled sums differ in {int((p_cpu != p_ref).sum())} places"
    assert torch.equal(v_cpu.view(torch.int32), v_ref.view(torch.int32)), "v differs"
    # pooled_reference (the fallback) is the same composition
    p_pr, v_pr = cpu.pooled_reference(x, th, spec, T, None if v is None else v.clone(), sumpool=k)
    assert torch.equal(p_pr, p_ref) and torch.equal(v_pr, v_ref)
    return p_cpu, v_cpu


@pytest.mark.parametrize("kind,form", KINDS)
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("input_kind", INPUTS)
@pytest.mark.parametrize("k", [2, 3])
def test_sumpool_matches_composition(kind, form, reset, input_kind, k):
    gen = torch.Generator().manual_seed(zlib.crc32(f"pool{kind}{form}{reset}{input_kind}{k}".encode()))
    T, step = 6, (2, 3, 7, 9)  # odd H and W: the last row (k=2) / columns are simulated, not pooled
    x = _input(input_kind, T, step, gen)
    spec = _spec(kind, form, reset, input_kind)
    _check_pool(x, torch.tensor(0.75), spec, T, k)
    _check_pool(x, torch.rand(3, generator=gen) + 0.25, spec, T, k, torch.randn(step, generator=gen))


@pytest.mark.parametrize("input_kind", INPUTS)
@pytest.mark.parametrize("hw,k", [(hw, k) for hw in [(26, 26), (26, 27), (17, 34), (8, 17), (5, 4), (2, 2)]
                                  for k in (1, 2, 3, 4) if k <= min(hw)])
def test_sumpool_plane_shapes(input_kind, hw, k):
    """Rows wider than one 8-float chunk (and not a multiple of it), narrow rows, k = 1 .. 4."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"{input_kind}{hw}{k}".encode()))
    step = (2, 5) + hw
    x = _input(input_kind, 5, step, gen)
    _check_pool(x, torch.rand(5, generator=gen) + 0.25, _spec("if", "spikingjelly", "subtract", input_kind), 5, k)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("group", [0, 1, 5])
def test_sumpool_threads_and_groups(threads, group, monkeypatch):
    monkeypatch.setattr(cpu, "POOL_GROUP", group)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(8)
        for input_kind in INPUTS:
            x = _input(input_kind, 9, (3, 7, 26, 26), gen)  # 21 planes: partial groups
            _check_pool(x, torch.rand(7, generator=gen) + 0.5,
                        _spec("lif", "spikingjelly", "value", input_kind), 9, 2)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("input_kind", INPUTS)
@pytest.mark.parametrize("T", [0, 1])
def test_sumpool_short_runs(input_kind, T):
    gen = torch.Generator().manual_seed(12)
    x = _input(input_kind, T, (2, 3, 7, 9), gen)
    spec = _spec("if", "spikingjelly", "subtract", input_kind)
    for v in (None, torch.randn(2, 3, 7, 9, generator=gen)):
        p, _ = _check_pool(x, torch.tensor(1.0), spec, T, 2, v)
        assert p.shape == (T, 2, 3, 3, 4)


@pytest.mark.parametrize("input_kind", INPUTS)
def test_sumpool_empty_batch_and_odd_inputs(input_kind):
    gen = torch.Generator().manual_seed(13)
    spec = _spec("lif", "snntorch", "value", input_kind)
    step = (0, 3, 6, 6)
    x = torch.zeros(step if input_kind == "static" else (4,) + step)
    p, v = cpu.run_cpu(x, torch.ones(3), spec, 4, sumpool=2)
    assert p.shape == (4, 0, 3, 3, 3) and v.shape == step
    # non-contiguous x and v, v broadcast from a smaller shape, another dtype
    if input_kind == "static":
        x = _input("static", 0, (9, 4, 3, 2), gen).permute(3, 2, 0, 1)  # [2, 3, 9, 4]
    else:
        x = _input("sequence", 5, (9, 4, 3, 2), gen).permute(0, 4, 3, 1, 2)
    assert not x.is_contiguous()
    _check_pool(x, torch.rand(3, generator=gen) + 0.5, spec, 5, 2,
                torch.randn(4, 9, generator=gen).t())  # [9, 4], broadcast over N and C
    _check_pool(x.to(torch.float16), torch.tensor(0.5), spec, 5, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sumpool_out(dtype):
    gen = torch.Generator().manual_seed(14)
    x = _input("sequence", 4, (2, 3, 10, 11), gen, dtype)
    spec = _spec("if", "spikingjelly", "value", "sequence")
    out = torch.full((4, 2, 3, 5, 5), 7.0, dtype=dtype)
    p, _ = _check_pool(x, torch.tensor(0.5), spec, 4, 2, out=out)
    assert p is out
    with pytest.raises(KernelError, match="out must be"):
        cpu.run_cpu(x, 0.5, spec, 4, out=torch.empty(4, 2, 3, 10, 11, dtype=dtype), sumpool=2)


def test_sumpool_errors():
    spec = _spec("if", "spikingjelly", "subtract", "sequence")
    with pytest.raises(KernelError, match=r"\[N, C, H, W\]"):
        cpu.run_cpu(torch.rand(3, 2, 5, 6), 1.0, spec, sumpool=2)  # 3-D steps
    with pytest.raises(KernelError, match=r"\[N, C, H, W\]"):
        cpu.pooled_reference(torch.rand(3, 2, 5, 6), 1.0, spec, sumpool=2)
    with pytest.raises(KernelError, match="at least 3 x 3"):
        cpu.run_cpu(torch.rand(3, 1, 2, 2, 6), 1.0, spec, sumpool=3)
    for k in (0, -1, 2.0, True):
        with pytest.raises(KernelError, match="positive int"):
            cpu.run_cpu(torch.rand(3, 1, 2, 4, 4), 1.0, spec, sumpool=k)


def test_sumpool_training_uses_reference():
    spec = NeuronSpec(kind="lif", surrogate="atan", input_kind="sequence")
    x = torch.rand(4, 2, 3, 4, 4, requires_grad=True)
    p, v = cpu.run_cpu(x, torch.tensor(0.5), spec, 4, sumpool=2)
    assert p.requires_grad and p.shape == (4, 2, 3, 2, 2)
    (p.sum() + v.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        _check_pool(x, torch.tensor(0.5), spec, 4, 2)


def test_sumpool_fallback_without_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_library, "find_compiler", lambda: None)
    cpu_library.reset_library_state()
    spec = _spec("lif", "spikingjelly", "value", "static")
    x = torch.rand(2, 3, 7, 6)
    th = torch.rand(3) + 0.2
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        p, v = cpu.run_cpu(x, th, spec, 5, sumpool=2)
    p_ref, v_ref = _pool_composition(x, th, spec, 5, None, 2)
    assert torch.equal(p, p_ref) and torch.equal(v, v_ref)


def test_run_neuron_dispatches_sumpool_to_cpu():
    x = torch.rand(5, 2, 3, 6, 6)
    spec = _spec("if", "spikingjelly", "subtract", "sequence")
    try:
        p, v = run_neuron(x, torch.tensor(0.5), spec, 5, None, "cpu", sumpool=2)
    except TypeError:
        pytest.skip("run_neuron here has no sumpool argument")
    p_ref, v_ref = _pool_composition(x, torch.tensor(0.5), spec, 5, None, 2)
    assert torch.equal(p, p_ref) and torch.equal(v, v_ref)
