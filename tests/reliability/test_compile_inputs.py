"""Bad or unusual inputs to snncompile.compile / to_trainable (issue 12, the compile path): hooks
on the model, calibration data as a generator, an iterator, an (inputs, labels) pair, labels,
NaN/Inf, values Poisson encoding cannot read; T that is not a positive int; a model in train
mode; float64/float16 models. Each case asserts the error type and the words a user needs."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import snncompile
from snncompile.errors import CalibrationError, ConfigError, TraceError


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 3 * 3, 3)).eval()


def _x(n=64, seed=1):
    return torch.rand(n, 4, generator=torch.Generator().manual_seed(seed))


def _compile(model, data, **kw):
    kw.setdefault("T", 4)
    kw.setdefault("backend", "torch")
    kw.setdefault("normalize", "max")
    return snncompile.compile(model, data, **kw)


def _same_snn(a, b, x):
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


# ------------------------------------------------------------------------------------------
# hooks: refused, naming the module and the hook


def zero_input(module, args):
    return (args[0] * 0,)


def double_output(module, args, out):
    return out * 2


@pytest.mark.parametrize("kind", ["pre", "forward"])
def test_hook_on_a_submodule_is_refused_naming_module_and_hook(kind):
    model = _mlp()
    if kind == "pre":
        model[0].register_forward_pre_hook(zero_input)
    else:
        model[2].register_forward_hook(double_output)
    with pytest.raises(TraceError) as e:
        _compile(model, _x())
    msg = str(e.value)
    want = ("module '0' (Linear)", "forward pre-hook", "zero_input") if kind == "pre" else \
        ("module '2' (Linear)", "forward hook", "double_output")
    for words in want + ("would drop it", "handle.remove()"):
        assert words in msg, (words, msg)
    assert "test_compile_inputs.py:" in msg  # where the hook was defined


def test_hook_on_the_model_itself_and_in_to_trainable_is_refused():
    model = _mlp()
    h = model.register_forward_hook(double_output)
    with pytest.raises(TraceError, match=r"the model \(Sequential\) has a forward hook double_output"):
        _compile(model, _x())
    with pytest.raises(TraceError, match="forward hook double_output"):
        snncompile.to_trainable(model, T=2, backend="torch")
    h.remove()
    _compile(model, _x())  # without the hook it converts


def test_global_module_hook_is_refused():
    h = torch.nn.modules.module.register_module_forward_pre_hook(zero_input)
    try:
        with pytest.raises(TraceError, match=r"global forward pre-hook zero_input.*register_module_forward_pre_hook"):
            _compile(_mlp(), _x())
    finally:
        h.remove()


# ------------------------------------------------------------------------------------------
# calibration data: generators and iterators, pairs, labels


def test_generator_keeps_its_first_batch():
    """The first batch (taken for tracing) is calibrated on too: with max normalization and the
    largest activations in the first batch, the generator gives exactly the list's SNN."""
    x = _x()
    batches = [x[:32] * 10, x[32:]]

    def gen():
        yield from batches

    _same_snn(_compile(_mlp(), gen()), _compile(_mlp(), batches), x)


def test_one_batch_iterator_converts():
    x = _x()
    _same_snn(_compile(_mlp(), iter([x])), _compile(_mlp(), x), x)


def test_iterator_of_pairs_converts():
    x, y = _x(), torch.zeros(64, dtype=torch.long)
    _same_snn(_compile(_mlp(), iter([(x, y)])), _compile(_mlp(), x), x)


def test_iterator_read_twice_is_refused_clearly():
    pipe = "canonicalize,normalize{mode=max},normalize{mode=max},relu-to-if,encode-input,readout"
    with pytest.raises(CalibrationError, match=r"iterator \(or generator\), which can be read only once.*pass a list"):
        _compile(_mlp(), iter([_x()]), pipeline=pipe)


def test_empty_generator_says_no_batches():
    with pytest.raises(CalibrationError, match="yielded no batches"):
        _compile(_mlp(), iter([]))


