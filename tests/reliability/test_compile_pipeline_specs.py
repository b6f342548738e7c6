"""Bad pipelines, pass options and instruments (issue 12, the compile path): a typo in
print_after, duplicate or mistyped options in a spec, replacing a standard pass by accident,
things that are not passes, a pipeline that leaves no SNN, a dump_dir that is a file, and
option values no neuron or normalization can use. Each case asserts the error type and the
words a user needs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import snncompile
from snncompile import PassContext, Pipeline, get_pass, register_pass
from snncompile.errors import ConfigError
from snncompile.pipeline import PASSES


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def _x():
    return torch.rand(32, 4, generator=torch.Generator().manual_seed(1))


def _compile(**kw):
    kw.setdefault("backend", "torch")
    return snncompile.compile(_mlp(), _x(), T=4, **kw)


# ------------------------------------------------------------------------------------------
# print_after


def test_print_after_typo_is_refused_with_a_suggestion(capsys):
    with pytest.raises(ConfigError) as e:
        _compile(print_after="normalise")
    msg = str(e.value)
    assert "print_after: 'normalise' is not a stage of this pipeline" in msg
    assert "did you mean 'normalize'" in msg and "'all'" in msg
    assert capsys.readouterr().out == ""  # refused before anything ran


def test_print_after_list_with_one_unknown_name():
    with pytest.raises(ConfigError, match=r"'relu-to-lif' is not a stage.*did you mean 'relu-to-if'"):
        _compile(print_after=["normalize", "relu-to-lif"])


def test_print_after_pass_not_in_this_pipeline_is_refused():
    with pytest.raises(ConfigError, match=r"'insert-surrogate' is not a stage of this pipeline \(input, canonicalize"):
        Pipeline("canonicalize", print_after="insert-surrogate").run(snncompile.trace(_mlp(), _x()))


def test_print_after_from_the_environment_is_checked(monkeypatch):
    monkeypatch.setenv("SNNCOMPILE_PRINT_AFTER", "normalise")
    with pytest.raises(ConfigError, match=r"\$SNNCOMPILE_PRINT_AFTER: 'normalise' is not a registered pass.*did you mean 'normalize'"):
        _compile()


def test_print_after_from_the_environment_may_name_any_registered_pass(monkeypatch, capsys):
    # one variable serves conversion and training pipelines alike
    monkeypatch.setenv("SNNCOMPILE_PRINT_AFTER", "insert-surrogate,normalize")
    _compile()
    assert "// ----- after normalize -----" in capsys.readouterr().out


def test_print_after_that_is_no_name():
    with pytest.raises(ConfigError, match="print_after takes 'all', a pass name or a list of pass names, got 3"):
        Pipeline("canonicalize", print_after=3)


# ------------------------------------------------------------------------------------------
# spec options


def test_duplicate_option_in_a_spec_is_refused():
    with pytest.raises(ConfigError) as e:
        Pipeline("canonicalize,normalize{p=99 mode=percentile p=50}")
    msg = str(e.value)
    assert "option 'p' of 'normalize' is given twice (p=99 and p=50); give it once" in msg


@pytest.mark.parametrize("spec,match", [
    ("normalize{p=True}", r"option p=True is of type bool, but p takes float — write it like p=99.9"),
    ("normalize{scale=false}", r"option scale=False is of type bool, but scale takes float"),
    ("relu-to-if{threshold=high}", r"option threshold='high' is of type str, but threshold takes float"),
    ("normalize{batch_size=2.5}", r"option batch_size=2.5 is of type float, but batch_size takes int"),
    ("normalize{mode=3}", r"option mode=3 is of type int, but mode takes str"),
    ("canonicalize{keep_dropout=1}", r"option keep_dropout=1 is of type int, but keep_dropout takes bool"),
    ("insert-surrogate{alpha=yes}", r"option alpha='yes' is of type str, but alpha takes float or None"),
])
def test_option_of_the_wrong_type_is_refused(spec, match):
    with pytest.raises(ConfigError, match=match):
        Pipeline(spec)


def test_option_types_are_checked_in_get_pass_too():
    with pytest.raises(ConfigError, match="p=True is of type bool"):
        get_pass("normalize", p=True)
    with pytest.raises(ConfigError, match="percentile=True|p=True"):
        _compile(percentile=True)
    # ints are numbers; None where the field allows it
    assert get_pass("normalize", p=99).p == 99
    assert get_pass("insert-surrogate", alpha=None, tau=3).tau == 3


# ------------------------------------------------------------------------------------------
# registering passes


def test_register_pass_refuses_to_replace_a_standard_pass():
    standard = PASSES["normalize"]
    with pytest.raises(ConfigError) as e:
        @register_pass("normalize")
        class MyNormalize:
            def __call__(self, g, ctx):
                return g
    msg = str(e.value)
    assert "'normalize' is a standard pass" in msg and "replace=True" in msg and "another name" in msg
    assert PASSES["normalize"] is standard
    assert get_pass("normalize").__class__ is standard


def test_register_pass_replace_true_replaces_on_purpose(monkeypatch):
    monkeypatch.setitem(PASSES, "normalize", PASSES["normalize"])  # restored after the test

    @register_pass("normalize", replace=True)
    class MyNormalize:
        def __call__(self, g, ctx):
            return g

    assert PASSES["normalize"] is MyNormalize


def test_register_pass_on_no_class():
    with pytest.raises(ConfigError, match="decorates a class"):
        register_pass("my-fn")(lambda g, ctx: g)


# ------------------------------------------------------------------------------------------
# things that are not passes or pipelines


@pytest.mark.parametrize("item,match", [
    (42, r"Pipeline: item 0 is 42 \(type int\), not a pass"),
    (None, r"Pipeline: item 0 is None \(type NoneType\), not a pass"),
    (lambda g, ctx: g, r"item 0 is <function .*\(type function\), not a pass"),
])
def test_pipeline_of_non_passes_is_refused_at_once(item, match):
    with pytest.raises(ConfigError, match=match):
        Pipeline([item])
    with pytest.raises(ConfigError, match=r"give a pass instance \(get_pass\('normalize'"):
        Pipeline(["canonicalize", item])


def test_pipeline_of_a_pass_class_says_instantiate_it():
    cls = PASSES["canonicalize"]
    with pytest.raises(ConfigError, match=r"item 0 is .*the class Canonicalize, not an instance"):
        Pipeline([cls])
    with pytest.raises(ConfigError, match="the class Canonicalize, not an instance"):
        Pipeline("canonicalize").insert_after("canonicalize", cls)


def test_pipeline_of_no_list():
    with pytest.raises(ConfigError, match="Pipeline takes a spec string or a list of passes, got 42"):
        Pipeline(42)
    with pytest.raises(ConfigError, match="compile: pipeline must be a Pipeline or a spec string, got int"):
        _compile(pipeline=42)


@pytest.mark.parametrize("pipeline", ["canonicalize", "canonicalize,normalize", Pipeline(["canonicalize"])],
                         ids=["spec", "spec2", "Pipeline"])
def test_pipeline_that_leaves_no_snn_is_refused(pipeline):
    with pytest.raises(ConfigError) as e:
        _compile(pipeline=pipeline)
    msg = str(e.value)
    assert "compile: the pipeline" in msg and "leaves a graph with no time steps" in msg
    assert "add relu-to-if" in msg and "encode-input and readout" in msg


def test_to_trainable_pipeline_that_leaves_no_snn_is_refused():
    with pytest.raises(ConfigError, match="to_trainable: the pipeline 'canonicalize' leaves a graph with no time steps"):
        snncompile.to_trainable(_mlp(), T=2, pipeline="canonicalize", backend="torch")


def test_model_without_relu_still_converts():
    """No neuron, but encode and readout: a valid (if trivial) SNN, as before."""
    snn = snncompile.compile(nn.Linear(4, 3).eval(), _x(), T=4, backend="torch")
    assert snn(_x()).shape == (32, 3)


# ------------------------------------------------------------------------------------------
# dump_dir


def test_dump_dir_that_is_a_file_is_refused_before_any_pass(tmp_path):
    f = tmp_path / "dumps"
    f.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"dump_dir '.*dumps' is a file, not a directory — give a writable directory"):
        _compile(dump_dir=str(f))
    assert f.read_text() == "not a directory"


def test_dump_dir_under_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"dump_dir '.*file/sub' cannot be created"):
        _compile(dump_dir=str(f / "sub"))


def test_dump_dir_is_created_and_filled(tmp_path):
    d = tmp_path / "new" / "dumps"
    _compile(dump_dir=str(d))
    assert (d / "00-input.txt").is_file() and any(p.name.endswith("normalize.txt") for p in d.iterdir())


def test_dump_dir_of_the_wrong_type():
    with pytest.raises(ConfigError, match="dump_dir 3 cannot be created"):
        _compile(dump_dir=3)


# ------------------------------------------------------------------------------------------
# option values no SNN can use


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan, math.inf])
def test_fixed_normalization_refuses_nonpositive_scale(scale):
    with pytest.raises(ConfigError, match=r"normalize: scale=.* must be a positive number .*mode 'fixed'"):
        _compile(normalize="fixed", scale=scale)


@pytest.mark.parametrize("threshold", [0.0, -1.0, math.nan, math.inf])
def test_relu_to_if_refuses_nonpositive_threshold(threshold):
    g = snncompile.trace(_mlp(), _x())
    with pytest.raises(ConfigError, match=r"relu-to-if: threshold=.* must be a positive number"):
        Pipeline([get_pass("relu-to-if", threshold=threshold)]).run(g, PassContext())
    if math.isfinite(threshold):  # (a spec reads nan and inf as words, refused as such)
        spec = f"canonicalize,normalize,relu-to-if{{threshold={threshold}}},encode-input,readout"
        with pytest.raises(ConfigError, match=r"relu-to-if: threshold=.* must be a positive number"):
            _compile(pipeline=spec)


def test_insert_surrogate_refuses_infinite_threshold():
    with pytest.raises(ConfigError, match="insert-surrogate: threshold must be a positive number, got inf"):
        snncompile.to_trainable(_mlp(), T=2, threshold=math.inf, backend="torch")


def test_good_values_still_convert():
    snn = _compile(normalize="fixed", scale=2.0)
    assert snn(_x()).shape == (32, 3)
    _compile(pipeline="canonicalize,normalize,relu-to-if{threshold=0.5},encode-input,readout")
