"""Op traits: the table says what each op is, passes ask it (never their own lists of op names),
and nothing in passes/ reaches the emitter or torch.fx."""
from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import snncompile
from snncompile import ops
from snncompile.errors import ConfigError
from snncompile.ir import Graph
from snncompile.neurons import NeuronFamily, Param, get_family, neuron_families, register_family, unregister_family
from snncompile.neurons.params import V_INIT, reset_param
from snncompile.ops import NEURON_OPS, OPS, STATEFUL_OPS, OpDef, has_trait, ops_with, register_op
from snncompile.pipeline import PassContext, Pipeline

PASSES_DIR = Path(importlib.util.find_spec("snncompile.passes").origin).parent
PKG_DIR = Path(snncompile.__file__).parent


@pytest.fixture
def scratch_ops():
    """Register ops for one test; the table is restored afterwards."""
    saved = dict(OPS)
    yield
    OPS.clear()
    OPS.update(saved)


# ---------------------------------------------------------------------------------------------
# the table


def test_trait_sets_of_the_standard_ops():
    assert set(ops_with("weighted")) == {"conv1d", "conv2d", "conv3d", "linear"}
    assert set(ops_with("shape")) == {"flatten", "reshape", "dropout", "identity"}
    assert set(ops_with("layout")) == {"flatten", "reshape"}
    # rearrangements: every output element is one input element (activation scales go through)
    assert set(ops_with("rearrange")) == {"flatten", "reshape", "slice", "select", "permute"}
    assert set(ops_with("neuron")) == {"neuron", "neuron_sumpool2d"}
    assert set(ops_with("stateful")) == {"neuron", "neuron_sumpool2d", "spike_maxpool2d", "synapse_filter", "recurrent"}
    assert set(ops_with("temporal")) == {n for n, d in OPS.items() if d.temporal}
    assert set(ops_with("pooling")) == {"avgpool2d", "sumpool2d", "maxpool2d", "spike_maxpool2d", "adaptive_avgpool2d",
                                        "neuron_sumpool2d", "pad"}  # a zero pad keeps the channel layout
    assert set(ops_with("multiply")) == {"mul_const", "scale"}
    st = set(ops_with("scale_transparent"))
    assert {"relu", "maxpool2d", "avgpool2d", "sumpool2d", "adaptive_avgpool2d", "flatten", "reshape", "dropout",
            "identity", "mul_const", "scale", "cat", "add", "slice", "select", "permute", "pad"} == st
    assert set(ops_with("linear")) <= st  # linear implies positively homogeneous
    for op in ("clamp", "batchnorm", "conv2d", "linear", "neuron", "neuron_sumpool2d", "spike_maxpool2d", "opaque",
               "encode"):
        assert op not in st, op


def test_has_trait_takes_names_and_nodes():
    g = Graph()
    x = g.add("input", meta={"shape": (None, 4)})
    r = g.add("relu", [x], meta={"shape": (None, 4)})
    assert has_trait("relu", "scale_transparent") and has_trait(r, "scale_transparent")
    assert not has_trait(x, "weighted")
    assert not has_trait("no_such_op", "weighted")
    with pytest.raises(ConfigError, match="unknown op trait 'wieghted'"):
        has_trait(r, "wieghted")
    with pytest.raises(ConfigError, match="unknown op trait"):
        ops_with("scale-transparent")


def test_neuron_and_stateful_ops_are_computed_from_traits(scratch_ops):
    assert tuple(NEURON_OPS) == ops_with("neuron") and "neuron" in NEURON_OPS
    assert tuple(STATEFUL_OPS) == ops_with("stateful")
    assert NEURON_OPS == ("neuron", "neuron_sumpool2d")
    assert "relu" not in NEURON_OPS and None not in NEURON_OPS
    register_op(OpDef("my_neuron", 1, {}, ("threshold",), temporal=True, shape_rule=lambda s, n: s[0],
                      traits={"neuron", "stateful"}))
    assert "my_neuron" in NEURON_OPS and "my_neuron" in STATEFUL_OPS  # a live view
    assert "my_neuron" in NEURON_OPS + ("x",)


def test_temporal_flag_and_trait_agree():
    for d in OPS.values():
        assert d.temporal == ("temporal" in d.traits), d.name
    d = OpDef("t_only", traits={"temporal"})
    assert d.temporal
    assert "temporal" in OpDef("t_flag", temporal=True).traits


