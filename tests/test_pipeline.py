"""The Pipeline: text specs, editing, custom passes, verification between passes, instruments."""
from __future__ import annotations

import io
import os

import pytest
import torch
import torch.nn as nn

import snncompile.passes  # noqa: F401  (register the standard passes before the registry is patched)
import snncompile.pipeline as pipeline_mod
from snncompile import run_graph, trace
from snncompile.errors import ConfigError, PassError, VerifyError
from snncompile.ir import Graph
from snncompile.models import MnistCNN
from snncompile.pipeline import PassContext, Pipeline, format_pass, get_pass, parse_pipeline, register_pass


@pytest.fixture(autouse=True)
def private_registry(monkeypatch):
    """Passes registered by a test live only in that test."""
    monkeypatch.setattr(pipeline_mod, "PASSES", dict(pipeline_mod.PASSES))
    monkeypatch.delenv("SNNCOMPILE_PRINT_AFTER", raising=False)
    monkeypatch.delenv("SNNCOMPILE_DUMP_DIR", raising=False)


def _randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def mnist():
    torch.manual_seed(0)
    model = _randomize_bn(MnistCNN())
    x = torch.rand(2, 1, 28, 28)
    return model, x, trace(model, x)


# ---------------------------------------------------------------------------------------------
# text specs


@pytest.mark.parametrize("spec", [
    "canonicalize,fold-batchnorm",
    "canonicalize",
    "normalize{mode=max granularity=layer}",
    "canonicalize{fold_constants=False},fold-batchnorm,normalize{mode=fixed scale=2.5}",
    "fold-batchnorm,normalize{p=99.5}",
])
def test_spec_round_trip(spec):
    p = Pipeline(spec)
    assert str(p) == spec
    assert str(Pipeline(str(p))) == spec
    assert repr(p) == f"Pipeline({spec!r})"


def test_spec_options_are_typed():
    (norm,) = parse_pipeline("normalize{mode=max granularity=layer p=99.5 batch_size=64}")
    assert (norm.mode, norm.granularity, norm.p, norm.batch_size) == ("max", "layer", 99.5, 64)
    (canon,) = parse_pipeline("canonicalize{fold_constants=false}")
    assert canon.fold_constants is False


def test_spec_whitespace_and_defaults_normalise():
    assert str(Pipeline(" canonicalize , fold-batchnorm ")) == "canonicalize,fold-batchnorm"
    assert str(Pipeline("normalize{mode=percentile}")) == "normalize"  # a default is not printed
    assert format_pass(get_pass("normalize", mode="max")) == "normalize{mode=max}"


def test_unknown_pass_lists_registered_names():
    with pytest.raises(ConfigError, match="unknown pass 'fold-bn'") as info:
        Pipeline("canonicalize,fold-bn")
    msg = str(info.value)
    for name in ("canonicalize", "fold-batchnorm", "normalize", "relu-to-if"):
        assert name in msg
    with pytest.raises(ConfigError, match="unknown pass 'nope'"):
        Pipeline(["canonicalize", "nope"])


def test_bad_specs_and_options():
    with pytest.raises(ConfigError, match="bad options"):
        Pipeline("normalize{bogus=1}")
    with pytest.raises(ConfigError, match="key=value"):
        Pipeline("normalize{max}")
    with pytest.raises(ConfigError, match="cannot read"):
        Pipeline("Canonicalize!")
    with pytest.raises(ConfigError, match="empty pipeline"):
        Pipeline(" , ")


def test_register_pass_wants_kebab_case():
    with pytest.raises(ConfigError, match="kebab-case"):
        register_pass("My_Pass")


# ---------------------------------------------------------------------------------------------
# running, verification between passes


def test_run_leaves_the_input_graph_alone(mnist):
    model, x, graph = mnist
    text = str(graph)
    out = Pipeline("canonicalize,fold-batchnorm").run(graph)
    assert str(graph) == text
    assert not out.find("batchnorm") and len(graph.find("batchnorm")) == 3
    with torch.no_grad():
        assert (run_graph(out, x) - model(x)).abs().max() <= 1e-5


def test_broken_pass_is_named_with_the_node(mnist):
    _, _, graph = mnist

    @register_pass("break-shapes")
    class BreakShapes:
        def __call__(self, g: Graph, ctx: PassContext) -> Graph:
            g.node(7).meta["shape"] = (None, 32, 99, 99)
            return g

    p = Pipeline("canonicalize,break-shapes,fold-batchnorm")
    with pytest.raises(PassError) as info:
        p.run(graph)
    msg = str(info.value)
    assert "'break-shapes'" in msg
    assert "node %7 relu (network.6, mnist_cnn.py:" in msg
    assert "recorded shape [None, 32, 99, 99]" in msg
    assert "passes run before: canonicalize" in msg
    assert isinstance(info.value.__cause__, VerifyError)
    assert [name for name, _ in p.stages] == ["input", "canonicalize"]


