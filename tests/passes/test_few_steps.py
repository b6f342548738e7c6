"""Few time steps: thresholds chosen for T (normalize mode "mse"), layer-wise bias / potential
calibration (calibrate-bias), the simulator they run on, and the automatic choice in compile().

Each technique must lower the SNN-vs-ANN error at small T against the pipeline without it, on the
trained MNIST CNN (a small net) with real digits: a test that fails if the technique does nothing.
"""
from __future__ import annotations

import pytest
import torch

import snncompile
from snncompile.errors import ConfigError
from snncompile.models import get_model
from snncompile.models.data import mnist_split
from snncompile.neurons import NeuronSpec, neuron_reference
from snncompile.passes._threshold_search import mse_scale
from snncompile.simulate import if_rate
from snncompile.pipeline import PassContext, get_pass
from snncompile.simulate import Simulator
from snncompile.stats import ActivationStats



@pytest.fixture(scope="module")
def mnist():
    torch.manual_seed(0)
    x_tr, _, x_te, y_te = mnist_split()
    model = get_model("mnist_cnn", pretrained=True)
    with torch.no_grad():
        logits = model(x_te[:300])
    return model, x_tr[:512], x_te[:300], logits


def _error(snn, x, logits, T) -> float:
    """Mean absolute logit error of the SNN at T steps, relative to the ANN's mean |logit|."""
    with torch.no_grad():
        out = snn(x, T=T)
    return float((out - logits).abs().mean() / logits.abs().mean())


def _compile(model, calib, T, **kw):
    return snncompile.compile(model, calib, T=T, backend="cpu", **kw)


# ---- the formula the threshold search trusts ------------------------------------------------

@pytest.mark.parametrize("T,v_init", [(1, 0.5), (2, 0.5), (4, 0.0), (5, 0.5), (8, 0.25)])
def test_if_rate_is_the_if_neurons_rate_for_a_constant_input(T, v_init):
    z = torch.linspace(-0.2, 1.3, 301).reshape(1, -1) + 1.234e-4  # (off the ties, where float sums may round)
    spikes, _ = neuron_reference(z, 1.0, NeuronSpec("if", v_init=v_init, input_kind="static"), T=T)
    assert torch.equal(spikes.sum(0).reshape(-1), (T * if_rate(z, T, v_init)).round().reshape(-1))


def test_mse_scale_beats_the_percentile_and_the_max_on_the_error_it_minimises():
    g = torch.Generator().manual_seed(1)
    a = torch.distributions.Exponential(4.0).sample((20000, 3))  # long-tailed, as after a ReLU
    a[torch.rand(a.shape, generator=g) < 0.5] = 0.0
    st = ActivationStats()
    st.update(a)

    def err(lam, T):
        return float(((a - lam * if_rate(a / lam, T, 0.5)) ** 2).mean())

    for T in (2, 4):
        lam = mse_scale(st, T, 0.5, channelwise=False)
        assert err(lam, T) < err(st.percentile(99.9), T) and err(lam, T) < err(st.max(), T)
        assert lam < st.percentile(99.9)  # fewer levels: a smaller range pays
    lam_c = mse_scale(st, 4, 0.5, channelwise=True)
    assert lam_c.shape == (3,) and bool((lam_c > 0).all())


def test_mse_keeps_the_percentile_behind_a_max_pool():
    """Behind a max pool the next layer reads the window maxima, which a λ fitted to all values
    clips (measured on the VGG-style nets): there mode "mse" keeps the percentile. (A pool on a
    static current before the first neuron is swapped before its ReLU: not behind it.)"""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(100, 3))
    x = torch.rand(64, 1, 14, 14)

    def scales(normalize):
        g = snncompile.compile(net, x, T=2, normalize=normalize, calibrate="none").pipeline.before_lowering
        return [n.meta["act_scale"] for n in g.nodes if n.op == "neuron"]

    (first_p, pooled_p), (first_m, pooled_m) = scales("percentile"), scales("mse")
    assert torch.equal(pooled_p, pooled_m) and not torch.allclose(first_p, first_m)


# ---- the simulator ----------------------------------------------------------------------------

def test_simulator_runs_the_snn_as_the_runtime_does_and_its_rate_domain_is_the_ann(mnist):
    model, calib, x, logits = mnist
    snn = _compile(model, calib, 4, normalize="percentile", calibrate="none")
    graph = snn.pipeline.before_lowering
    with torch.no_grad():
        seq = Simulator(graph, 4, backend="cpu")(x[:64])
        ref = snn(x[:64], T=4, return_all_steps=True)[-1]
        ann = Simulator(graph, 4, rate_domain=True)(x[:64])[0]
    assert torch.allclose(seq.mean(0), ref, atol=1e-5)
    assert torch.allclose(ann, logits[:64], atol=1e-4)


def test_simulator_stops_after_the_nodes_asked_for(mnist):
    model, calib, x, _ = mnist
    graph = _compile(model, calib, 2, normalize="percentile", calibrate="none").pipeline.before_lowering
    first = next(n for n in graph.nodes if n.op == "neuron")
    seen = []
    out = Simulator(graph, 2).run(x[:4], observer=lambda n, v: seen.append(n.op), stop_after=[first])
    assert out is None and seen[-1] == "neuron" and "readout" not in seen


# ---- each technique lowers the error at small T ----------------------------------------------