def test_register_op_adds_declared_traits():
    d = OpDef("with_new_trait", traits={"my_custom_trait"})
    saved = dict(OPS)
    try:
        register_op(d)
        assert ops_with("my_custom_trait") == ("with_new_trait",)
    finally:
        OPS.clear()
        OPS.update(saved)


# ---------------------------------------------------------------------------------------------
# the passes ask traits, and behave as before


def test_canonicalize_folds_through_exactly_the_ops_it_did():
    """The fold's walk (before traits: relu, maxpool2d + linear pools and layout ops for c > 0;
    linear pools and layout ops otherwise) is the same set now asked of traits."""
    from snncompile.passes.canonicalize import _carries_constant

    old_linear = {"avgpool2d", "sumpool2d", "adaptive_avgpool2d", "flatten", "reshape", "dropout", "identity",
                  "slice", "select", "permute", "pad"}  # (added with issue 13: linear maps, a constant passes)
    old_pos = old_linear | {"relu", "maxpool2d"}

    class N:
        def __init__(self, op):
            self.op = op
    assert {op for op in OPS if _carries_constant(N(op), 2.0)} == old_pos
    assert {op for op in OPS if _carries_constant(N(op), -2.0)} == old_linear


def test_normalize_carries_scales_through_exactly_the_ops_it_did():
    from snncompile.passes.normalize import _carries_scale

    old_transparent = {"maxpool2d", "avgpool2d", "sumpool2d", "adaptive_avgpool2d", "mul_const", "scale",
                       "dropout", "identity", "pad"}  # pad (issue 13): zeros keep any per-channel scale

    class N:
        def __init__(self, op):
            self.op = op
    # relu and add are handled before the pass asks (relu resets the scale, add merges two)
    assert {op for op in OPS if _carries_scale(N(op))} == old_transparent | {"relu", "add"}


def test_fold_batchnorm_folds_into_any_weighted_op(scratch_ops):
    register_op(OpDef("my_linear", 1, {}, ("weight",), ("bias",), F.linear, traits={"weighted"}))
    g = Graph()
    x = g.add("input", meta={"shape": (None, 3)})
    lin = g.add("my_linear", [x], params={"weight": torch.randn(4, 3), "bias": torch.randn(4)}, meta={"shape": (None, 4)})
    bn = g.add("batchnorm", [lin], params={"running_mean": torch.rand(4), "running_var": torch.rand(4) + 0.5},
               meta={"shape": (None, 4)})
    g.add("output", [bn], meta={"shape": (None, 4)})
    g.verify()
    out = Pipeline("fold-batchnorm").run(g, PassContext())
    assert [n.op for n in out] == ["input", "my_linear", "output"]


def test_spike_maxpool_and_fusion_see_any_neuron_op(scratch_ops):
    """spike-maxpool asks the trait (any op with trait neuron); fuse-neuron-sumpool fuses a neuron
    of any binary-spiking family, a user-registered one included (signed neurons stay unfused)."""
    register_op(OpDef("my_neuron", 1, {}, ("threshold",), temporal=True,
                      shape_rule=ops.get_op("neuron").shape_rule, traits={"neuron", "stateful"}))
    g = Graph()
    x = g.add("input", meta={"shape": (None, 2, 4, 4)})
    n = g.add("my_neuron", [x], params={"threshold": torch.tensor(1.0)}, meta={"shape": (None, 2, 4, 4)})
    p = g.add("maxpool2d", [n], {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)},
              meta={"shape": (None, 2, 2, 2)})
    g.add("output", [p], meta={"shape": (None, 2, 2, 2)})
    out = Pipeline("spike-maxpool").run(g, PassContext())
    assert [m.op for m in out] == ["input", "my_neuron", "spike_maxpool2d", "output"]
    assert g.node(p.id).op == "maxpool2d"  # the pipeline's input graph is untouched
    register_family(NeuronFamily("my_if", (V_INIT, reset_param("subtract", "value"), Param("v_reset", float, 0.0)),
                                 lambda A, v, x, p: A.add(v, x), lambda A, g, p: (g, g), doc="IF, registered here"))
    try:
        assert {"if", "lif", "signed_if", "my_if"} <= set(neuron_families())
        for family in neuron_families():
            g = Graph()
            x = g.add("input", meta={"shape": (None, 2, 4, 4)})
            n = g.add("neuron", [x], {"family": family}, params={"threshold": torch.tensor(1.0)},
                      meta={"shape": (None, 2, 4, 4)})
            p = g.add("sumpool2d", [n], {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)},
                      meta={"shape": (None, 2, 2, 2)})
            g.add("output", [p], meta={"shape": (None, 2, 2, 2)})
            g.verify()
            out = Pipeline("fuse-neuron-sumpool").run(g, PassContext())
            out.verify()
            if get_family(family).spikes == "signed":
                # window sums of +1/-1 spikes would hide the spike counts: signed neurons stay unfused
                # (window sums of multi-spike counts are exact counts: those fuse)
                assert [m.op for m in out] == ["input", "neuron", "sumpool2d", "output"], family
                continue
            assert [m.op for m in out] == ["input", "neuron_sumpool2d", "output"], family
            fused = out.node(n.id)
            assert fused.attrs == {"family": family, "kernel_size": 2} and fused.shape == (None, 2, 2, 2)
    finally:
        unregister_family("my_if")
    assert "my_if" not in neuron_families()
    assert get_family("signed_if").spikes == "signed" and get_family("if").spikes == "binary"


