"""Losses and metrics for rate-coded outputs.

They take the output sequence ``[T, N, C]`` (``snn.run_sequence(x)``, or ``snn(x,
return_all_steps=True)`` for a last-step readout) and integer class labels ``[N]``. For a readout
layer that integrates (the default), the sequence holds its values at every step; for a spiking
output layer, its spikes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConfigError

__all__ = ["ce_rate_loss", "ce_count_loss", "mse_count_loss", "accuracy_by_count", "spike_counts"]


def _check(seq: torch.Tensor, labels: torch.Tensor) -> None:
    if seq.dim() != 3:
        raise ConfigError(f"expected the output sequence [T, N, classes], got shape {list(seq.shape)}")
    if labels.dim() != 1 or labels.shape[0] != seq.shape[1]:
        raise ConfigError(f"expected {seq.shape[1]} integer labels [N], got shape {list(labels.shape)}")


def spike_counts(seq: torch.Tensor) -> torch.Tensor:
    """Sum over time: ``[T, N, C] -> [N, C]``."""
    return seq.sum(0)


def ce_rate_loss(seq: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the output averaged over T (the mean membrane / rate as logits)."""
    _check(seq, labels)
    return F.cross_entropy(seq.mean(0), labels)


def ce_count_loss(seq: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the spike count over T (snnTorch's ``ce_count_loss``)."""
    _check(seq, labels)
    return F.cross_entropy(spike_counts(seq), labels)


def mse_count_loss(seq: torch.Tensor, labels: torch.Tensor, correct_rate: float = 0.8,
                   incorrect_rate: float = 0.2) -> torch.Tensor:
    """MSE between the spike counts and target counts: ``correct_rate * T`` for the true class,
    ``incorrect_rate * T`` for the others (snnTorch's ``mse_count_loss``)."""
    _check(seq, labels)
    if not 0.0 <= incorrect_rate <= correct_rate <= 1.0:
        raise ConfigError(f"need 0 <= incorrect_rate <= correct_rate <= 1, got {incorrect_rate}, {correct_rate}")
    T = seq.shape[0]
    target = torch.full_like(seq[0], incorrect_rate * T)
    target.scatter_(1, labels.reshape(-1, 1), correct_rate * T)
    return F.mse_loss(spike_counts(seq), target)


def accuracy_by_count(seq: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of samples whose largest summed output (spike count) is the true class."""
    _check(seq, labels)
    return float((spike_counts(seq).argmax(1) == labels).float().mean())