@pytest.mark.parametrize("T", [2, 4])
def test_thresholds_chosen_for_T_lower_the_error(mnist, T):
    model, calib, x, logits = mnist
    base = _error(_compile(model, calib, T, normalize="percentile", calibrate="none"), x, logits, T)
    mse = _error(_compile(model, calib, T, normalize="mse", calibrate="none"), x, logits, T)
    assert mse < 0.9 * base, (mse, base)


@pytest.mark.parametrize("what", ["bias", "potential", "both"])
def test_bias_and_potential_calibration_lower_the_error(mnist, what):
    model, calib, x, logits = mnist
    T = 2
    base = _error(_compile(model, calib, T, normalize="mse", calibrate="none"), x, logits, T)
    snn = _compile(model, calib, T, normalize="mse", calibrate=what)
    assert _error(snn, x, logits, T) < 0.8 * base
    notes = [n.meta.get("calibration") for n in snn.pipeline.before_lowering.nodes if n.op == "neuron"]
    assert all(notes) and ("v_init" in notes[0] if what == "potential" else "bias of" in notes[0])


def test_bias_calibration_brings_each_layers_mean_rate_to_the_anns(mnist):
    model, calib, x, _ = mnist
    T = 2

    def channel_rates(graph, rate_domain):
        """Per neuron layer (in order), each channel's mean value on the held-out digits."""
        out = []

        def obs(n, v):
            if n.op == "neuron":
                v = v.clamp(max=1) if rate_domain else v  # (the SNN saturates at one spike a step)
                out.append(v.transpose(0, 1).reshape(v.shape[1], -1).mean(1))
        with torch.no_grad():
            Simulator(graph, T, rate_domain=rate_domain).run(x, observer=obs)
        return out

    plain = _compile(model, calib, T, normalize="mse", calibrate="none").pipeline.before_lowering
    calibrated = _compile(model, calib, T, normalize="mse", calibrate="bias").pipeline.before_lowering
    ann = channel_rates(plain, True)  # the ANN, in the units of the neurons
    before = [float((a - s).abs().mean()) for a, s in zip(ann, channel_rates(plain, False))]
    after = [float((a - s).abs().mean()) for a, s in zip(ann, channel_rates(calibrated, False))]
    # measured (T=2, 300 held-out digits): [0.034, 0.035, 0.080] -> [0.030, 0.024, 0.019]
    assert all(a < b for a, b in zip(after, before)) and sum(after) < 0.7 * sum(before), (before, after)


def test_multi_spike_neurons_with_thresholds_for_them_lower_the_error_at_one_step(mnist):
    model, calib, x, logits = mnist
    plain = _error(_compile(model, calib, 1), x, logits, 1)
    snn = _compile(model, calib, 1, max_spikes=4)
    assert "max_spikes=4" in str(snn.pipeline) and _error(snn, x, logits, 1) < 0.7 * plain


# ---- the automatic choice -----------------------------------------------------------------------

def test_compile_chooses_the_few_step_passes_by_itself_and_prints_them(mnist):
    model, calib, _, _ = mnist
    few = str(_compile(model, calib, 4).pipeline)
    many = str(_compile(model, calib, 32).pipeline)
    assert "normalize{mode=mse" in few and "T=4" in few and "calibrate-bias{T=4}" in few
    assert "calibrate-bias" not in many and "mode=mse" not in many
    assert snncompile.few_step_choice(4) == {"mode": "mse", "calibrate": "bias"}
    assert snncompile.few_step_choice(snncompile.FEW_STEPS + 1)["calibrate"] == "none"


def test_calibration_with_poisson_inputs_is_deterministic_and_leaves_the_global_rng_alone(mnist):
    model, calib, _, _ = mnist
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a = _compile(model, calib[:128], 4, encoding="poisson")
    assert torch.equal(torch.get_rng_state(), before)
    b = _compile(model, calib[:128], 4, encoding="poisson")
    assert "calibrate-bias" in str(a.pipeline)
    for x, y in zip(a.graph.nodes, b.graph.nodes):
        assert all(torch.equal(x.params[k], y.params[k]) for k in x.params)


def test_bad_options_are_named():
    with pytest.raises(ConfigError, match="calibrate must be one of"):
        snncompile.conversion_pipeline(calibrate="yes")
    with pytest.raises(ConfigError, match="give T="):
        snncompile.conversion_pipeline(mode="auto")
    with pytest.raises(ConfigError, match="what must be"):
        get_pass("calibrate-bias", what="weights")(snncompile.ir.Graph(), PassContext(T=4))


def test_calibrate_bias_after_lowering_names_the_fused_layer_and_what_to_do(mnist):
    model, calib, _, _ = mnist
    pipe = snncompile.conversion_pipeline().insert_after("fuse-neuron-sumpool", "calibrate-bias{T=2}")
    with pytest.raises(ConfigError, match=r"calibrate-bias: node %\d+ \w+ \(network\.\d+, mnist_cnn\.py:\d+\) is already lowered.*put "
                                          r"calibrate-bias before hoist-static"):
        snncompile.compile(model, calib, T=2, pipeline=pipe)


def test_calibrate_bias_refuses_a_graph_that_does_not_spike_yet(mnist):
    model, calib, _, _ = mnist
    graph = snncompile.trace(model, calib[:2])
    with pytest.raises(ConfigError, match="no encode-input yet; run it after relu-to-if, encode-input and readout"):
        get_pass("calibrate-bias")(graph, PassContext(calibration_data=calib, T=4))