_NAME_LISTS = re.compile(r"""\(\s*"(neuron|neuron_sumpool2d|if_neuron|lif_neuron|conv2d|relu|maxpool2d|flatten)"\s*,"""
                         r"""\s*"\w+"\s*(,\s*"\w+"\s*)*\)""")


def test_passes_keep_no_op_lists_and_use_the_rewrite_api():
    """No pass assigns node.op, edits graph.nodes or node.inputs by hand, or keeps a tuple of
    neuron/layer op names (passes ask traits)."""
    for f in sorted(PASSES_DIR.glob("*.py")):
        text = f.read_text()
        for pat in (r"\.op\s*=[^=]", r"graph\.nodes\.", r"\.nodes\.insert", r"\.nodes\.remove", r"\.inputs\s*=[^=]",
                    r"NEURON_OPS", r"STATEFUL_OPS"):
            assert not re.search(pat, text), f"{f.name} matches {pat!r}"
        assert not _NAME_LISTS.search(text), f"{f.name} keeps a list of op names: {_NAME_LISTS.search(text).group(0)}"


# ---------------------------------------------------------------------------------------------
# passes/ never reaches the emitter or torch.fx


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "snncompile" or len(parts) == 1:
        return None
    base = PASSES_DIR if parts[1] == "passes" else PKG_DIR
    rest = parts[2:] if parts[1] == "passes" else parts[1:]
    p = base.joinpath(*rest) if rest else base
    for cand in (p.with_suffix(".py"), p / "__init__.py"):
        if cand.exists():
            return cand
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports (at the top or inside functions), as absolute names."""
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names if _module_file(f"{mod}.{a.name}") is not None}
    return out


def _closure() -> set[str]:
    todo = [f"snncompile.passes.{f.stem}" if f.stem != "__init__" else "snncompile.passes"
            for f in PASSES_DIR.glob("*.py")]
    seen: set[str] = set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        f = _module_file(m)
        if f is None:
            continue
        for dep in _imports(f, m):
            parts = dep.split(".")
            # a submodule import runs its parent packages' __init__ (not the top-level API one)
            todo += [".".join(parts[:k]) for k in range(2, len(parts) + 1)]
            if not dep.startswith("snncompile"):
                seen.add(dep)
    return seen


def test_passes_do_not_import_the_emitter_or_fx():
    mods = _closure()
    assert "snncompile.calibrate" in mods and "snncompile.interpret" in mods  # the walk works
    bad = sorted(m for m in mods if m in ("snncompile.emit", "snncompile.runtime", "snncompile.convert")
                 or m.startswith("snncompile.frontend") or m == "torch.fx" or m.startswith("torch.fx."))
    assert not bad, f"passes/ reaches {bad}"


def test_importing_the_passes_alone_loads_no_emitter():
    """Import snncompile.passes in a fresh interpreter without the package's top-level API
    (snncompile/__init__.py imports everything): the emitter and the fx frontend stay unloaded."""
    code = f"""
import importlib.util, sys, types
pkg = types.ModuleType("snncompile"); pkg.__path__ = [{str(PKG_DIR)!r}]; sys.modules["snncompile"] = pkg
spec = importlib.util.spec_from_file_location("snncompile.passes", {str(PASSES_DIR / '__init__.py')!r},
                                              submodule_search_locations=[{str(PASSES_DIR)!r}])
mod = importlib.util.module_from_spec(spec); sys.modules["snncompile.passes"] = mod; spec.loader.exec_module(mod)
import snncompile.calibrate, snncompile.pipeline
assert "snncompile.passes.normalize" in sys.modules
print(sorted(m for m in sys.modules if m in ("snncompile.emit", "snncompile.runtime", "snncompile.frontend.fx")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
