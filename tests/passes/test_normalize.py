"""normalize: the rescaled ANN computes the same function, and every ReLU's scale becomes 1."""
from __future__ import annotations

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

import snncompile
from snncompile import PassContext, Pipeline
from snncompile.emit import emit, run_graph
from snncompile.errors import CalibrationError, ConfigError, UnsupportedOpError

from nets import Concat, Residual, rand_bn

FUNC_RTOL = 1e-4  # normalized vs original ANN, relative to the output's magnitude
MAX_TOL = 1e-5    # each ReLU's max over the calibration data is 1 within this


def _cnn():
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), rand_bn(nn.BatchNorm2d(6)), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 2 * 2, 12), rand_bn(nn.BatchNorm1d(12)), nn.ReLU(), nn.Linear(12, 5)).eval()


def _normalize(model, x, spec="mode=max", granularity="layer"):
    pipe = Pipeline(f"canonicalize,fold-batchnorm,normalize{{{spec} granularity={granularity}}}")
    g = pipe.run(snncompile.trace(model, x), PassContext(calibration_data=x))
    return pipe, g


def _activations(graph, x):
    """Every node's output (by IR id) when the graph's ANN runs on x."""
    gm = emit(graph)
    fx_to_id = {name: i for i, name in gm.ir_names.items()}
    out = {}

    class Rec(fx.Interpreter):
        def run_node(self, n):
            v = super().run_node(n)
            if n.name in fx_to_id:
                out[fx_to_id[n.name]] = v.detach() if isinstance(v, torch.Tensor) else v
            return v

    with torch.no_grad():
        Rec(gm).run(x)
    return out


def _channel_max(a):
    return a.transpose(0, 1).reshape(a.shape[1], -1).max(1).values


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


MODELS = {"cnn": (_cnn, (2, 8, 8)), "residual": (lambda: Residual().eval(), (2, 8, 8)),
          "concat": (lambda: Concat().eval(), (2, 8, 8))}


