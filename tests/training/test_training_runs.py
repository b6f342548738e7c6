"""Short end-to-end runs: direct training makes the loss fall, the hybrid (convert, then fine-tune
with surrogates) starts from the converted SNN exactly, and sequence inputs are checked and chunked
without changing the result."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import snncompile
from snncompile.errors import ConfigError
from snncompile.layers import LIF, LinearRecurrent, SynapseFilter
from snncompile.losses import ce_rate_loss

sklearn_datasets = pytest.importorskip("sklearn.datasets")


@pytest.fixture(scope="module")
def digits():
    """The first 256 8x8 digits, scaled to [0, 1], as [N, 1, 8, 8] and labels [N]."""
    d = sklearn_datasets.load_digits()
    x = torch.tensor(d.data[:256] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(d.target[:256], dtype=torch.long)
    return x, y


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def _batches(n, steps, batch, seed):
    g = torch.Generator().manual_seed(seed)
    per_epoch = n // batch
    for step in range(steps):
        if step % per_epoch == 0:
            perm = torch.randperm(n, generator=g)
        k = step % per_epoch
        yield perm[k * batch:(k + 1) * batch]


def _train(snn, x, y, loss_fn, steps=40, lr=1e-2):
    """``steps`` Adam steps on batches of 64 (fixed order); the loss of every step."""
    opt = torch.optim.Adam(snn.parameters(), lr=lr)
    losses = []
    for idx in _batches(len(x), steps, 64, seed=0):
        loss = loss_fn(snn.run_sequence(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_direct_training_loss_falls(digits):
    """40 Adam steps of surrogate-gradient BPTT (T=4, LIF, atan): the mean loss of the last 5
    steps is under half the first step's, and train accuracy ends above 80%."""
    x, y = digits
    torch.manual_seed(0)
    snn = snncompile.to_trainable(_mlp(), T=4, neuron="lif", surrogate="atan", example_input=torch.zeros(2, 1, 8, 8))
    losses = _train(snn, x, y, ce_rate_loss)
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses
    snn.eval()
    with torch.no_grad():
        acc = (snn(x).argmax(1) == y).float().mean().item()
    assert acc > 0.8


def test_poisson_encoded_training_loss_falls(digits):
    """Poisson input (fresh Bernoulli spikes every step and call, no gradient into the input) with
    IF neurons and a spiking output layer trained on spike counts (mse_count_loss): the loss falls
    and accuracy by spike count beats chance by far."""
    from snncompile.losses import accuracy_by_count, mse_count_loss
    x, y = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10),
                          LIF(beta=0.9, surrogate="fast_sigmoid"))
    snn = snncompile.to_trainable(model, T=8, neuron="if", surrogate="atan", encoding="poisson",
                                  example_input=torch.zeros(2, 1, 8, 8))
    assert [e.attrs["method"] for e in snn.graph.find("encode")] == ["poisson"]
    losses = _train(snn, x, y, mse_count_loss)
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0], losses
    with torch.no_grad():
        assert accuracy_by_count(snn.eval().run_sequence(x), y) > 0.5


@pytest.fixture(scope="module")
def converted(digits):
    """A digits MLP trained as an ANN (100 quick Adam steps), converted with compile(T=4)."""
    x, y = digits
    torch.manual_seed(1)
    ann = _mlp()
    opt = torch.optim.Adam(ann.parameters(), lr=1e-2)
    for idx in _batches(len(x), 100, 64, seed=1):
        loss = nn.functional.cross_entropy(ann(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return snncompile.compile(ann, x[:64], T=4)


def _snapshot(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_hybrid_starts_exactly_from_the_converted_snn(converted, digits):
    """to_trainable(converted SNN): before any step its output equals the SNN's (eval mode), its
    neurons (still IF) carry a surrogate, gradients reach the weights, and training it leaves the
    converted SNN untouched."""
    x, y = digits
    snn = converted.eval()
    before = _snapshot(snn)
    with torch.no_grad():
        out0 = snn(x)
    tuned = snncompile.to_trainable(snn, T=4)
    assert tuned is not snn and tuned.training
    tuned.eval()
    with torch.no_grad():
        assert torch.equal(tuned(x), out0)
    assert all(n.spec.surrogate is None for n in snn.neurons().values())
    specs = [n.spec for n in tuned.neurons().values()]
    assert specs and all(s.surrogate == "atan" and s.kind == "if" for s in specs)
    # the conversion's choices stay: v_init 0.5, the thresholds
    assert all(s.v_init == 0.5 for s in specs)

    tuned.train()
    opt = torch.optim.Adam(tuned.parameters(), lr=1e-2)
    for step in range(3):
        loss = ce_rate_loss(tuned.run_sequence(x[:64]), y[:64])
        opt.zero_grad()
        loss.backward()
        if step == 0:
            weights = [p for p in tuned.parameters() if p.dim() == 2]
            assert len(weights) == 2
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)
        opt.step()
    after = _snapshot(snn)
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert torch.equal(snn.eval()(x), out0)
        tuned.eval()
        assert not torch.equal(tuned(x), out0)   # tuned did move
        # to_trainable of a tuned SNN starts from its current (tuned) weights
        again = snncompile.to_trainable(tuned, T=4).eval()
        assert torch.equal(again(x), tuned(x))


# ---------------------------------------------------------------------------------------------
# sequence inputs
# ---------------------------------------------------------------------------------------------

def _seq_snn(readout="mean"):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), SynapseFilter(tau=4.0), LinearRecurrent(4, LIF(beta=0.5)), nn.Linear(4, 2))
    return snncompile.to_trainable(model, T=5, encoding="sequence", readout=readout, example_input=torch.zeros(2, 3))


