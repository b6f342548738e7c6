"""The insert-surrogate pass, seen through to_trainable: its printed stage, its options and errors,
that it leaves neurons from snncompile.layers alone, and that the user's model is never touched."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import snncompile
from snncompile.errors import ConfigError, UnsupportedOpError
from snncompile.ir import Graph
from snncompile.layers import IF, LIF, LinearRecurrent


def _cnn():
    torch.manual_seed(0)
    # 8x8 -> conv3 -> 6x6 -> avgpool2 -> 3x3, 4 channels: 36 features
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 3 * 3, 10))


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def _trainable(model, **kw):
    kw.setdefault("example_input", torch.zeros(2, 3))
    return snncompile.to_trainable(model, T=2, backend="torch", **kw)


def _normalised(text: str) -> list[str]:
    """Each printed line without its '# module-path file:line' comment, but with the shape kept."""
    out = []
    for line in text.splitlines():
        body, _, comment = line.partition("#")
        out.append(f"{body.rstrip()}  {comment.split()[-1]}")
    return out


# Worked out from the model: the ReLU (module 2) becomes a LIF neuron with threshold 1 and the
# atan surrogate; tau=2 / spikingjelly form / v_init 0 / subtract reset are the lif family's defaults
# and so are not printed (the family is, first); BN is neither folded nor removed (its weights are
# trained); no encode or readout yet (those passes come later).
EXPECTED_INSERT_SURROGATE = """\
%0 = input()  [N,1,8,8]
%1 = conv2d(%0) weight=f32[4,1,3,3] bias=f32[4] stride=1 padding=0  [N,4,6,6]
%2 = batchnorm(%1) running_mean=f32[4] running_var=f32[4] weight=f32[4] bias=f32[4]  [N,4,6,6]
%3 = neuron(%2) family=lif threshold=1 surrogate=atan  [N,4,6,6]
%4 = avgpool2d(%3) kernel_size=2 stride=2 padding=0  [N,4,3,3]
%5 = flatten(%4)  [N,36]
%6 = linear(%5) weight=f32[10,36] bias=f32[10]  [N,10]
%7 = output(%6)  [N,10]"""


def test_insert_surrogate_stage_golden_text():
    """The graph after insert-surrogate, printed, line by line (source locations stripped)."""
    snn = snncompile.to_trainable(_cnn(), T=2, neuron="lif", surrogate="atan",
                                  example_input=torch.zeros(2, 1, 8, 8), backend="torch")
    got = _normalised(str(snn.pipeline.stage("insert-surrogate")))
    assert got == EXPECTED_INSERT_SURROGATE.splitlines()
    # the lif node's hidden attributes are the ones the comment above claims
    (n,) = snn.pipeline.stage("insert-surrogate").find("neuron")
    assert n.attrs["family"] == "lif"
    assert n.attrs["tau"] == 2.0 and n.attrs["form"] == "spikingjelly" and n.attrs["v_init"] == 0.0
    assert n.attrs["reset"] == "subtract" and n.attrs["detach_reset"] is False
    # the stage before still has the ReLU
    assert [m.op for m in snn.pipeline.stage("canonicalize").nodes].count("relu") == 1


def test_if_variant_and_snntorch_form():
    """neuron='if' makes neurons of family if with the surrogate; beta=0.9 selects the snnTorch form."""
    g = _trainable(_mlp(), neuron="if", surrogate="triangle").pipeline.stage("insert-surrogate")
    assert not g.find("relu") and not [n for n in g.find("neuron") if n.attrs["family"] == "lif"]
    (n,) = g.find("neuron")
    assert n.attrs["family"] == "if" and "form" not in n.attrs and "tau" not in n.attrs
    assert n.attrs["surrogate"] == "triangle"
    assert float(n.params["threshold"]) == 1.0

    g = _trainable(_mlp(), neuron="lif", beta=0.9).pipeline.stage("insert-surrogate")
    (n,) = g.find("neuron")
    assert n.attrs["family"] == "lif"
    assert n.attrs["form"] == "snntorch" and n.attrs["beta"] == 0.9 and n.attrs["surrogate"] == "atan"


def test_pass_options_reach_the_runtime_neuron():
    """threshold / alpha / detach_reset / tau given to to_trainable end up in the runtime spec."""
    snn = _trainable(_mlp(), neuron="lif", tau=4.0, threshold=0.5, alpha=3.0, detach_reset=True,
                     surrogate="sigmoid")
    (neuron,) = snn.neurons().values()
    s = neuron.spec
    assert (s.kind, s.form, s.tau, s.surrogate, s.alpha, s.detach_reset) == \
        ("lif", "spikingjelly", 4.0, "sigmoid", 3.0, True)
    assert float(neuron.threshold) == 0.5


@pytest.mark.parametrize("kw,match", [
    (dict(neuron="izh"), r"neuron must be a neuron family \(if, lif, signed_if, multi_if\), got 'izh'"),
    (dict(surrogate="nope"), r"nope.*atan"),
    (dict(neuron="if", learn_leak=True), r"learn_leak"),
    (dict(neuron="lif", tau=1.0), r"tau"),
    (dict(neuron="lif", beta=1.5), r"beta"),
    (dict(threshold=0.0), r"threshold"),
])
def test_bad_options_raise_config_error(kw, match):
    """Bad neuron kind, unknown surrogate (the message lists the known ones), learn_leak on IF,
    out-of-range tau / beta / threshold: ConfigError with a telling message."""
    with pytest.raises(ConfigError, match=match):
        _trainable(_mlp(), **kw)


def test_gelu_is_refused_naming_it():
    """A GELU cannot become a spiking neuron: UnsupportedOpError naming GELU, suggesting ReLU."""
    model = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedOpError) as e:
        _trainable(model)
    msg = str(e.value)
    assert "GELU" in msg and "ReLU" in msg and "insert-surrogate" in msg


@pytest.mark.parametrize("act", [nn.ReLU6(), nn.Hardtanh(0.0, 1.0)], ids=["ReLU6", "Hardtanh01"])
def test_capped_relu_becomes_a_neuron(act):
    """A ReLU with a ceiling (a clamp with floor 0) becomes one spiking neuron, as the pass's
    docstring says (the ceiling is not kept: a neuron's rate is bounded anyway); it is neither
    refused nor left in the trained SNN as a plain (non-spiking) clamp."""
    model = nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 2))
    snn = _trainable(model)
    g = snn.pipeline.stage("insert-surrogate")
    assert [n.op for n in g.nodes] == ["input", "linear", "neuron", "linear", "output"]
    assert not snn.graph.find("clamp")
    assert len(snn.neurons()) == 1


def test_layer_neurons_keep_their_own_surrogate():
    """Neurons from snncompile.layers keep the surrogate (and alpha) they were given, also inside
    a recurrent body; a layer neuron without one gets the pass's; ReLUs get the pass's."""
    model = nn.Sequential(
        nn.Linear(4, 4), LIF(tau=2.0, surrogate="sigmoid", alpha=3.0),
        nn.Linear(4, 4), nn.ReLU(),
        LinearRecurrent(4, LIF(beta=0.5, surrogate="triangle")),
        nn.Linear(4, 4), IF(surrogate=None),
        nn.Linear(4, 2))
    snn = snncompile.to_trainable(model, T=2, surrogate="atan", example_input=torch.zeros(2, 4), backend="torch")
    specs = [n.spec for n in snn.neurons().values()]
    got = sorted((s.kind, s.form if s.kind == "lif" else "-", s.surrogate, s.alpha) for s in specs)
    assert got == sorted([("lif", "spikingjelly", "sigmoid", 3.0),     # layer: kept
                          ("lif", "spikingjelly", "atan", None),       # the ReLU
                          ("lif", "snntorch", "triangle", None),       # in the recurrent body: kept
                          ("if", "-", "atan", None)])                  # layer without one: filled in
    body = snn.pipeline.stage("insert-surrogate").find("recurrent")[0].attrs["body"]
    assert isinstance(body, Graph)
    assert [n for n in body.find("neuron") if n.attrs["family"] == "lif"][0].attrs["surrogate"] == "triangle"


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("build", [_cnn, lambda: nn.Sequential(nn.Linear(3, 4), LIF(tau=2.0, learn_threshold=True,
                                                                                    learn_leak=True),
                                                               LinearRecurrent(4, LIF(beta=0.5)), nn.Linear(4, 2))],
                         ids=["cnn-bn", "layers"])
def test_to_trainable_never_mutates_the_model(build):
    """to_trainable, then training the SNN a step, leaves the user's model (incl. BN statistics
    and learnable neuron parameters) exactly as it was."""
    model = build()
    model.train()
    before = _state(model)
    x = torch.randn(4, 1, 8, 8) if isinstance(model[0], nn.Conv2d) else torch.randn(4, 3)
    snn = snncompile.to_trainable(model, T=2, example_input=x[:2], backend="torch")
    snn_before = [p.detach().clone() for p in snn.parameters()]
    opt = torch.optim.SGD(snn.parameters(), lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        (snn.run_sequence(x) ** 2).mean().backward()
        opt.step()
    after = _state(model)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), f"model's {k} changed"
    assert model.training
    # the SNN itself did train (else the check above would pass trivially)
    assert any(not torch.equal(p.detach(), b) for p, b in zip(snn.parameters(), snn_before))
