"""The activation scale λ that minimises the rate error at the T steps asked for (normalize mode "mse").

A soft-reset IF neuron with threshold λ that starts at ``v_init * λ`` and sees a constant input
a for T steps fires ``n = clip(floor(T a / λ + v_init), 0, T)`` times, so the SNN reads a as
``λ n / T``: a T-level quantizer clipped at λ. A high percentile keeps the clipping error small
but spends the T levels on a range most activations never use; at small T the quantization
error of the many small activations dominates. Here λ (per channel or per layer) is the one of
a grid of candidates that minimises the expected squared error
``E[(a - λ q_T(a / λ))^2]`` over the calibration activations, read from their histograms (the
activations are not kept). Exact zeros cost nothing at any λ and are left out.
"""
from __future__ import annotations

import torch

from snncompile.simulate import if_rate
from snncompile.stats import ActivationStats

__all__ = ["if_rate", "mse_scale"]

_MAX_BINS = 512  # histograms are coarsened to this many bins (exactly: adjacent bins summed)


def mse_scale(st: ActivationStats, T: int, v_init: float, channelwise: bool, candidates: int = 64,
              max_spikes: int = 1) -> torch.Tensor:
    """The λ (a 0-d tensor, or one per channel [C]) that minimises the squared rate error of
    ``st``'s activations at ``T`` steps, searched over ``candidates`` values spaced geometrically
    so that the neuron's saturation (``max_spikes`` λ) runs from 1/64 of the max to the max.
    Channels with no positive value get their max (0)."""
    hist = st.histogram().double().cpu()
    hist[:, 0] -= st.zero_count().double().cpu()  # exact zeros: no error at any λ
    width = st.bin_width
    bins = hist.shape[1]
    if bins > _MAX_BINS:
        f = bins // _MAX_BINS
        hist = hist.reshape(hist.shape[0], _MAX_BINS, f).sum(2)
        width *= f
    if not channelwise:
        hist = hist.sum(0, keepdim=True)
    hist = (hist / hist.sum(1, keepdim=True).clamp_min(1)).float()  # frequencies: float32 is plenty
    centers = (torch.arange(hist.shape[1], dtype=torch.float32) + 0.5) * width  # [B]
    top = st.max(channelwise=channelwise).float().reshape(-1).cpu()  # [C] or [1]
    centers = torch.minimum(centers.unsqueeze(0), top.unsqueeze(1))  # a bin never reads above the max
    ratios = torch.logspace(-6, 0, candidates, base=2.0) / max_spikes  # saturation at 1/64 .. 1 of the max
    lam = (top.unsqueeze(0) * ratios.unsqueeze(1)).clamp_min(1e-12).unsqueeze(2)  # [R, C, 1]
    err = (hist * (centers - lam * if_rate(centers / lam, T, v_init, max_spikes)) ** 2).sum(2)  # [R, C]
    best = lam.squeeze(2).gather(0, err.argmin(0, keepdim=True))[0]
    return best if channelwise else best[0]
