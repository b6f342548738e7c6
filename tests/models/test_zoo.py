"""torchvision and timm classifiers (random init, batch norms calibrated) through snncompile.compile.

Every entry of ``snncompile.recipes.zoo.ZOO`` is one test: a "converts" entry must compile, leave
the user's model untouched, and its SNN's logits must approach the ANN's (the relative error of
mean-centred logits falls from T=16 to T=128 and ends below ERR128_BOUND); a "refused" entry
must raise an snncompile error naming the activation or op and its module. The whole module
skips when torchvision or timm does not import. ``python -m snncompile.recipes.models_table``
prints the same measurements as a table.
"""
from __future__ import annotations

import importlib.util
import io
import time

import pytest
import torch

import snncompile
from snncompile.errors import SnnCompileError
from snncompile.recipes import zoo
from snncompile.recipes.models_table import ZooTimeLimit, run_entry, select, table, time_limit

try:
    zoo.import_timm()
except ImportError as e:
    pytest.skip(f"the model-zoo tests need torchvision and timm: {e}", allow_module_level=True)

CONVERTS = [e for e in zoo.ZOO if e.expect == "converts"]
REFUSED = [e for e in zoo.ZOO if e.expect == "refused"]
# Chosen from measurements (2 calibration images, max normalization, the error on those images,
# where nothing clips), at T=16 -> T=128: resnet18 0.44 -> 0.17, resnet34 0.47 -> 0.31, vgg11_bn
# 0.36 -> 0.21, vgg16 0.13 -> 0.04, alexnet 0.008 -> 0.003, squeezenet1_1 0.09 -> 0.04,
# densenet121 0.65 -> 0.32, timm resnet18 0.13 -> 0.02, timm vgg11 0.14 -> 0.09. An SNN with no
# signal left (a lost scale at a concat or residual add) stays near 1; this bound means "clearly
# converging by T=128". Deeper nets with max normalization converge more slowly (resnet50 0.51 ->
# 0.62 at T=128, 0.18 at T=4096): they fail here, and that is a finding, not noise.
ERR128_BOUND = 0.5
# seconds a model may take (the slowest, vgg16: 17-22 s on 2 cores, 68 s on a heavily loaded
# machine): a model that hangs (a tracer recursing, say) fails its own test, not the CI run
LIMIT_S = 150


def _within_limit(fn, *args, **kwargs):
    try:
        with time_limit(LIMIT_S):
            return fn(*args, **kwargs)
    except ZooTimeLimit as e:
        pytest.fail(f"{args[0].name}: {e}")


# Deep nets that convert but converge more slowly than the target asks (err at T=16 -> T=128 ->
# T=4096, measured on 2 images, 2026-12-02): the issue-13 target "error falls from T=16 to T=128"
# is missed for them, told here as strict xfails (an entry that starts converging fails loudly,
# so the mark must then go). Closing this is issue 14's work (few-step calibration).
SLOW = {
    "torchvision/resnet50": "0.51 -> 0.62 -> 0.18",
    "torchvision/googlenet": "0.72 -> 0.78 -> 0.22",
    "torchvision/mobilenet_v2": "0.63 -> 0.62 -> 0.08",
    "torchvision/shufflenet_v2_x0_5": "1.05 -> 0.98 -> 0.13",
    "torchvision/regnet_x_400mf": "0.61 -> 0.63 -> 0.19",
    "torchvision/resnext50_32x4d": "0.58 -> 0.66 -> 0.20",
    "timm/mobilenetv2_100": "0.94 -> 0.71 -> 0.07",
}


def _convergence_cases():
    for e in CONVERTS:
        marks = [pytest.mark.xfail(strict=True, reason=f"converges slowly: err {SLOW[e.name]} at T=16/128/4096")] \
            if e.name in SLOW else []
        yield pytest.param(e, id=e.name, marks=marks)


