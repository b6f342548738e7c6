"""Losses and metrics of snncompile.losses on small hand-made output sequences [T, N, C]."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from snncompile.errors import ConfigError
from snncompile.losses import accuracy_by_count, ce_count_loss, ce_rate_loss, mse_count_loss, spike_counts


@pytest.fixture
def seq_labels():
    torch.manual_seed(0)
    return torch.randn(4, 3, 5), torch.tensor([1, 4, 0])


def test_ce_rate_loss_is_cross_entropy_of_the_mean(seq_labels):
    """ce_rate_loss = cross_entropy(seq.mean over T)."""
    seq, y = seq_labels
    torch.testing.assert_close(ce_rate_loss(seq, y), F.cross_entropy(seq.mean(0), y), atol=1e-6, rtol=0)
    assert not torch.allclose(ce_rate_loss(seq, y), F.cross_entropy(seq.sum(0), y))


def test_ce_count_loss_is_cross_entropy_of_the_sum(seq_labels):
    """ce_count_loss = cross_entropy(seq.sum over T), i.e. of the spike counts."""
    seq, y = seq_labels
    torch.testing.assert_close(ce_count_loss(seq, y), F.cross_entropy(seq.sum(0), y), atol=1e-6, rtol=0)
    torch.testing.assert_close(spike_counts(seq), seq.sum(0))


def test_mse_count_loss_against_hand_built_target():
    """Target counts: 0.8*T for the true class, 0.2*T for the others (T=5: 4 and 1)."""
    seq = torch.tensor([[[1., 0., 1.], [0., 1., 0.]],
                        [[1., 1., 0.], [0., 1., 1.]],
                        [[1., 0., 0.], [1., 1., 0.]],
                        [[0., 0., 0.], [0., 1., 0.]],
                        [[1., 0., 1.], [0., 0., 0.]]])          # T=5, N=2, C=3
    y = torch.tensor([0, 1])
    counts = torch.tensor([[4., 1., 2.], [1., 4., 1.]])
    assert torch.equal(seq.sum(0), counts)
    target = torch.tensor([[4., 1., 1.], [1., 4., 1.]])
    # only sample 0, class 2 is off by one: MSE = 1 / 6
    assert mse_count_loss(seq, y).item() == pytest.approx(1 / 6, abs=1e-6)
    assert mse_count_loss(seq, y).item() == pytest.approx(F.mse_loss(counts, target).item(), abs=1e-6)
    # other rates: correct 1.0 -> 5, incorrect 0 -> 0
    t2 = torch.tensor([[5., 0., 0.], [0., 5., 0.]])
    assert mse_count_loss(seq, y, correct_rate=1.0, incorrect_rate=0.0).item() == \
        pytest.approx(F.mse_loss(counts, t2).item(), abs=1e-6)
    with pytest.raises(ConfigError):
        mse_count_loss(seq, y, correct_rate=0.2, incorrect_rate=0.8)


def test_mse_count_loss_is_differentiable():
    """The gradient w.r.t. the sequence is 2*(count - target)/numel at every step."""
    seq = torch.zeros(2, 1, 2, requires_grad=True)
    mse_count_loss(seq, torch.tensor([1])).backward()
    # counts 0; targets 0.4 (class 0), 1.6 (class 1): grad = 2 * (0 - target) / 2
    torch.testing.assert_close(seq.grad, torch.tensor([[[-0.4, -1.6]], [[-0.4, -1.6]]]), atol=1e-6, rtol=0)


def test_accuracy_by_count_hand_example():
    """Counts [[3,1],[0,2],[2,1],[1,3]] vs labels [0,1,1,0]: samples 0 and 1 right -> 0.5."""
    seq = torch.tensor([[[1., 1.], [0., 1.], [1., 0.], [0., 1.]],
                        [[1., 0.], [0., 1.], [1., 1.], [1., 1.]],
                        [[1., 0.], [0., 0.], [0., 0.], [0., 1.]]])   # T=3, N=4, C=2
    assert torch.equal(seq.sum(0), torch.tensor([[3., 1.], [0., 2.], [2., 1.], [1., 3.]]))
    assert accuracy_by_count(seq, torch.tensor([0, 1, 1, 0])) == pytest.approx(0.5)
    assert accuracy_by_count(seq, torch.tensor([0, 1, 0, 1])) == pytest.approx(1.0)
    assert isinstance(accuracy_by_count(seq, torch.tensor([0, 1, 0, 1])), float)


@pytest.mark.parametrize("fn", [ce_rate_loss, ce_count_loss, mse_count_loss, accuracy_by_count])
def test_wrong_shapes_raise_config_error(fn):
    """A 2-D output (no time axis), too few / too many labels, or 2-D labels: ConfigError."""
    with pytest.raises(ConfigError, match=r"\[T, N, classes\]"):
        fn(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError, match="labels"):
        fn(torch.zeros(4, 3, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ConfigError, match="labels"):
        fn(torch.zeros(4, 3, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match="labels"):
        fn(torch.zeros(4, 3, 5), torch.zeros(3, 1, dtype=torch.long))