def test_inputs_labels_pair_is_read_as_inputs():
    x, y = _x(), torch.randint(0, 3, (64,))
    ref = _compile(_mlp(), x)
    _same_snn(_compile(_mlp(), (x, y)), ref, x)
    _same_snn(_compile(_mlp(), [x, y]), ref, x)


def test_label_batches_are_refused():
    with pytest.raises(CalibrationError, match=r"batch 0 is a torch.int64 tensor.*labels.*inputs alone"):
        _compile(_mlp(), [torch.randint(0, 3, (64, 4))])


def test_calibration_that_is_no_data_is_refused():
    with pytest.raises(CalibrationError, match="calibration data has type int; pass a tensor"):
        _compile(_mlp(), 42)


# ------------------------------------------------------------------------------------------
# NaN / Inf in calibration data: refused by default, rows skipped on request


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_calibration_is_refused_naming_the_batch(bad):
    x = _x()
    x[3, 1] = bad
    with pytest.raises(CalibrationError) as e:
        _compile(_mlp(), x)
    msg = str(e.value)
    assert "calibration batch 0 has" in msg and "in 1 of its" in msg and "allow_nonfinite=True" in msg


def test_nonfinite_in_a_later_batch_is_refused():
    x = _x()
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(CalibrationError, match=r"calibration batch 1 has 1 NaN and 0 Inf"):
        _compile(_mlp(), [x, bad])


def test_allow_nonfinite_skips_those_rows_with_a_warning():
    x = _x()
    dirty = x.clone()
    dirty[[3, 9], 1] = float("nan")
    keep = torch.ones(64, dtype=torch.bool)
    keep[[3, 9]] = False
    with pytest.warns(UserWarning, match=r"skipped 2 input rows with NaN or Inf"):
        snn = _compile(_mlp(), dirty, allow_nonfinite=True)
    _same_snn(snn, _compile(_mlp(), x[keep]), x)


# ------------------------------------------------------------------------------------------
# Poisson encoding reads probabilities in [0, 1]


def test_poisson_compile_refuses_calibration_outside_0_1():
    x = _x() * 4 - 2  # standardized-looking inputs
    with pytest.raises(CalibrationError) as e:
        _compile(_mlp(), x, encoding="poisson")
    msg = str(e.value)
    assert "Poisson encoding needs inputs in [0, 1]" in msg and "encoding='direct'" in msg
    # a pipeline written out says the same
    with pytest.raises(CalibrationError, match=r"Poisson encoding needs inputs in \[0, 1\]"):
        _compile(_mlp(), x, pipeline="canonicalize,normalize{mode=max},relu-to-if,encode-input{method=poisson},readout")
    _compile(_mlp(), x, encoding="direct")  # direct currents take any range


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_poisson_snn_refuses_inputs_outside_0_1(backend):
    if backend == "cpu":
        from snncompile.kernels.cpu import cpu_kernel_available
        if not cpu_kernel_available():
            pytest.skip("no C compiler")
    x = _x()
    snn = _compile(_mlp(), x, encoding="poisson", backend=backend)
    snn(x)  # in range: runs
    with pytest.raises(ConfigError, match=r"values in \[-0\.9.*firing probability in \[0, 1\].*scale the inputs"):
        snn(x * 4 - 1)
    nan = x.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ConfigError, match="1 NaN values"):
        snn(nan)


def test_poisson_encode_is_unchanged_in_range():
    """The range check does not change the draws: the same spikes as Bernoulli(x) under a seed."""
    from snncompile.functional import encode
    x = torch.rand(5, 3)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    want = (torch.rand((4, 5, 3), generator=g2) < x.expand(4, 5, 3)).float().reshape(20, 3)
    assert torch.equal(encode(x, 4, "poisson", generator=g1), want)


# ------------------------------------------------------------------------------------------
# T


BAD_T = [2.5, "8", None, math.nan, True, False, 8.0]


@pytest.mark.parametrize("T", BAD_T, ids=[repr(t) for t in BAD_T])
def test_compile_refuses_T_that_is_not_an_int(T):
    with pytest.raises(ConfigError, match=r"compile: T \(the number of time steps\) must be a positive int, got .*T=32"):
        _compile(_mlp(), _x(), T=T)


