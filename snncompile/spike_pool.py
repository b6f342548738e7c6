"""Max pooling of spike trains, gated by spike counts (Rueckauer et al. 2017).

Pooling spikes with a plain max (an OR over the window) fires whenever any neuron fires, which
overestimates the max rate; pooling input currents before the neuron (swap-maxpool-relu) is
exact only for static currents. Here each window passes on, at every step, the spike of the
neuron that has fired most so far (ties: the first in the window), so the output rate converges
to the window's largest rate.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .stateful import PerThread, PerThreadState

__all__ = ["SpikeMaxPool2d"]


class SpikeMaxPool2d(PerThreadState, nn.Module):
    """``forward(x [T*N, C, H, W], T) -> [T*N, C, H', W']``; keeps the counts for ``step()``
    (per thread, like every runtime module's state)."""

    counts = PerThread()

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding
        self.dilation, self.ceil_mode = dilation, ceil_mode

    def reset(self) -> None:
        """Forget the spike counts."""
        self.counts = None

    def reset_state(self) -> None:
        """Forget the spike counts (a new sequence)."""
        self.counts = None

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, gated by spike counts"

    def forward(self, x: torch.Tensor, T: int) -> torch.Tensor:
        n = x.shape[0] // T
        xs = x.reshape((T, n) + tuple(x.shape[1:]))
        counts = xs.cumsum(0, dtype=torch.float32)
        if self.counts is not None and self.counts.shape == counts.shape[1:]:
            counts = counts + self.counts
        self.counts = counts[-1]
        _, idx = F.max_pool2d(counts.reshape(x.shape), self.kernel_size, self.stride, self.padding,
                              self.dilation, self.ceil_mode, return_indices=True)
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        return flat.gather(2, idx.reshape(idx.shape[0], idx.shape[1], -1)).reshape(idx.shape)
