"""Streaming activation statistics in bounded memory, for ANN→SNN threshold normalisation.

Conversion rescales each layer by a robust maximum of its post-ReLU activations (a high
percentile rather than the max, which one outlier can inflate). Calibration sets are too large
to keep every activation, so ``ActivationStats`` keeps, per channel, the exact max and a
fixed-size histogram; memory is ``C * bins`` int64 counts however much data is fed.

Binning: ``bins`` bins of width ``w = range / bins`` over ``[0, range]``, closed on the right:
bin 0 is ``[0, w]`` and bin ``i`` is ``(i*w, (i+1)*w]``. ``range`` is always the smallest power of
two >= the max seen so far (1.0 while only zeros were seen) and ``bins`` is a power of two, so
``v / w`` is an exact power-of-two scaling in floating point, and merging bins ``2j, 2j+1``
gives exactly bin ``j`` at twice the width. Hence the counts depend only on the multiset of
values seen — not on batching, order, or how workers split the data — and are deterministic.
"""
from __future__ import annotations

import math

import torch

from .errors import CalibrationError, ConfigError

__all__ = ["ActivationStats"]

# Above this power-of-two shift the float32 scale factor 2**shift would overflow or underflow.
_F32_SAFE_SHIFT = 126


def _ceil_log2(x: float) -> int:
    """Return the smallest e with 2**e >= x for x > 0, and 0 (range 1.0) for x == 0."""
    if x <= 0.0:
        return 0
    mant, exp = math.frexp(x)  # x = mant * 2**exp, mant in [0.5, 1)
    return exp - 1 if mant == 0.5 else exp