def test_sequence_input_rejects_a_mismatched_T():
    """A sequence SNN runs x.shape[0] steps; an explicit T that disagrees is a ConfigError."""
    snn = _seq_snn()
    x = torch.randn(5, 2, 3)
    with pytest.raises(ConfigError, match="T=4"):
        snn.run_sequence(x, T=4)
    with pytest.raises(ConfigError):
        snn(x, T=4)
    assert snn.run_sequence(x, T=5).shape == (5, 2, 2)
    assert snn.run_sequence(torch.randn(3, 2, 3)).shape == (3, 2, 2)   # T follows the input


def test_sequence_input_without_time_axis_is_a_config_error():
    """A sequence SNN built for steps [N, 3] given one step [N, 3] (no T axis): ConfigError
    asking for [T, N, ...], as run_sequence's own check promises."""
    snn = _seq_snn()
    with pytest.raises(ConfigError, match=r"\[T, N"):
        snn.run_sequence(torch.randn(2, 3))


@pytest.mark.parametrize("readout", ["mean", "last"])
def test_chunked_run_equals_unchunked(readout):
    """In eval mode with max_chunk_bytes tiny the batch runs one sample a chunk (states reset
    between chunks): outputs and gradients equal the unchunked run. In train mode with autograd
    on, the batch runs whole (batch statistics must be the batch's)."""
    snn = _seq_snn(readout).eval()
    torch.manual_seed(3)
    x = torch.randn(5, 6, 3) * 2.0
    c = torch.randn(5, 6, 2)

    def run():
        snn.zero_grad()
        seq = snn.run_sequence(x)
        (seq * c).sum().backward()
        return seq.detach(), [p.grad.clone() for p in snn.parameters()], snn(x).detach()

    seq_full, g_full, out_full = run()
    calls = []
    hook = snn.module.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[1]))
    try:
        snn.max_chunk_bytes = x.shape[0] * snn._per_sample * x.element_size()  # one sample's T steps fit
        seq_chunk, g_chunk, out_chunk = run()
        assert calls and set(calls) == {1} and len(calls) == 2 * 6   # really chunked: 6 chunks a run
        calls.clear()
        snn.train()
        snn.run_sequence(x)
        assert calls == [6]  # training: one whole batch despite max_chunk_bytes
    finally:
        hook.remove()
    torch.testing.assert_close(seq_chunk, seq_full, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_chunk, out_full, atol=1e-5, rtol=0)
    assert out_full.shape == (6, 2)
    for a, b in zip(g_chunk, g_full):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_streaming_step_equals_the_whole_sequence():
    """step(x_t) one step at a time (state kept between calls) gives the running mean readout
    that snn(x, return_all_steps=True) gives for the whole sequence."""
    snn = _seq_snn().eval()
    torch.manual_seed(4)
    x = torch.randn(5, 3, 3) * 2.0
    with torch.no_grad():
        full = snn(x, return_all_steps=True)
        snn.reset()
        steps = torch.stack([snn.step(x[t]) for t in range(5)])
    assert full.shape == (5, 3, 2)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=0)


