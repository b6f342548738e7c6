"""The fused CPU neuron kernel (snncompile.kernels.cpu) against the torch reference, bit for bit."""
from __future__ import annotations

import itertools
import zlib
import warnings

import pytest
import torch

from snncompile.errors import KernelError
from snncompile.kernels import cpu, cpu_library, run_neuron
from snncompile.neurons import NeuronSpec, neuron_reference

from cpu_kernel_cases import INPUTS, KINDS, RESETS, _fresh_kernel_state, _input, _spec  # noqa: F401


def _check(x, th, spec, T, v=None):
    s_ref, v_ref = neuron_reference(x, th, spec, T, None if v is None else v.clone())
    s_cpu, v_cpu = cpu.run_cpu(x, th, spec, T, v)
    assert s_cpu.dtype == s_ref.dtype and s_cpu.shape == s_ref.shape
    assert v_cpu.dtype == torch.float32 and v_cpu.shape == v_ref.shape
    assert torch.equal(s_cpu, s_ref), f"spikes differ in {int((s_cpu != s_ref).sum())} places"
    # Bit for bit (signed zeros too); NaNs only need to be NaN in the same places.
    nan = v_ref.isnan()
    assert torch.equal(v_cpu.isnan(), nan), "v is NaN in other places than the reference's"
    same = v_cpu.view(torch.int32) == v_ref.view(torch.int32)
    assert bool((same | nan).all()), f"v differs by {(v_cpu - v_ref)[~nan].abs().max()}"
    return s_cpu, v_cpu


def test_kernel_builds():
    if cpu_library.find_compiler() is None:
        pytest.skip("no C compiler here; run_cpu falls back to the reference")
    info = cpu_library.kernel_info()
    assert info["available"], info["error"]
    assert cpu_library.cpu_kernel_available()
    assert info["block"] >= 64


@pytest.mark.parametrize("kind,form", KINDS)
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("input_kind", INPUTS)
@pytest.mark.parametrize("per_channel,given_v", list(itertools.product([False, True], repeat=2)))
def test_matches_reference(kind, form, reset, input_kind, per_channel, given_v):
    gen = torch.Generator().manual_seed(zlib.crc32(f"{kind}{form}{reset}{input_kind}".encode()))
    T, step = 13, (3, 5, 7, 9)  # 945 neurons: one partial block, odd everywhere
    x = _input(input_kind, T, step, gen)
    th = torch.rand(5, generator=gen) + 0.5 if per_channel else torch.tensor(1.25)
    v = torch.randn(step, generator=gen) if given_v else None
    _check(x, th, _spec(kind, form, reset, input_kind), T, v)


@pytest.mark.parametrize("kind,form", KINDS)
@pytest.mark.parametrize("input_kind", INPUTS)
@pytest.mark.parametrize("v_init", [0.0, 0.5, 0.3])
def test_v_init_and_many_blocks(kind, form, input_kind, v_init):
    gen = torch.Generator().manual_seed(7)
    T, step = 9, (2, 3, 41, 43)  # 10578 neurons: several blocks and threads
    x = _input(input_kind, T, step, gen)
    th = torch.rand(3, generator=gen) * 2 + 0.1
    _check(x, th, _spec(kind, form, "subtract", input_kind, v_init), T)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("block", [0, 64, 100, 1000])
def test_threads_and_blocks_do_not_change_results(threads, block, monkeypatch):
    monkeypatch.setattr(cpu, "BLOCK", block)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(3)
        x = _input("sequence", 17, (4, 8, 33, 31), gen)
        _check(x, torch.rand(8, generator=gen) + 0.5, _spec("lif", "spikingjelly", "value", "sequence"), 17)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("input_kind", INPUTS)
@pytest.mark.parametrize("T", [0, 1])
def test_short_runs(input_kind, T):
    gen = torch.Generator().manual_seed(1)
    x = _input(input_kind, T, (3, 4, 5), gen)
    for v in (None, torch.randn(3, 4, 5, generator=gen)):
        s, _ = _check(x, torch.tensor(1.0), _spec("if", "spikingjelly", "subtract", input_kind), T, v)
        assert s.shape[0] == T