def _coarsen(hist: torch.Tensor, steps: int) -> torch.Tensor:
    """Return ``hist`` [C, B] re-binned to ``2**steps`` times the range (exact on counts).

    ``steps <= 0`` returns ``hist``: the range only shrinks (to fit a first positive max below
    0.5) when everything seen so far was 0, and zeros sit in bin 0 under any range.
    """
    if steps <= 0:
        return hist
    c, b = hist.shape
    # After log2(B) halvings every bin has collapsed into bin 0; more steps change nothing.
    f = 1 << min(steps, b.bit_length() - 1)
    out = torch.zeros_like(hist)
    out[:, : b // f] = hist.view(c, b // f, f).sum(2)
    return out


class ActivationStats:
    """Per-channel max and histogram of post-ReLU activations of one layer, fed batch by batch.

    Takes ``channel_dim`` (the channel axis of each batch, default 1 for ``[N, C, ...]`` and
    ``[N, F]``) and ``bins`` (a power of two >= 2; raises ``ConfigError`` otherwise). State lives
    on the device of the first batch; later batches are moved there. ``count`` is the number of
    values seen per channel (N times the spatial size, summed over batches).

    Accuracy guarantee of :meth:`percentile`: with ``n`` values seen and ``k = ceil(p/100 * n)``,
    the estimate is within one bin width ``w = range / bins <= 2 * max / bins`` of the k-th
    smallest value (the nearest-rank percentile, ``numpy.percentile(..., method="inverted_cdf")``).
    ``range`` and ``max`` are layer-wide, so for channel-wise percentiles ``w`` is the same for
    every channel: a channel whose scale is 100x below the layer max gets ~bins/100 effective bins.
    """

    def __init__(self, channel_dim: int = 1, bins: int = 4096) -> None:
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2 or bins & (bins - 1):
            raise ConfigError(
                f"ActivationStats: bins={bins!r} is not a power of two >= 2 — use e.g. 4096"
            )
        if isinstance(channel_dim, bool) or not isinstance(channel_dim, int):
            raise ConfigError(f"ActivationStats: channel_dim={channel_dim!r} must be an int")
        self.channel_dim = channel_dim
        self.bins = bins
        self._log2_bins = bins.bit_length() - 1
        self.count = 0  # values seen per channel (N * spatial size, summed over batches)
        self._exp = 0  # range = 2**_exp
        self._max_seen = 0.0  # host copy of the global max, so re-binning reads no device state
        self._cmax: torch.Tensor | None = None  # [C] float32
        # Exact zeros per channel [C]: ReLU outputs are often >50% zero, and knowing how many of
        # bin 0's counts are exactly 0 makes low percentiles exact instead of interpolated.
        self._zeros: torch.Tensor | None = None
        self._hist: torch.Tensor | None = None  # [C, bins] int64

    # -- read-only views -------------------------------------------------------------------
    @property
    def num_channels(self) -> int | None:
        """The channel count fixed by the first batch, or None before any data."""
        return None if self._hist is None else int(self._hist.shape[0])

    @property
    def range(self) -> float:
        """Upper edge of the histogram: the smallest power of two >= the max (1.0 if max is 0)."""
        return math.ldexp(1.0, self._exp)

    @property
    def bin_width(self) -> float:
        """``range / bins``: the accuracy bound of :meth:`percentile`."""
        return math.ldexp(1.0, self._exp - self._log2_bins)

    def histogram(self) -> torch.Tensor:
        """Return a copy of the per-channel counts ``[C, bins]`` (int64), module-doc binning."""
        self._require_data("histogram")
        return self._hist.clone()

    def zero_count(self) -> torch.Tensor:
        """Return how many exact zeros each channel saw ``[C]`` (int64; they sit in bin 0)."""
        self._require_data("zero_count")
        return self._zeros.clone()

    # -- collection ------------------------------------------------------------------------
    def update(self, x: torch.Tensor) -> None:
        """Record one batch ``x`` ([N, C, ...] or [N, F]; channels at ``channel_dim``).

        Values are read as float32 and clamped at 0 (percentiles are of the ReLU output, zeros
        included). Raises ``CalibrationError`` for a non-tensor, an empty or non-finite tensor, a
        missing channel axis, or a channel count different from earlier batches; a rejected
        batch leaves the statistics unchanged.
        """
        where = "ActivationStats.update"
        if not isinstance(x, torch.Tensor):
            raise CalibrationError(
                f"{where}: got {type(x).__name__}, not a torch.Tensor — pass activations"
            )
        shape = tuple(x.shape)
        if x.numel() == 0:
            raise CalibrationError(
                f"{where}: got an empty tensor of shape {shape} — pass a batch with at least one "
                f"sample and one channel"
            )
        if x.dim() < 2 or not -x.dim() <= self.channel_dim < x.dim():
            raise CalibrationError(
                f"{where}: shape {shape} has no axis {self.channel_dim} — pass [N, C, ...] or "
                f"[N, F] batches, or set channel_dim"
            )
        c = shape[self.channel_dim]
        if self._hist is not None and c != self._hist.shape[0]:
            raise CalibrationError(
                f"{where}: got {c} channels (shape {shape}, channel_dim={self.channel_dim}) but "
                f"earlier batches had {self._hist.shape[0]} — use one ActivationStats per layer"
            )
        if self._hist is not None:
            x = x.to(self._hist.device)
        # [A, C, B] is a view of a contiguous batch: no transpose copy of the activations
        cd = self.channel_dim % x.dim()
        v = x.detach().to(torch.float32).reshape(math.prod(shape[:cd]), c, math.prod(shape[cd + 1:]))
        cmax, cmin = v.amax(dim=(0, 2)), v.amin(dim=(0, 2))
        if not bool(torch.isfinite(cmax).all()) or not bool(torch.isfinite(cmin).all()):
            n_nan = int(torch.isnan(v).sum())
            n_inf = int(torch.isinf(v).sum())
            raise CalibrationError(
                f"{where}: activations of shape {shape} are non-finite ({n_nan} NaN, {n_inf} inf, "
                f"read as float32) — fix the overflow/NaN in the model or calibration input first"
            )
        cmax = cmax.clamp_min(0.0)
        new_max = max(self._max_seen, float(cmax.max()))
        if self._hist is None:
            self._hist = torch.zeros(c, self.bins, dtype=torch.int64, device=v.device)
            self._cmax, self._zeros = cmax, torch.zeros(c, dtype=torch.int64, device=v.device)
        else:
            self._cmax = torch.maximum(self._cmax, cmax)
        self._hist = _coarsen(self._hist, _ceil_log2(new_max) - self._exp)
        self._exp, self._max_seen = _ceil_log2(new_max), new_max

        shift = self._log2_bins - self._exp
        work = v.clamp_min(0.0)
        if abs(shift) > _F32_SAFE_SHIFT:
            work = work.double()
        # slot ceil(v / w): exact zeros land in slot 0, (0, w] in slot 1 (bin 0), ... (right-closed)
        idx = work.mul_(math.ldexp(1.0, shift)).ceil_().clamp_(max=self.bins).long()
        idx += torch.arange(c, device=idx.device).mul_(self.bins + 1).view(1, c, 1)
        counts = torch.bincount(idx.flatten(), minlength=c * (self.bins + 1)).view(c, self.bins + 1)
        self._zeros += counts[:, 0]
        self._hist += counts[:, 1:]
        self._hist[:, 0] += counts[:, 0]  # zeros belong to bin 0 too; _zeros tells them apart
        self.count += v.shape[0] * v.shape[2]

    def merge(self, other: ActivationStats) -> ActivationStats:
        """Add ``other``'s statistics into this object (in place) and return ``self``.

        The result is identical (counts, max, percentiles) to feeding both streams into one
        object. ``other`` is unchanged. Raises ``CalibrationError`` if the two saw different
        channel counts or use different ``bins``.
        """
        if not isinstance(other, ActivationStats):
            raise ConfigError(
                f"ActivationStats.merge: got {type(other).__name__} — pass an ActivationStats"
            )
        if other.bins != self.bins:
            raise CalibrationError(
                f"ActivationStats.merge: bins differ ({self.bins} vs {other.bins}) — give every "
                f"worker's ActivationStats the same bins"
            )
        if other._hist is None:
            return self
        if self._hist is None:
            self._hist, self._cmax = other._hist.clone(), other._cmax.clone()
            self._zeros = other._zeros.clone()
            self.count, self._exp, self._max_seen = other.count, other._exp, other._max_seen
            return self
        if other._hist.shape[0] != self._hist.shape[0]:
            raise CalibrationError(
                f"ActivationStats.merge: channel counts differ ({self._hist.shape[0]} vs "
                f"{other._hist.shape[0]}) — merge only statistics of the same layer"
            )
        dev = self._hist.device
        new_max = max(self._max_seen, other._max_seen)
        exp = _ceil_log2(new_max)
        self._hist = _coarsen(self._hist, exp - self._exp) + _coarsen(
            other._hist.to(dev), exp - other._exp
        )
        self._cmax = torch.maximum(self._cmax, other._cmax.to(dev))
        self._zeros = self._zeros + other._zeros.to(dev)
        self.count += other.count
        self._exp, self._max_seen = exp, new_max
        return self

    # -- queries ---------------------------------------------------------------------------
    def max(self, channelwise: bool = False) -> torch.Tensor:
        """Return the exact max of the clamped activations: 0-d, or [C] if channelwise."""
        self._require_data("max")
        return self._cmax.clone() if channelwise else self._cmax.amax()

    def percentile(self, p: float, channelwise: bool = False) -> torch.Tensor:
        """Return the p-th percentile (p in (0, 100]): a 0-d float32 tensor, or [C] if channelwise.

        p == 100 returns the exact max. Otherwise the k-th smallest value, k = ceil(p/100 * n),
        is located in its bin and linearly interpolated by rank inside that bin, then capped at
        the exact max; the error is at most :attr:`bin_width` (see the class doc). Exact zeros
        are counted apart, so a rank that falls among them returns exactly 0. Layer-wise uses
        the channel histograms summed. Raises ``ConfigError`` for p outside (0, 100].
        """
        self._require_data("percentile")
        p = float(p)
        if not 0.0 < p <= 100.0:
            raise ConfigError(
                f"ActivationStats.percentile: p={p} is outside (0, 100] — use e.g. 99.9 or 99.99"
            )
        if p == 100.0:
            return self.max(channelwise)
        hist = self._hist if channelwise else self._hist.sum(0, keepdim=True)
        n = self.count * (1 if channelwise else self._hist.shape[0])
        # Same float arithmetic as numpy's inverted_cdf, so ranks agree at integer boundaries.
        k = min(max(math.ceil(p / 100.0 * n), 1), n)
        cum = hist.cumsum(1)
        target = torch.full((hist.shape[0], 1), k, dtype=cum.dtype, device=cum.device)
        b = torch.searchsorted(cum, target)  # first bin whose cumulative count reaches k
        inside = hist.gather(1, b)
        before = cum.gather(1, b) - inside
        # In bin 0 interpolate over the positive values only; ranks within the exact zeros give 0.
        zeros = (self._zeros if channelwise else self._zeros.sum()).reshape(-1, 1) * (b == 0)
        before, inside = before + zeros, inside - zeros
        frac = ((k - before).to(torch.float32) / inside.clamp_min(1).to(torch.float32)).clamp(0, 1)
        est = ((b.to(torch.float32) + frac) * self.bin_width).squeeze(1)
        est = torch.minimum(est, self.max(True) if channelwise else self.max(False).reshape(1))
        return est if channelwise else est[0]

    def _require_data(self, what: str) -> None:
        """Raise ``CalibrationError`` if no batch was recorded yet."""
        if self._hist is None:
            raise CalibrationError(
                f"ActivationStats.{what}: no activations seen yet — call update() with at least "
                f"one calibration batch (does the calibration data reach this layer?)"
            )
