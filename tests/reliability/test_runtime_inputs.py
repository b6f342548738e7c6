"""The runtime's boundary (issue 12, items 3, 5, 6): T a positive int, NaN/Inf refused unless
allowed, dtype and device mismatches explained or cast with a warning; step() after forward()
starts a fresh stream; one SNN called from several threads gives each call its own state;
a compiled SNN is for inference (eval mode, frozen, no autograd); memory is bounded for any T
(the steps stream in chunks with the state carried over, outputs identical) and an SNN keeps
its pipeline's stages without their weights."""
from __future__ import annotations

import math
import threading

import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import snncompile
from snncompile.errors import ConfigError
from snncompile.pipeline import Pipeline
from snncompile.runtime import SpikingModule, check_steps


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(6, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, 5)).eval()


def _x(n=8, seed=1):
    return torch.rand(n, 2, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def snn():
    return snncompile.compile(_cnn(), _x(32), T=12, backend="torch")


def _cpu_ok():
    from snncompile.kernels.cpu import cpu_kernel_available
    return cpu_kernel_available()


# ------------------------------------------------------------------------------------------
# T


@pytest.mark.parametrize("T", [0, -3, 2.5, 8.0, "8", True, False, math.nan, [8]])
def test_call_time_T_must_be_a_positive_int(snn, T):
    with pytest.raises(ConfigError) as e:
        snn(_x(), T=T)
    msg = str(e.value)
    assert "T=" in msg and ("positive int" in msg or "positive number of time steps" in msg)
    with pytest.raises(ConfigError):
        snn.run_sequence(_x(), T=T)


def test_T_zero_no_longer_runs_the_default(snn):
    with pytest.raises(ConfigError, match=r"T \(the number of time steps\) must be at least 1, got 0.*T=32"):
        snn(_x(), T=0)
    assert snn(_x(), T=None).shape == (8, 5)  # None: the SNN's own T


@pytest.mark.parametrize("T", [None, 0, 2.5, "8", True])
def test_constructor_T(snn, T):
    with pytest.raises(ConfigError, match="number of time steps"):
        SpikingModule(snn.graph, T)


def test_check_steps_accepts_ints_of_any_kind():
    import numpy as np
    assert check_steps(np.int64(7)) == 7 and type(check_steps(np.int64(7))) is int
    with pytest.raises(ConfigError, match=r"must be a positive int, got '8' \(a str\).*positive int such as T=32"):
        check_steps("8")


# ------------------------------------------------------------------------------------------
# the input: NaN/Inf, dtype, device


@pytest.mark.parametrize("bad, words", [(math.nan, "1 NaN values"), (math.inf, "1 infinite values"),
                                        (-math.inf, "1 infinite values")])
def test_nonfinite_input_is_refused_by_default(snn, bad, words):
    x = _x()
    x[3, 1, 2, 2] = bad
    with pytest.raises(ConfigError) as e:
        snn(x)
    assert words in str(e.value) and "snn.allow_nonfinite = True" in str(e.value)
    with pytest.raises(ConfigError, match="step input holds"):
        snn.step(x)
    both = _x()
    both[0, 0, 0, 0], both[1, 0, 0, 0] = math.nan, math.inf
    with pytest.raises(ConfigError, match="1 NaN values and 1 infinite values"):
        snn(both)


def test_nonfinite_input_runs_when_allowed():
    snn = snncompile.compile(_cnn(), _x(32), T=6, backend="torch")
    x = _x()
    x[0, 0, 0, 0] = math.nan
    snn.allow_nonfinite = True
    out = snn(x)
    assert out.shape == (8, 5) and torch.isfinite(out[1:]).all()
    again = SpikingModule(snn.graph, 6, allow_nonfinite=True)
    assert again(x).shape == (8, 5)


def test_other_float_dtype_is_cast_with_a_warning(snn):
    x = _x()
    with pytest.warns(UserWarning, match=r"input is torch.float64 but the SNN runs in torch.float32; cast it"):
        y64 = snn(x.double())
    assert y64.dtype == torch.float32 and torch.equal(y64, snn(x))
    with pytest.warns(UserWarning, match="float16"):
        snn.step(x.half())


@pytest.mark.parametrize("x, words", [
    (torch.randint(0, 255, (4, 2, 8, 8), dtype=torch.uint8), r"dtype torch.uint8.*floating-point.*x.float\(\) / 255"),
    (torch.zeros(4, 2, 8, 8, dtype=torch.int64), "dtype torch.int64"),
    (torch.zeros(4, 2, 8, 8, dtype=torch.bool), "dtype torch.bool"),
    ([[0.5] * 8] * 8, r"must be a torch.Tensor, got list.*torch.as_tensor"),
    (None, "must be a torch.Tensor, got NoneType"),
])
def test_non_float_inputs_are_explained(snn, x, words):
    with pytest.raises(ConfigError, match=words):
        snn(x)


def test_device_mismatch_is_explained(snn):
    x = torch.empty(4, 2, 8, 8, device="meta")
    with pytest.raises(ConfigError, match=r"input is on meta but the SNN's weights are on cpu.*x.to\('cpu'\)"):
        snn(x)


# ------------------------------------------------------------------------------------------
# step() after forward()


def test_step_after_forward_starts_a_fresh_stream(snn):
    x = _x()
    with torch.no_grad():
        snn.reset()
        fresh = [snn.step(x) for _ in range(3)]
        snn(x)  # a whole run: its membranes must not carry on into step()
        after = [snn.step(x) for _ in range(3)]
    for a, b in zip(fresh, after):
        assert torch.equal(a, b)
    assert all(m.v is not None for m in snn.neurons().values())  # the stream keeps its state
    snn(x)
    assert all(m.v is None for m in snn.neurons().values())  # forward leaves no membrane behind


# ------------------------------------------------------------------------------------------
# threads


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_concurrent_forward_calls_from_threads_give_sequential_results(backend):
    if backend == "cpu" and not _cpu_ok():
        pytest.skip("no C compiler")
    snn = snncompile.compile(_cnn(), _x(32), T=32, backend=backend)
    xs = [_x(6, seed=10 + i) for i in range(4)]  # one batch size: a shared membrane would fit any call
    want = [snn(x) for x in xs]
    got = [[] for _ in xs]
    errors = []
    start = threading.Barrier(len(xs))

    def work(i):
        try:
            start.wait()
            for _ in range(8):
                got[i].append(snn(xs[i]))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, outs in enumerate(got):
        assert len(outs) == 8 and all(torch.equal(o, want[i]) for o in outs), f"thread {i}"


def test_step_streams_are_per_thread(snn):
    xs = [_x(3, seed=20), _x(3, seed=21)]
    with torch.no_grad():
        want = []
        for x in xs:
            snn.reset()
            want.append([snn.step(x) for _ in range(8)])
    got = [None, None]
    start = threading.Barrier(2)

    def work(i):
        start.wait()
        with torch.no_grad():
            snn.reset()
            got[i] = [snn.step(xs[i]) for _ in range(8)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w, g in zip(want, got):
        assert all(torch.equal(a, b) for a, b in zip(w, g))


def test_copies_keep_the_calling_threads_stream(snn):
    import copy
    x = _x()
    with torch.no_grad():
        snn.reset()
        snn.step(x)
        twin = copy.deepcopy(snn)
        assert torch.equal(twin.step(x), snn.step(x))


# ------------------------------------------------------------------------------------------
# inference by default


def test_a_compiled_snn_is_for_inference(snn):
    assert not snn.training and not snn.module.training
    assert snn.parameters() and not any(p.requires_grad for p in snn.parameters())
    y = snn(_x())
    assert y.grad_fn is None and not y.requires_grad


def test_to_trainable_keeps_training():
    snn = snncompile.to_trainable(_cnn(), T=3, example_input=_x(2))
    assert snn.training and snn.trainable
    assert all(p.requires_grad for p in snn.parameters())
    assert snn(_x(2)).grad_fn is not None
    hybrid = snncompile.to_trainable(snncompile.compile(_cnn(), _x(32), T=4, backend="torch"), T=4)
    assert hybrid.training and any(p.requires_grad for p in hybrid.parameters())


# ------------------------------------------------------------------------------------------
# memory: bounded for any T


class _LargestTensor(TorchDispatchMode):
    """The largest tensor any op makes while active (bytes)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def _wide():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 2)).eval()


def test_steps_stream_in_chunks_with_identical_outputs():
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    one = snncompile.compile(_wide(), x, T=64, backend="torch")
    per_step = one._per_sample * 4
    streamed = SpikingModule(one.graph, 64, max_chunk_bytes=10 * per_step)
    with torch.no_grad():
        a, b = one(x, return_all_steps=True), streamed(x, return_all_steps=True)
        assert one.last_plan[1] == 64 and streamed.last_plan == (1, 10)  # one sample, 10 steps a chunk
        assert torch.equal(a, b)
        assert torch.equal(one(x), streamed(x)) and torch.equal(one.run_sequence(x), streamed.run_sequence(x))
        assert one.firing_rates(x) == streamed.firing_rates(x)
    if _cpu_ok():
        c1 = snncompile.compile(_wide(), x, T=64, backend="cpu")
        c2 = SpikingModule(c1.graph, 64, backend="cpu", max_chunk_bytes=7 * per_step)
        with torch.no_grad():
            assert torch.equal(c1(x, return_all_steps=True), c2(x, return_all_steps=True))


def test_peak_memory_does_not_grow_with_T():
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    snn = snncompile.compile(_wide(), x, T=8, backend="torch", max_chunk_bytes=64 << 10)
    assert snn._per_sample * 4 * 256 > snn.max_chunk_bytes  # one sample's 256 steps do not fit
    peaks = {}
    for T in (256, 2048):
        with torch.no_grad(), _LargestTensor() as m:
            snn(x, T=T)
        peaks[T] = m.largest
        assert snn.last_plan[0] == 1 and snn.last_plan[1] < T
    assert peaks[2048] <= snn.max_chunk_bytes and peaks[2048] <= 1.5 * peaks[256]


def test_sequence_input_streams_too():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), snncompile.layers.LIF(), nn.Linear(64, 3))
    snn = snncompile.to_trainable(model, T=40, encoding="sequence", example_input=torch.rand(2, 64)).eval()
    x = torch.rand(40, 2, 64)
    small = SpikingModule(snn.graph, 40, max_chunk_bytes=9 * snn._per_sample * 4)
    small.module.load_state_dict(snn.module.state_dict())
    with torch.no_grad():
        assert torch.equal(snn(x, return_all_steps=True), small(x, return_all_steps=True))
    assert small.last_plan == (1, 9)


# ------------------------------------------------------------------------------------------
# the pipeline's stages cost no weights


def _tensor_bytes(graph) -> int:
    total = 0
    for n in graph.nodes:
        for t in list(n.params.values()) + [v for v in n.meta.values() if isinstance(v, torch.Tensor)]:
            if t.device.type != "meta":
                total += t.numel() * t.element_size()
    return total


def test_snapshots_keep_no_weights_and_print_the_same():
    x = _x(32)
    pipe = snncompile.conversion_pipeline()
    snn = snncompile.compile(_cnn(), x, T=6, backend="torch", pipeline=pipe)
    weights = _tensor_bytes(snn.graph)
    held = sum(_tensor_bytes(g) for _, g in snn.pipeline.stages)
    assert len(snn.pipeline.stages) >= 10 and held < 0.05 * weights * len(snn.pipeline.stages)
    # what the user's own pipeline keeps is unchanged: printing and diffing agree
    assert str(snn.pipeline) == str(pipe)
    for name, g in pipe.stages:
        assert str(snn.pipeline.stage(name)) == str(g)
    assert snn.pipeline.diff("input", "normalize") == pipe.diff("input", "normalize")
    assert _tensor_bytes(pipe.stage("normalize")) > 0.5 * weights  # the user's pipeline still has them
    # asked for, the stages keep their weights
    keep = SpikingModule(snn.graph, 6, pipeline=pipe, keep_stages=True)
    assert keep.pipeline is pipe


def test_readme_tour_pipeline_still_works():
    from snncompile.frontend.fx import trace
    from snncompile.pipeline import PassContext
    graph = trace(_cnn(), _x(4))
    pipe = Pipeline("canonicalize,fold-batchnorm")
    pipe.run(graph, PassContext(calibration_data=_x(16)))
    assert "batchnorm" in pipe.diff("input", "fold-batchnorm")
    assert pipe.stage("fold-batchnorm").find("conv2d")[0].params["weight"].device.type == "cpu"