@pytest.mark.parametrize("entry", CONVERTS, ids=lambda e: e.name)
def test_converts_with_defaults_leaving_the_model_untouched(entry: zoo.ZooEntry) -> None:
    """With the defaults, compile converts, leaves the model as it was, and the SNN runs."""
    plain = _within_limit(zoo.compile_defaults, entry)
    assert plain.error is None, f"{entry.name}: compile with the defaults refused it: {plain.error}"
    assert plain.changes == [], f"compile changed the user's model: {plain.changes[:5]}"
    x = zoo.make_inputs(entry, 2, stream=1)
    with torch.no_grad():
        out = plain.snn(x)
    assert out.shape == (2, zoo.NUM_CLASSES) and torch.isfinite(out).all()


@pytest.mark.parametrize("entry", list(_convergence_cases()))
def test_snn_approaches_the_ann_from_T16_to_T128(entry: zoo.ZooEntry) -> None:
    """With max normalization the error falls from T=16 to T=128, below ERR128_BOUND."""
    t0 = time.perf_counter()
    res = _within_limit(zoo.convergence, entry, T_list=(16, 128), n_images=2)
    e16, e128 = res.errors[16], res.errors[128]
    print(f"{entry.name}: err16 {e16:.3f} err128 {e128:.3f} compile {res.compile_s:.1f}s "
          f"sim {res.sim_s[16]:.1f}s + {res.sim_s[128]:.1f}s total {time.perf_counter() - t0:.1f}s")
    assert res.changes == [], f"compile changed the user's model: {res.changes[:5]}"
    assert e128 < e16, f"{entry.name}: the error does not fall with T: {e16:.3f} at T=16, {e128:.3f} at T=128"
    assert e128 < ERR128_BOUND, f"{entry.name}: error {e128:.3f} at T=128 (bound {ERR128_BOUND}; T=16: {e16:.3f})"


@pytest.mark.parametrize("entry", REFUSED, ids=lambda e: e.name)
def test_refused_naming_the_op_and_module(entry: zoo.ZooEntry) -> None:
    res = _within_limit(zoo.compile_defaults, entry)
    err = res.error
    assert err is not None, f"{entry.name} converted; expected a refusal naming one of {entry.refused}"
    assert isinstance(err, SnnCompileError) and res.snn is None
    print(f"{entry.name}: refused in {res.compile_s:.1f}s: {type(err).__name__}: {str(err).splitlines()[0]}")
    assert entry.refusal_problems(str(err)) == [], f"{entry.name}: the refusal does not name its op and module: {err}"
    assert res.changes == [], f"compile changed the user's model: {res.changes[:5]}"


def test_refusal_problems_needs_both_op_and_module() -> None:
    entry = zoo.get_entry("torchvision/convnext_tiny")
    assert entry.refusal_problems("node %9 opaque (features.1.0.block.4) is the activation GELU") == []
    assert entry.refusal_problems("node %2 (features.0.1) is a Layer_Norm") == []
    assert len(entry.refusal_problems("node %9 opaque (features.1.0.block.4) is an op")) == 1
    assert len(entry.refusal_problems("the activation GELU in features.3.0")) == 1
    assert len(entry.refusal_problems("something failed")) == 2


def test_zoo_names_are_unique_and_refusals_say_where() -> None:
    names = [e.name for e in zoo.ZOO]
    assert len(names) == len(set(names))
    assert all(e.modules for e in REFUSED)
    with pytest.raises(KeyError, match="torchvision/resnet18"):
        zoo.get_entry("resnet18")


def test_torchvision_import_and_shim() -> None:
    """Classifier definitions import; where the shim declared the detection ops (the extension does
    not load), calling one raises instead of computing anything."""
    tv = zoo.import_torchvision()
    assert zoo.import_torchvision() is tv and callable(tv.models.resnet18)
    assert hasattr(torch.ops.torchvision, "nms") and hasattr(torch.ops.torchvision, "qnms")
    if zoo._SHIM:
        assert not zoo._extension_loads(importlib.util.find_spec("torchvision"))
        with pytest.raises((NotImplementedError, RuntimeError)):
            torch.ops.torchvision.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)


def test_paired_torchvision_release() -> None:
    assert zoo.paired_torchvision("2.13.0+cpu") == "0.28.0"
    assert zoo.paired_torchvision("2.5.1") == "0.20.1"
    assert zoo.paired_torchvision("2.14") == "0.29.0"


