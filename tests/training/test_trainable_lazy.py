"""to_trainable without example_input for a model whose input shape cannot be inferred (the call
SpikingJelly/snnTorch users write): a LazySpikingModule whose parameters feed an optimizer at
once, which is traced at its first call and from then on is the SpikingModule the eager path
builds, training the very tensors the optimizer holds."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import snncompile
from snncompile.errors import ConfigError
from snncompile.runtime import SpikingModule
from snncompile.trainable import LazySpikingModule


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 8, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))


def _x(n=16, seed=1):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _lazy(model=None, **kw):
    kw = {"T": 4, "neuron": "lif", "surrogate": "atan", "backend": "torch"} | kw
    return snncompile.to_trainable(model or _cnn(), **kw)


def test_optimizer_made_before_the_first_call_trains_the_snn():
    """Adam on snn.parameters() right after to_trainable; three steps on one batch: the loss
    falls, every SNN parameter is one the optimizer holds, the parameters changed, and the SNN
    computes what an eager SNN given the same state computes."""
    x, y = _x(), torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(2))
    snn = _lazy()
    assert isinstance(snn, LazySpikingModule)
    opt = torch.optim.Adam(snn.parameters(), lr=3e-2)
    start = {n[len("model."):]: p.detach().clone() for n, p in snn.named_parameters()}
    losses = []
    for _ in range(3):
        loss = snncompile.losses.ce_rate_loss(snn.run_sequence(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert type(snn) is SpikingModule
    assert losses[2] < losses[0], losses
    held = {id(p) for group in opt.param_groups for p in group["params"]}
    assert all(id(p) in held for p in snn.parameters()) and len(list(snn.parameters())) == len(start)
    eager = _lazy(example_input=x[:2])
    assert list(eager.state_dict()) == list(snn.state_dict())
    before = {k: v.detach().clone() for k, v in eager.state_dict().items()}
    eager.load_state_dict(snn.state_dict())
    changed = [k for k, v in eager.state_dict().items() if not torch.equal(v, before[k])]
    # (the last layer's weight has no gradient here: its LIF layer does not spike yet at T=4)
    assert {"module._0_weight", "module._4_weight", "module._7_bias", "module._1.weight"} <= set(changed)
    snn.eval(), eager.eval()
    with torch.no_grad():
        assert torch.equal(snn(x), eager(x))


def test_first_call_gives_the_eager_snn():
    """Before any training the lazy SNN's output is the eager SNN's, in both modes."""
    x = _x(8)
    lazy, eager = _lazy().eval(), _lazy(example_input=x[:2]).eval()
    with torch.no_grad():
        assert torch.equal(lazy(x), eager(x))
    lazy.train(), eager.train()
    assert torch.equal(lazy.run_sequence(x), eager.run_sequence(x))


def test_mode_device_and_state_before_the_first_call():
    model = _cnn()
    original = copy.deepcopy(model.state_dict())
    snn = _lazy(model)
    assert snn.eval() is snn and not snn.training and not snn.model.training
    assert snn.to("cpu") is snn and all(p.device.type == "cpu" for p in snn.parameters())
    assert {k[len("model."):] for k in snn.state_dict()} == set(model.state_dict())
    zeros = {"model." + k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    snn.load_state_dict(zeros)  # the model's state loads into the copy, and the SNN is built from it
    with pytest.raises(ConfigError, match="not built yet.*run a batch through it first"):
        snn.load_state_dict(_lazy(example_input=_x(2)).state_dict())
    out = snn(_x(4))
    assert not snn.training  # built in the mode it was put in
    assert torch.equal(out, torch.zeros_like(out))
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())  # the user's model untouched
    with pytest.raises(ConfigError, match=r"input 'input' is on meta but the model's parameters are on cpu"):
        _lazy()(torch.empty(2, 1, 8, 8, device="meta"))


@pytest.mark.parametrize("what", ["graph", "pipeline", "code", "save", "neurons"])
def test_what_needs_the_graph_asks_for_a_call_or_example_input(what, tmp_path):
    snn = _lazy()
    with pytest.raises(ConfigError, match=r"first call.*example_input="):
        if what == "save":
            snn.save(tmp_path / "a.snn")
        elif what == "neurons":
            snn.neurons()
        else:
            getattr(snn, what)
    with pytest.raises(ConfigError, match="not built yet"):
        snncompile.to_trainable(snn, T=4)
    snn(_x(2))
    assert snn.graph.inputs[0].shape == (None, 1, 8, 8) and "neuron" in str(snn.graph)


def test_bad_options_are_refused_at_once_and_learnable_thresholds_need_an_example():
    with pytest.raises(ConfigError, match="neuron must be"):
        _lazy(neuron="hh")
    with pytest.raises(ConfigError, match="'mean' or 'last'"):
        _lazy(readout="max")
    with pytest.raises(ConfigError, match="learn_threshold/learn_leak.*example_input="):
        _lazy(learn_threshold=True)
    assert isinstance(_lazy(learn_threshold=True, example_input=_x(2)), SpikingModule)


def test_hooks_copies_and_inferred_shapes():
    """A forward hook registered before the first call still runs after it; a deep copy builds
    on its own; a model whose shape is inferred (a first Linear) is built eagerly as before."""
    snn, seen = _lazy(), []
    snn.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    twin = copy.deepcopy(snn)
    snn(_x(3))
    snn(_x(5))
    assert seen == [(3, 3), (5, 3)]
    assert isinstance(twin, LazySpikingModule) and twin(_x(2)).shape == (2, 3)
    assert not any(p is q for p in twin.parameters() for q in snn.parameters())
    mlp = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert type(snncompile.to_trainable(mlp, T=2)) is SpikingModule


def test_sequence_encoding_traces_one_step():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    x = torch.rand(5, 4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    lazy = _lazy(model, encoding="sequence")
    eager = _lazy(model, encoding="sequence", example_input=x[0])
    out = lazy.run_sequence(x)
    assert out.shape == (5, 4, 3) and torch.equal(out, eager.run_sequence(x))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.vec = nn.Conv2d(1, 2, 3), nn.Linear(5, 72)
        self.out = nn.Linear(72, 3)

    def forward(self, img, vec):
        return self.out(torch.relu(torch.flatten(self.conv(img), 1)) + torch.relu(self.vec(vec)))


def test_two_input_model_is_built_at_its_first_call():
    torch.manual_seed(0)
    snn = _lazy(TwoInputs())
    assert isinstance(snn, LazySpikingModule)
    img, vec = _x(6), torch.rand(6, 5)
    with pytest.raises(ConfigError, match=r"forward takes 2 input\(s\) \(img, vec\).*got 1"):
        snn(img)
    opt = torch.optim.SGD(snn.parameters(), lr=0.1)
    snncompile.losses.ce_rate_loss(snn.run_sequence(img, vec), torch.zeros(6, dtype=torch.long)).backward()
    grads = {n: p.grad for n, p in snn.named_parameters()}
    for branch in ("conv_weight", "vec_weight"):
        g = next(v for k, v in grads.items() if k.endswith(branch))
        assert g is not None and g.abs().sum() > 0, branch
    w = snn.module.vec_weight.detach().clone()
    opt.step()
    assert not torch.equal(w, snn.module.vec_weight)  # the optimizer's tensor is the SNN's