@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_normalized_ann_computes_the_same_function(name, granularity):
    torch.manual_seed(0)
    mk, shape = MODELS[name]
    model = mk()
    x = torch.rand((48,) + shape)
    _, g = _normalize(model, x, granularity=granularity)
    with torch.no_grad():
        ref = model(x)
    assert _rel(run_graph(g, x), ref) < FUNC_RTOL
    # also on data it was not calibrated on
    x2 = torch.rand((16,) + shape) * 1.5
    with torch.no_grad():
        assert _rel(run_graph(g, x2), model(x2)) < FUNC_RTOL
    # the weights really changed (otherwise the function check is empty)
    before = snncompile.trace(model, x)
    w0 = [n.params["weight"] for n in before.nodes if n.op == "conv2d"][-1]
    w1 = [n.params["weight"] for n in g.nodes if n.op == "conv2d"][-1]
    assert not torch.allclose(w0, w1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_mode_max_layerwise_each_relu_max_is_one(name):
    torch.manual_seed(1)
    mk, shape = MODELS[name]
    model = mk()
    x = torch.rand((48,) + shape)
    _, g = _normalize(model, x, granularity="layer")
    acts = _activations(g, x)
    relus = g.find("relu")
    assert len(relus) >= 3
    for r in relus:
        assert abs(float(acts[r.id].max()) - 1.0) < MAX_TOL, r.describe()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_mode_max_channelwise_each_channel_max_is_one(name):
    torch.manual_seed(2)
    mk, shape = MODELS[name]
    model = mk()
    x = torch.rand((48,) + shape)
    pipe, g = _normalize(model, x, granularity="channel")
    orig = _activations(pipe.stage("fold-batchnorm"), x)
    acts = _activations(g, x)
    for r in g.find("relu"):
        cmax = _channel_max(acts[r.id])
        active = _channel_max(orig[r.id]) > 0  # a channel that never fires keeps the layer's scale
        assert active.any(), r.describe()
        assert torch.allclose(cmax[active], torch.ones(int(active.sum())), atol=MAX_TOL), (r.describe(), cmax)
        assert torch.all(cmax[~active] == 0)  # dead channels stay dead
    # channel-wise means the channels really had different scales before
    spread = [_channel_max(orig[r.id]) for r in g.find("relu")]
    assert any(float(s.max() / s[s > 0].min()) > 1.2 for s in spread)


def test_each_relu_output_is_the_original_divided_by_its_lambda():
    torch.manual_seed(3)
    model = _cnn()
    x = torch.rand(48, 2, 8, 8)
    pipe, g = _normalize(model, x, granularity="channel")
    orig = _activations(pipe.stage("fold-batchnorm"), x)
    new = _activations(g, x)
    for r in g.find("relu"):
        lam = r.meta["act_scale"]
        assert torch.allclose(new[r.id] * lam, orig[r.id], rtol=1e-4, atol=1e-5), r.describe()


def test_residual_add_inputs_share_one_scale():
    torch.manual_seed(4)
    model = Residual().eval()
    x = torch.rand(48, 2, 8, 8)
    for granularity in ("layer", "channel"):
        pipe, g = _normalize(model, x, granularity=granularity)
        text = str(g)
        (add,) = g.find("add")
        # the skip (a ReLU output with its own scale) enters the add through a scale node
        scales = [i for i in add.inputs if i.op == "scale"]
        assert len(scales) == 1, text
        assert scales[0].inputs[0].op == "relu"
        assert f"= scale(%{scales[0].inputs[0].id})" in text
        assert f"add(%{scales[0].id}," in text or f", %{scales[0].id})" in text
        # both inputs of the add carry the same scale, the lambda of the ReLU after the add:
        # new = original / lambda for each of them
        orig = _activations(pipe.stage("fold-batchnorm"), x)
        new = _activations(g, x)
        ref_add = pipe.stage("fold-batchnorm").node(add.id)
        lam = g.find("relu")[-1].meta["act_scale"]  # the ReLU after the add
        for i_new, i_orig in zip(add.inputs, ref_add.inputs):
            assert torch.allclose(new[i_new.id] * lam, orig[i_orig.id], rtol=1e-4, atol=1e-5)
        with torch.no_grad():
            assert _rel(run_graph(g, x), model(x)) < FUNC_RTOL


def test_percentile_mode_lambdas_are_below_max():
    torch.manual_seed(5)
    model = _cnn()
    x = torch.rand(64, 2, 8, 8)
    _, g_max = _normalize(model, x, "mode=max", "layer")
    _, g_pct = _normalize(model, x, "mode=percentile p=99", "layer")
    lam_max = {r.id: float(r.meta["act_scale"]) for r in g_max.find("relu")}
    lam_pct = {r.id: float(r.meta["act_scale"]) for r in g_pct.find("relu")}
    assert lam_max.keys() == lam_pct.keys() and lam_max
    for k in lam_max:
        assert 0 < lam_pct[k] < lam_max[k], (k, lam_pct[k], lam_max[k])
    # so the normalized activations exceed 1 somewhere (they would clip as spikes)...
    acts = _activations(g_pct, x)
    assert all(float(acts[r.id].max()) > 1.0 + 1e-3 for r in g_pct.find("relu"))
    # ...and the ANN function is still unchanged
    with torch.no_grad():
        assert _rel(run_graph(g_pct, x), model(x)) < FUNC_RTOL


def test_fixed_mode_divides_by_the_given_scale():
    torch.manual_seed(6)
    model = _cnn()
    x = torch.rand(16, 2, 8, 8)
    pipe, g = _normalize(model, x, "mode=fixed scale=4.0", "layer")
    orig = _activations(pipe.stage("fold-batchnorm"), x)
    new = _activations(g, x)
    for r in g.find("relu"):
        assert torch.allclose(new[r.id] * 4.0, orig[r.id], rtol=1e-5, atol=1e-6)


def test_reusing_a_context_calibrates_each_model_on_its_own_activations():
    """Two models of the same architecture, one PassContext (one calibration set): the second
    model's lambdas must come from its own activations, not from statistics cached for the first."""
    x = torch.rand(48, 2, 8, 8)
    ctx = PassContext(calibration_data=x)
    for seed in (10, 11):
        torch.manual_seed(seed)
        model = _cnn()
        g = Pipeline("canonicalize,fold-batchnorm,normalize{mode=max granularity=layer}").run(
            snncompile.trace(model, x), ctx)
        acts = _activations(g, x)
        for r in g.find("relu"):
            assert abs(float(acts[r.id].max()) - 1.0) < MAX_TOL, (seed, r.describe(), float(acts[r.id].max()))


def test_lone_batchnorm_is_rescaled_as_a_per_channel_affine():
    """A BN after the ReLU has no layer to fold into: it runs as a diagonal linear, which normalize
    rescales like any layer; the normalized ANN computes the model (outputs in true units)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        model[2].running_mean.uniform_(-0.5, 0.5)
        model[2].running_var.uniform_(0.5, 2.0)
        model[2].weight.uniform_(0.5, 2.0)
    x = torch.rand(16, 4)
    _, g = _normalize(model, x)
    assert not g.find("batchnorm") and len(g.find("linear")) == 3
    with torch.no_grad():
        assert torch.allclose(run_graph(g, x), model(x), atol=1e-5)
    acts = _activations(g, x)
    assert all(abs(float(acts[r.id].max()) - 1.0) < MAX_TOL for r in g.find("relu"))


def test_opaque_op_is_refused_naming_it():
    class Sig(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2 = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.l2(torch.sigmoid(self.l1(x)))

    x = torch.rand(16, 4)
    g = snncompile.trace(Sig(), x)
    (op,) = g.find("opaque")
    with pytest.raises(UnsupportedOpError) as ei:
        _normalize(Sig(), x)
    assert f"%{op.id} opaque" in str(ei.value) and "sigmoid" in str(ei.value)


def test_no_calibration_data_is_a_calibration_error():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    g = snncompile.trace(model, torch.rand(4, 4))
    pipe = Pipeline("canonicalize,fold-batchnorm,normalize{mode=max}")
    with pytest.raises(CalibrationError, match="calibration"):
        pipe.run(g, PassContext())
    # fixed mode needs no data
    g2 = Pipeline("normalize{mode=fixed scale=2.0}").run(g, PassContext())
    assert len(g2.find("relu")) == 1


@pytest.mark.parametrize("spec", ["mode=median", "granularity=pixel", "mode=percentile p=0"])
def test_bad_options_are_config_errors(spec):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.rand(8, 4)
    with pytest.raises(ConfigError):
        Pipeline(f"normalize{{{spec}}}").run(snncompile.trace(model, x), PassContext(calibration_data=x))
