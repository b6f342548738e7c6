"""The fused CPU neuron kernel (snncompile.kernels.cpu) against the torch reference, bit for bit."""
from __future__ import annotations

import itertools
import zlib
import warnings

import pytest
import torch

from snncompile.errors import KernelError
from snncompile.kernels import cpu, run_neuron
from snncompile.neurons import NeuronSpec, neuron_reference

KINDS = [("if", "spikingjelly"), ("lif", "spikingjelly"), ("lif", "snntorch")]
RESETS = ["subtract", "value"]
INPUTS = ["sequence", "static"]


@pytest.fixture(autouse=True)
def _fresh_kernel_state():
    """Tests that break the build leave no trace for the next test."""
    yield
    if cpu._state["lib"] is None:
        cpu.reset_library_state()


def _spec(kind, form, reset, input_kind, v_init=0.5):
    return NeuronSpec(kind=kind, form=form, reset=reset, input_kind=input_kind, v_init=v_init,
                      v_reset=-0.125, tau=3.7, beta=0.93, v_rest=0.1)


def _input(input_kind, T, step, gen, dtype=torch.float32):
    shape = step if input_kind == "static" else (T,) + step
    # Quarter steps make the membrane land exactly on the threshold now and then (tests >=).
    x = torch.randint(-2, 6, shape, generator=gen).float() * 0.25
    x += torch.randn(shape, generator=gen) * (torch.rand(shape, generator=gen) < 0.5)
    return x.to(dtype)


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
    if cpu.find_compiler() is None:
        pytest.skip("no C compiler here; run_cpu falls back to the reference")
    info = cpu.kernel_info()
    assert info["available"], info["error"]
    assert cpu.cpu_kernel_available()
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
    monkeypatch.setattr(cpu, "find_compiler", lambda: None)
    cpu.reset_library_state()
    spec = _spec("lif", "spikingjelly", "value", "sequence")
    x = torch.rand(5, 3, 4)
    out = torch.empty(5, 3, 4)
    with pytest.warns(RuntimeWarning, match="no C compiler") as rec:
        s, v = cpu.run_cpu(x, 0.5, spec, 5)
        s2, _ = cpu.run_cpu(x, 0.5, spec, 5, out=out)
    assert len([w for w in rec if "CPU neuron kernel" in str(w.message)]) == 1
    s_ref, v_ref = neuron_reference(x, 0.5, spec, 5)
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref) and s2 is out and torch.equal(out, s_ref)
    assert not cpu.kernel_info()["available"] and not cpu.cpu_kernel_available()


def test_fallback_when_build_fails(monkeypatch, tmp_path):
    bad = tmp_path / "cpu_neuron.c"
    bad.write_text("this is not C;\n")
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cpu, "_SOURCE", bad)
    monkeypatch.setattr(cpu, "_FLAG_SETS", ((),))
    cpu.reset_library_state()
    if cpu.find_compiler() is None:
        pytest.skip("no C compiler here")
    with pytest.warns(RuntimeWarning, match="building the CPU neuron kernel failed"):
        s, _ = cpu.run_cpu(torch.rand(3, 2), 0.5, _spec("if", "spikingjelly", "subtract", "sequence"), 3)
    assert s.shape == (3, 2)
    assert not list((tmp_path / "cache").glob("*.so")), "a failed build must leave no library"


def test_cache_key_follows_source(monkeypatch, tmp_path):
    src = tmp_path / "cpu_neuron.c"
    src.write_text(cpu._SOURCE.read_text())
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu, "_SOURCE", src)
    first = cpu._library_path()
    assert first.parent == tmp_path and first == cpu._library_path()
    src.write_text(src.read_text() + "\n/* changed */\n")
    assert cpu._library_path() != first


def test_no_warning_on_success():
    if cpu.find_compiler() is None:
        pytest.skip("no C compiler here")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cpu.run_cpu(torch.rand(3, 4), 1.0, _spec("if", "spikingjelly", "subtract", "sequence"), 3)


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
    monkeypatch.setattr(cpu, "find_compiler", lambda: None)
    cpu.reset_library_state()
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