@pytest.mark.parametrize("T", BAD_T, ids=[repr(t) for t in BAD_T])
def test_to_trainable_refuses_T_that_is_not_an_int(T):
    with pytest.raises(ConfigError, match=r"to_trainable: T \(the number of time steps\) must be a positive int"):
        snncompile.to_trainable(_mlp(), T=T, backend="torch")


@pytest.mark.parametrize("T", [0, -3])
def test_T_below_one_is_refused(T):
    with pytest.raises(ConfigError, match=f"must be at least 1, got {T}"):
        _compile(_mlp(), _x(), T=T)
    with pytest.raises(ConfigError, match=f"must be at least 1, got {T}"):
        snncompile.to_trainable(_mlp(), T=T, backend="torch")


def test_T_may_be_a_numpy_int():
    snn = _compile(_mlp(), _x(), T=np.int64(6))
    assert snn.T == 6 and type(snn.T) is int


def test_fine_tune_refuses_bad_T():
    snn = _compile(_mlp(), _x())
    with pytest.raises(ConfigError, match="to_trainable: T"):
        snncompile.to_trainable(snn, T=1.5)


# ------------------------------------------------------------------------------------------
# train mode, dtypes


def test_model_in_train_mode_warns_naming_the_module():
    model = _cnn().train()
    with pytest.warns(UserWarning, match=r"train mode \('1' \(BatchNorm2d\)\).*eval mode.*call model.eval\(\)"):
        _compile(model, torch.rand(16, 1, 8, 8))
    assert model.training  # the user's model is not switched


def test_model_in_eval_mode_or_without_bn_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _compile(_cnn(), torch.rand(16, 1, 8, 8))
        _compile(_mlp().train(), _x())  # no batch norm or dropout: train mode changes nothing


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_non_float32_model_is_converted_as_float32_with_a_warning(dtype):
    x = torch.rand(16, 1, 8, 8)
    ref = _compile(_cnn(), x)
    model = _cnn().to(dtype)
    with pytest.warns(UserWarning, match=f"parameters are {str(dtype)[6:]}; it is converted as a float32 copy.*model.float"):
        snn = _compile(model, x.to(dtype))
    assert next(model.parameters()).dtype == dtype  # the user's model is untouched
    with torch.no_grad():
        out, want = snn(x), ref(x)
    assert out.dtype == torch.float32
    if dtype == torch.float64:
        assert torch.allclose(out, want, atol=1e-5)


def test_float64_model_to_trainable():
    with pytest.warns(UserWarning, match="float64"):
        snn = snncompile.to_trainable(_mlp().double(), T=2, backend="torch")
    assert all(p.dtype == torch.float32 for p in snn.parameters())
    snn(torch.rand(3, 4)).sum().backward()


def test_weight_norm_pre_hook_is_applied_not_refused():
    """torch.nn.utils.weight_norm works through a forward pre-hook that computes the weight from
    g and v: the conversion applies it (the SNN uses the current g and v, never a stale weight)."""
    model = _mlp()
    model[0] = nn.utils.weight_norm(model[0])
    with torch.no_grad():
        model[0].weight_g.mul_(2.0)  # the stored .weight is now stale until the next forward
    x = _x()
    snn = _compile(model, x, T=64)
    ref = _mlp()
    with torch.no_grad():
        ref[0].weight.copy_(model[0].weight_g * model[0].weight_v / model[0].weight_v.norm(dim=1, keepdim=True))
        ref[0].bias.copy_(model[0].bias)
        ref[2].load_state_dict(model[2].state_dict())
        assert torch.allclose(model(x), ref(x), atol=1e-6)
    want = _compile(ref, x, T=64)
    for (k, a), b in zip(snn.state_dict().items(), want.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), k  # weight_norm rounds its own way
    with torch.no_grad():
        assert (snn(x) - want(x)).abs().max() < 0.1
    assert model[0]._forward_pre_hooks  # the user's model keeps its hook