def test_relative_error_ignores_a_shift_of_all_logits() -> None:
    ann = torch.tensor([[1.0, 2.0, 4.0], [0.0, -1.0, 1.0]])
    assert zoo.relative_error(ann + 7.0, ann) == pytest.approx(0.0, abs=1e-6)
    assert zoo.relative_error(2 * ann, ann) == pytest.approx(1.0)
    assert zoo.relative_error(torch.zeros_like(ann), ann) == pytest.approx(1.0)


def test_inputs_and_models_are_deterministic_and_leave_the_global_rng() -> None:
    entry = zoo.get_entry("torchvision/squeezenet1_1")
    state = torch.random.get_rng_state()
    a, b = zoo.make_inputs(entry, 2, stream=1), zoo.make_inputs(entry, 2, stream=1)
    m1, m2 = zoo.build(entry), zoo.build(entry)
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.equal(a, b) and not torch.equal(a, zoo.make_inputs(entry, 2, stream=2))
    assert a.shape == (2, *entry.input_shape)
    assert not m1.training and all(torch.equal(p, q) for p, q in zip(m1.state_dict().values(),
                                                                      m2.state_dict().values()))


def test_batchnorm_calibration_gives_data_statistics() -> None:
    model = zoo.build(zoo.get_entry("torchvision/resnet18"))
    bn = model.bn1
    assert not bn.training and bn.momentum == 0.1
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def test_table_records_failures_and_goes_on() -> None:
    out = io.StringIO()
    broken = [zoo.ZooEntry("torchvision", "no_such_arch"), zoo.ZooEntry("nolib", "x")]
    rows = table(select(["squeezenet1_1", "mobilenet_v3_small"]) + broken, out=out)
    assert [r[0] for r in rows] == ["squeezenet1_1", "mobilenet_v3_small", "no_such_arch", "x"]
    assert rows[0][3].startswith("converts: error ") and "at T=128" in rows[0][3]
    assert rows[1][3].startswith("refused: ") and "Hardswish" in rows[1][3]
    assert rows[2][3].startswith("CRASH: AttributeError") and rows[3][3].startswith("CRASH: ValueError")
    assert rows[2][4] == "-"
    lines = out.getvalue().splitlines()
    assert lines[0] == "| model | library | input | result | compile s |" and len(lines) == 2 + len(rows)


def test_time_limit_stops_a_model_and_the_table_says_so() -> None:
    with pytest.raises(ZooTimeLimit):
        with time_limit(0.2):
            time.sleep(2)
    # (a limit the model cannot meet on any machine: resnet18 converts in under 0.5 s on 2 idle cores)
    text, compile_s = run_entry(zoo.get_entry("torchvision/resnet18"), limit_s=0.02)
    assert text.startswith("TIME LIMIT") and compile_s is None
    with pytest.raises(SystemExit, match="no zoo entry"):
        select(["no_such_model"])


@pytest.mark.parametrize("name", ["torchvision/resnet18", "torchvision/mobilenet_v2", "torchvision/shufflenet_v2_x0_5",
                                  "torchvision/densenet121", "timm/resnet18"])
def test_to_trainable_as_users_call_it_trains_real_definitions(name: str) -> None:
    """``to_trainable(model, T, neuron, surrogate)`` with no example input (traced at the first
    forward), an optimizer made before it: one step changes the weights, gradients are finite."""
    model = zoo.build(zoo.get_entry(name))
    before = zoo._snapshot(model)
    snn = snncompile.to_trainable(model, T=2, neuron="lif", surrogate="atan")
    opt = torch.optim.SGD(snn.parameters(), lr=0.1)
    first = [p.detach().clone() for p in snn.parameters()]
    out = snn(zoo.make_inputs(zoo.get_entry(name), 2, stream=3))
    loss = torch.nn.functional.cross_entropy(out, torch.tensor([1, 2]))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in snn.parameters() if p.grad is not None)
    opt.step()
    assert out.shape == (2, zoo.NUM_CLASSES)
    assert any(not torch.equal(a, p) for a, p in zip(first, snn.parameters()))
    assert zoo._changes(model, before) == []  # the user's model is not trained by the SNN's optimizer