@pytest.mark.parametrize("input_kind", INPUTS)
@pytest.mark.parametrize("step", [(0, 4, 5), (3, 0), (0,)])
def test_empty(input_kind, step):
    x = torch.zeros(step if input_kind == "static" else (6,) + step)
    th = torch.tensor(1.0) if len(step) < 2 or step[1] == 0 else torch.ones(step[1])
    s, v = _check(x, th, _spec("lif", "snntorch", "value", input_kind), 6)
    assert s.shape == (6,) + step and v.shape == step


@pytest.mark.parametrize("input_kind", INPUTS)
def test_non_contiguous_input_and_v(input_kind):
    gen = torch.Generator().manual_seed(5)
    if input_kind == "static":
        x = _input("static", 0, (6, 7, 5), gen).transpose(0, 2)  # [5, 7, 6]
    else:
        x = _input("sequence", 11, (6, 7, 5), gen).transpose(1, 3)[::2]  # [6, 5, 7, 6]
    assert not x.is_contiguous()
    step = tuple(x.shape) if input_kind == "static" else tuple(x.shape[1:])
    v = torch.randn(step[::-1], generator=gen).permute(*range(len(step) - 1, -1, -1))
    _check(x, torch.rand(7, generator=gen) + 0.5, _spec("if", "spikingjelly", "value", input_kind), 11, v)


@pytest.mark.parametrize("step,per_channel", [((37,), False), ((9, 13), False), ((9, 13), True),
                                              ((2, 3, 5, 7, 3), False), ((2, 3, 5, 7, 3), True)])
def test_ranks_and_thresholds(step, per_channel):
    gen = torch.Generator().manual_seed(11)
    x = _input("sequence", 7, step, gen)
    th = torch.rand(step[1], generator=gen) + 0.25 if per_channel else 0.75
    _check(x, th, _spec("lif", "snntorch", "subtract", "sequence"), 7)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("input_kind", INPUTS)
def test_other_dtypes(dtype, input_kind):
    gen = torch.Generator().manual_seed(2)
    x = _input(input_kind, 8, (3, 4, 9), gen, dtype)
    s, _ = _check(x, torch.tensor(1.0), _spec("lif", "spikingjelly", "subtract", input_kind), 8)
    assert s.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("input_kind", INPUTS)
def test_out(dtype, input_kind):
    gen = torch.Generator().manual_seed(4)
    x = _input(input_kind, 6, (2, 3, 50), gen, dtype)
    th = torch.rand(3, generator=gen) + 0.5
    spec = _spec("lif", "snntorch", "value", input_kind)
    out = torch.full((6, 2, 3, 50), 7.0, dtype=dtype)
    s, v = cpu.run_cpu(x, th, spec, 6, out=out)
    s_ref, v_ref = neuron_reference(x, th, spec, 6)
    assert s is out and torch.equal(out, s_ref) and torch.equal(v, v_ref)
    with pytest.raises(KernelError, match="out must be"):
        cpu.run_cpu(x, th, spec, 6, out=torch.empty(5, 2, 3, 50, dtype=dtype))
    with pytest.raises(KernelError, match="out must be"):
        cpu.run_cpu(x, th, spec, 6, out=out.transpose(0, 1).contiguous().transpose(0, 1))


def test_special_values():
    x = torch.tensor([[0.0, 1.0, float("inf"), float("-inf"), float("nan"), 1e-45, -0.0, 3e38]] * 3)
    for th in (torch.tensor(1.0), torch.tensor(0.0), torch.tensor(float("inf"))):
        for reset in RESETS:
            for kind, form in KINDS:
                if not (kind == "signed_if" and reset == "value"):
                    _check(x.reshape(3, 1, 8), th, _spec(kind, form, reset, "sequence"), 3)