def test_dropout_in_a_trainable_snn_shares_its_mask_over_time():
    """Dropout stays in the training graph; in train mode a dropped unit is dropped at every one
    of the T steps (one mask per sample), kept units are scaled by 1/(1-p); eval mode is identity."""
    model = nn.Sequential(nn.Linear(5, 200), nn.ReLU(), nn.Dropout(0.5), nn.Linear(200, 3))
    snn = snncompile.to_trainable(model, T=4, example_input=torch.zeros(2, 5), backend="torch")
    assert len(snn.graph.find("dropout")) == 1
    (drop,) = [m for m in snn.module.modules() if type(m).__name__ == "TimeSharedDropout"]
    x = torch.rand(8, 200)  # [T*N] with T=4, N=2
    torch.manual_seed(0)
    y = drop(x, 4).reshape(4, 2, 200)
    kept = (y != 0)
    assert torch.equal(kept, kept[:1].expand_as(kept))  # the same units at every step
    assert 0.3 < kept[0].float().mean() < 0.7
    torch.testing.assert_close(y[kept], (x.reshape(4, 2, 200) * 2.0)[kept])
    drop.eval()
    assert torch.equal(drop(x, 4), x)


def test_conv_model_on_a_sequence_input_equals_its_step_by_step_run():
    """A conv net with a LIF layer reading a [T, N, C, H, W] sequence (e.g. event frames): the
    runtime (T folded into the batch for conv/BN/pool) equals the user's model run one step at a
    time in plain PyTorch, and gradients reach the conv weights."""
    from snncompile.layers import reset_states
    torch.manual_seed(6)
    m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), LIF(tau=2.0, threshold=0.3),
                      nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    snn = snncompile.to_trainable(m, T=6, encoding="sequence", example_input=torch.zeros(2, 2, 8, 8)).eval()
    x = torch.rand(6, 5, 2, 8, 8) * 2.0
    with torch.no_grad():
        reset_states(m)
        ref = torch.stack([m(x[t]) for t in range(6)])
        out = snn.run_sequence(x)
        spikes = snn.firing_rates(x)
    assert 0.05 < next(iter(spikes.values())) < 0.95
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    snn.train()
    snn.run_sequence(x).sum().backward()
    conv_w = next(p for n, p in snn.named_parameters() if p.dim() == 4)
    assert conv_w.grad is not None and conv_w.grad.abs().sum() > 0


def test_to_trainable_errors_say_what_to_do():
    """A conv model with no input_shape is built at its first call: until then what needs the
    graph asks for a batch or example_input; a bad encoding or readout names the choices (for a
    lazily built SNN too); a non-module is refused."""
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    with pytest.raises(ConfigError, match="example_input="):
        snncompile.to_trainable(conv, T=2).graph
    with pytest.raises(ConfigError, match="'direct', 'poisson' or 'sequence'"):
        snncompile.to_trainable(conv, T=2, encoding="rate")
    mlp = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))  # first Linear: shape inferred
    assert snncompile.to_trainable(mlp, T=2).graph.inputs[0].shape == (None, 4)
    with pytest.raises(ConfigError, match="'direct', 'poisson' or 'sequence'"):
        snncompile.to_trainable(mlp, T=2, encoding="rate")
    with pytest.raises(ConfigError, match="'mean' or 'last'"):
        snncompile.to_trainable(mlp, T=2, readout="max")
    with pytest.raises(ConfigError, match="torch.nn.Module"):
        snncompile.to_trainable(lambda x: x, T=2)


def test_wrong_input_shapes_are_config_errors_that_say_what_to_do():
    """An SNN given samples of another shape than it was traced with, and a LinearRecurrent fed
    the wrong width, fail with messages naming the shapes and the fix (not torch's mat1/mat2)."""
    m = nn.Sequential(nn.Linear(3, 8), LinearRecurrent(8, LIF(beta=0.5)), nn.Linear(8, 2))
    snn = snncompile.to_trainable(m, T=3, encoding="sequence", example_input=torch.zeros(2, 3))
    with pytest.raises(ConfigError, match=r"traced for inputs \[T, N, 3\] but got \[3, 2, 5\]"):
        snn.run_sequence(torch.zeros(3, 2, 5))
    with pytest.raises(ConfigError, match=r"traced for inputs"):
        snn.step(torch.zeros(2, 5))
    img = snncompile.to_trainable(_mlp(), T=2, example_input=torch.zeros(2, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"traced for inputs \[N, 1, 8, 8\]"):
        img(torch.zeros(4, 1, 28, 28))
    bad = nn.Sequential(nn.Linear(3, 6), LinearRecurrent(8, LIF(beta=0.5)), nn.Linear(8, 2))
    with pytest.raises(snncompile.errors.TraceError, match=r"LinearRecurrent\(8\) takes \[N, 8\] inputs, got \[2, 6\]"):
        snncompile.to_trainable(bad, T=3, encoding="sequence", example_input=torch.zeros(2, 3))