def test_broken_pass_passes_without_verify(mnist):
    _, _, graph = mnist

    @register_pass("break-shapes")
    class BreakShapes:
        def __call__(self, g, ctx):
            g.node(7).meta["shape"] = (None, 1)
            return g

    out = Pipeline("break-shapes", verify=False).run(graph)
    assert out.node(7).shape == (None, 1)


def test_failing_pass_is_named(mnist):
    _, _, graph = mnist

    @register_pass("explode")
    class Explode:
        def __call__(self, g, ctx):
            raise KeyError("boom")

    @register_pass("forget-return")
    class ForgetReturn:
        def __call__(self, g, ctx):
            g.nodes.reverse()

    with pytest.raises(PassError, match=r"pass 'explode' failed: KeyError: 'boom' \(passes run before: canonicalize\)"):
        Pipeline("canonicalize,explode").run(graph)
    with pytest.raises(PassError, match=r"pass 'forget-return' returned NoneType, not a Graph"):
        Pipeline("forget-return").run(graph)


def test_snncompile_errors_keep_their_type_and_gain_the_pass_name(mnist):
    from snncompile.errors import UnsupportedOpError

    _, _, graph = mnist

    @register_pass("refuse")
    class Refuse:
        def __call__(self, g, ctx):
            raise UnsupportedOpError(f"{g.node(7).describe()} is not supported — remove it")

    with pytest.raises(UnsupportedOpError, match=r"^refuse: node %7 relu \(network\.6, mnist_cnn\.py:\d+\) is not"):
        Pipeline("canonicalize,refuse").run(graph)


def test_custom_pass_relu_to_relu6(mnist):
    model, x, graph = mnist

    @register_pass("relu6")
    class Relu6:
        """Requires: nothing. Guarantees: every relu is clamp(0, 6)."""

        top: float = 6.0

        def __call__(self, g: Graph, ctx: PassContext) -> Graph:
            for n in g.find("relu"):
                n.op, n.attrs = "clamp", {"min": 0.0, "max": self.top}
            return g

    p = Pipeline("canonicalize,fold-batchnorm").insert_after("canonicalize", "relu6")
    assert str(p) == "canonicalize,relu6,fold-batchnorm"
    out = p.run(graph)
    assert not out.find("relu")
    assert [n.attrs for n in out.find("clamp")] == [{"min": 0.0, "max": 6.0}] * 3
    assert "clamp(%1) min=0 max=6" in str(out)
    # the function is the model with ReLU6: inputs large enough that the clamp bites
    ref = _randomize_bn(MnistCNN())
    ref.load_state_dict(model.state_dict())
    for i, m in enumerate(ref.network):
        if isinstance(m, nn.ReLU):
            ref.network[i] = nn.ReLU6()
    big = x * 50
    with torch.no_grad():
        want, relu_out = ref(big), model(big)
        got = run_graph(out, big)
    assert (got - want).abs().max() <= 1e-4
    assert (got - relu_out).abs().max() > 1e-3  # it really changed the function
    # instances with options work too
    p2 = Pipeline("canonicalize").insert_before("canonicalize", Relu6(top=1.0))
    assert str(p2) == "relu6{top=1.0},canonicalize"
    assert {n.attrs["max"] for n in p2.run(graph).find("clamp")} == {1.0}


def test_custom_pass_counts_convs_into_ctx_cache(mnist):
    _, _, graph = mnist

    @register_pass("count-convs")
    class CountConvs:
        def __call__(self, g, ctx):
            ctx.cache.setdefault("convs", []).append(len(g.find("conv2d")))
            return g

    ctx = PassContext()
    p = Pipeline("canonicalize,fold-batchnorm")
    p.insert_after("canonicalize", "count-convs").insert_after("fold-batchnorm", "count-convs")
    assert str(p) == "canonicalize,count-convs,fold-batchnorm,count-convs"
    p.run(graph, ctx)
    assert ctx.cache["convs"] == [3, 3]


def test_remove_and_replace(mnist):
    _, _, graph = mnist
    p = Pipeline("canonicalize,fold-batchnorm")
    assert str(p.remove("fold-batchnorm")) == "canonicalize"
    assert len(p.run(graph).find("batchnorm")) == 3
    p = Pipeline("canonicalize,fold-batchnorm").replace("canonicalize", get_pass("normalize", mode="fixed"))
    assert str(p) == "normalize{mode=fixed},fold-batchnorm"
    p = Pipeline("canonicalize,fold-batchnorm").replace("fold-batchnorm", "relu-to-if")
    assert str(p) == "canonicalize,relu-to-if"
    p = Pipeline("canonicalize").replace("canonicalize", get_pass("canonicalize", fold_constants=False))
    assert str(p) == "canonicalize{fold_constants=False}"
    with pytest.raises(ConfigError, match="no pass named 'fold-batchnorm' in pipeline canonicalize"):
        Pipeline("canonicalize").remove("fold-batchnorm")
    with pytest.raises(ConfigError, match="no pass named 'x'"):
        Pipeline("canonicalize").insert_after("x", "canonicalize")