def test_run_neuron_dispatches_to_cpu():
    x = torch.rand(5, 2, 3)
    spec = _spec("if", "spikingjelly", "subtract", "sequence")
    s, v = run_neuron(x, torch.tensor(0.5), spec, 5, None, "cpu")
    s_ref, v_ref = neuron_reference(x, torch.tensor(0.5), spec, 5)
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref)


def test_training_uses_reference():
    spec = NeuronSpec(kind="lif", surrogate="atan", input_kind="sequence")
    x = torch.rand(4, 2, 3, requires_grad=True)
    s, v = cpu.run_cpu(x, torch.tensor(0.5), spec, 4)
    assert s.requires_grad
    (s.sum() + v.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        _check(x, torch.tensor(0.5), spec, 4)
    with pytest.raises(KernelError, match="out= is for inference"):
        cpu.run_cpu(x, torch.tensor(0.5), spec, 4, out=torch.empty(4, 2, 3))


def test_errors():
    spec = _spec("if", "spikingjelly", "subtract", "static")
    with pytest.raises(KernelError, match="move it to the CPU"):
        cpu.run_cpu(torch.empty(2, 3, device="meta"), 1.0, spec, 4)
    with pytest.raises(KernelError, match="needs T"):
        cpu.run_cpu(torch.rand(2, 3), 1.0, spec, None)
    with pytest.raises(KernelError, match="step's shape"):
        cpu.run_cpu(torch.rand(2, 3), 1.0, spec, 4, torch.zeros(4, 4))


def test_fallback_warns_once_without_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(tmp_path))  # no cached build here
    monkeypatch.setattr(cpu_library, "find_compiler", lambda: None)
    cpu_library.reset_library_state()
    spec = _spec("lif", "spikingjelly", "value", "sequence")
    x = torch.rand(5, 3, 4)
    out = torch.empty(5, 3, 4)
    with pytest.warns(RuntimeWarning, match="no C compiler") as rec:
        s, v = cpu.run_cpu(x, 0.5, spec, 5)
        s2, _ = cpu.run_cpu(x, 0.5, spec, 5, out=out)
    assert len([w for w in rec if "CPU neuron kernel" in str(w.message)]) == 1
    s_ref, v_ref = neuron_reference(x, 0.5, spec, 5)
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref) and s2 is out and torch.equal(out, s_ref)
    assert not cpu_library.kernel_info()["available"] and not cpu_library.cpu_kernel_available()


def test_fallback_when_build_fails(monkeypatch, tmp_path):
    bad = tmp_path / "cpu_neuron.c"
    bad.write_text("this is not C;\n")
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cpu_library, "_SOURCE", bad)
    monkeypatch.setattr(cpu_library, "_FLAG_SETS", ((),))
    cpu_library.reset_library_state()
    if cpu_library.find_compiler() is None:
        pytest.skip("no C compiler here")
    with pytest.warns(RuntimeWarning, match="building the CPU neuron kernel failed"):
        s, _ = cpu.run_cpu(torch.rand(3, 2), 0.5, _spec("if", "spikingjelly", "subtract", "sequence"), 3)
    assert s.shape == (3, 2)
    assert not list((tmp_path / "cache").glob("*.so")), "a failed build must leave no library"


def test_cache_key_follows_source(monkeypatch, tmp_path):
    src = tmp_path / "cpu_neuron.c"
    src.write_text(cpu_library._SOURCE.read_text())
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_library, "_SOURCE", src)
    first = cpu_library._library_path()
    assert first.parent == tmp_path and first == cpu_library._library_path()
    src.write_text(src.read_text() + "\n/* changed */\n")
    assert cpu_library._library_path() != first


def test_no_warning_on_success():
    if cpu_library.find_compiler() is None:
        pytest.skip("no C compiler here")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cpu.run_cpu(torch.rand(3, 4), 1.0, _spec("if", "spikingjelly", "subtract", "sequence"), 3)