# ---------------------------------------------------------------------------------------------
# instruments: snapshots, printing, dumping, timing


def test_snapshots_stage_and_diff(mnist):
    _, _, graph = mnist
    p = Pipeline("canonicalize,fold-batchnorm")
    out = p.run(graph)
    assert [name for name, _ in p.stages] == ["input", "canonicalize", "fold-batchnorm"]
    assert str(p.stage("fold-batchnorm")) == str(out)
    assert str(p.stage("input")) == str(graph)
    assert p.stage("fold-batchnorm") is not out  # a snapshot, not the live graph
    d = p.diff("input", "fold-batchnorm")
    removed = [ln for ln in d.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    added = [ln for ln in d.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    assert sum("batchnorm(" in ln for ln in removed) == 3
    assert not any("batchnorm(" in ln for ln in added)
    assert any(ln.startswith("+%3 = relu(%1)") for ln in added)
    assert p.diff("input", "canonicalize") == ""  # nothing to canonicalize in this model
    with pytest.raises(ConfigError, match="no stage 'normalize'; stages: input, canonicalize, fold-batchnorm"):
        p.stage("normalize")


def test_no_snapshots(mnist):
    _, _, graph = mnist
    p = Pipeline("canonicalize", snapshots=False)
    p.run(graph)
    with pytest.raises(ConfigError, match="no stage"):
        p.stage("canonicalize")


def test_print_after_all_to_a_stream(mnist):
    _, _, graph = mnist
    buf = io.StringIO()
    out = Pipeline("canonicalize,fold-batchnorm", print_after="all", stream=buf).run(graph)
    text = buf.getvalue()
    for name in ("input", "canonicalize", "fold-batchnorm"):
        assert f"// ----- after {name} -----" in text
    assert text.index("after input") < text.index("after canonicalize") < text.index("after fold-batchnorm")
    assert text.rstrip().endswith(str(out).splitlines()[-1])
    assert text.count("batchnorm(") == 6  # in the input and after canonicalize, not after folding


def test_print_after_one_pass(mnist):
    _, _, graph = mnist
    buf = io.StringIO()
    Pipeline("canonicalize,fold-batchnorm", print_after="fold-batchnorm", stream=buf).run(graph)
    assert buf.getvalue().count("// ----- after") == 1
    assert "// ----- after fold-batchnorm -----" in buf.getvalue()


def test_print_after_from_the_environment(mnist, monkeypatch, capsys):
    _, _, graph = mnist
    monkeypatch.setenv("SNNCOMPILE_PRINT_AFTER", "all")
    Pipeline("canonicalize,fold-batchnorm").run(graph)
    text = capsys.readouterr().out
    for name in ("input", "canonicalize", "fold-batchnorm"):
        assert f"// ----- after {name} -----" in text
    monkeypatch.delenv("SNNCOMPILE_PRINT_AFTER")
    Pipeline("canonicalize,fold-batchnorm").run(graph)
    assert capsys.readouterr().out == ""  # silent by default


def test_dump_dir_writes_numbered_files(mnist, tmp_path):
    _, _, graph = mnist
    p = Pipeline("canonicalize,fold-batchnorm", dump_dir=str(tmp_path / "dump"))
    out = p.run(graph)
    files = sorted(os.listdir(tmp_path / "dump"))
    assert files == ["00-input.txt", "01-canonicalize.txt", "02-fold-batchnorm.txt"]
    assert (tmp_path / "dump" / "02-fold-batchnorm.txt").read_text() == str(out) + "\n"
    assert (tmp_path / "dump" / "00-input.txt").read_text() == str(graph) + "\n"


def test_dump_dir_from_the_environment(mnist, tmp_path, monkeypatch):
    _, _, graph = mnist
    monkeypatch.setenv("SNNCOMPILE_DUMP_DIR", str(tmp_path))
    Pipeline("fold-batchnorm").run(graph)
    assert sorted(os.listdir(tmp_path)) == ["00-input.txt", "01-fold-batchnorm.txt"]


def test_timing_table(mnist):
    _, _, graph = mnist
    p = Pipeline("canonicalize,fold-batchnorm")
    p.run(graph)
    assert [name for name, _ in p.timings] == ["canonicalize", "fold-batchnorm"]
    assert all(t >= 0 for _, t in p.timings)
    lines = p.timing_table().splitlines()
    assert len(lines) == 2 and lines[0].startswith("canonicalize") and lines[1].rstrip().endswith("ms")
