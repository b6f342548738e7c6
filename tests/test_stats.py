"""Tests for snncompile.stats.ActivationStats against exact numpy percentiles."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from snncompile.errors import CalibrationError, ConfigError
from snncompile.stats import ActivationStats

PERCENTILES = (50.0, 99.0, 99.9, 99.99)


def _batches(layout: str, seed: int = 0, n_batches: int = 5):
    """Gaussians, per-channel scales over 3 decades, each batch ~1.7x wider than the last."""
    g = torch.Generator().manual_seed(seed)
    c = 6
    scales = torch.logspace(-2, 1, c)
    out = []
    for i in range(n_batches):
        grow = 1.7**i
        if layout == "nchw":
            x = torch.randn(150, c, 4, 4, generator=g) * scales.view(1, c, 1, 1) * grow
        elif layout == "nf":
            x = torch.randn(2000, c, generator=g) * scales * grow
        else:  # "nlc": channels last, [N, L, C]
            x = torch.randn(100, 20, c, generator=g) * scales * grow
        out.append(x)
    return out


def _reference(batches, channel_dim: int) -> np.ndarray:
    """All values seen, relu'd, as a [C, n] float32 array."""
    c = batches[0].shape[channel_dim]
    flat = [x.clamp_min(0).movedim(channel_dim, 0).reshape(c, -1) for x in batches]
    return torch.cat(flat, 1).numpy()


def _feed(batches, **kw) -> ActivationStats:
    s = ActivationStats(**kw)
    for x in batches:
        s.update(x)
    return s


def _assert_same_stats(a: ActivationStats, b: ActivationStats) -> None:
    assert a.count == b.count and a.range == b.range
    assert torch.equal(a.histogram(), b.histogram())
    assert torch.equal(a.max(True), b.max(True))
    # Low ones too: they land in bin 0 for small-scale channels, where exact zeros matter.
    for p in PERCENTILES + (25.0, 60.0, 75.0, 90.0):
        assert torch.equal(a.percentile(p), b.percentile(p))
        assert torch.equal(a.percentile(p, True), b.percentile(p, True))


@pytest.mark.parametrize("bins", [64, 4096])
@pytest.mark.parametrize("layout,channel_dim", [("nchw", 1), ("nf", 1), ("nlc", -1)])
def test_percentiles_within_one_bin_of_numpy(layout, channel_dim, bins):
    batches = _batches(layout)
    s = ActivationStats(channel_dim=channel_dim, bins=bins)
    ranges = []
    for x in batches:
        s.update(x)
        ranges.append(s.range)
    # The growing batches must have forced re-binning, or this test would not cover it.
    assert len(set(ranges)) >= 3 and ranges == sorted(ranges)
    ref = _reference(batches, channel_dim)
    w = s.bin_width
    assert w == s.range / bins <= 2 * float(s.max()) / bins
    for p in PERCENTILES:
        want_layer = np.percentile(ref.ravel(), p, method="inverted_cdf")
        want_chan = np.percentile(ref, p, axis=1, method="inverted_cdf")
        got_layer = s.percentile(p)
        got_chan = s.percentile(p, channelwise=True)
        assert got_layer.shape == () and got_chan.shape == (ref.shape[0],)
        assert abs(float(got_layer) - want_layer) <= w, (p, float(got_layer), want_layer, w)
        err = np.abs(got_chan.numpy().astype(np.float64) - want_chan)
        assert (err <= w).all(), (p, err.max() / w)


def test_accuracy_is_much_better_than_the_bound_on_average():
    # The bound is worst case; a broken interpolation (e.g. returning bin edges) would sit near it.
    batches = _batches("nchw")
    s = _feed(batches)
    ref = _reference(batches, 1)
    errs = [
        np.abs(s.percentile(p, True).numpy() - np.percentile(ref, p, axis=1, method="inverted_cdf"))
        for p in (99.0, 99.9)
    ]
    assert np.mean(errs) < 0.5 * s.bin_width


def test_max_is_exact_and_p100_equals_max():
    batches = _batches("nchw")
    s = _feed(batches)
    ref = _reference(batches, 1)
    assert torch.equal(s.max(channelwise=True), torch.from_numpy(ref.max(1)))
    assert float(s.max()) == ref.max()
    assert torch.equal(s.percentile(100), s.max())
    assert torch.equal(s.percentile(100, channelwise=True), s.max(channelwise=True))
    for p in (99.99, 99.999):  # capped: never above the exact max
        assert (s.percentile(p, True) <= s.max(True)).all()


def test_zeros_and_negatives_count_as_relu_zeros():
    x = torch.tensor([[-3.0], [-1.0], [0.0], [0.0], [0.5], [1.0], [2.0], [-0.0]])
    s = _feed([x], bins=16)
    assert s.count == 8
    assert float(s.percentile(50)) == 0.0  # rank 4 of 8 falls among the 5 zeros: exact
    assert float(s.percentile(62.5)) == 0.0  # rank 5: the last zero
    assert 0.0 < float(s.percentile(75)) <= 0.5 + s.bin_width
    assert float(s.max()) == 2.0 and s.range == 2.0


@pytest.mark.parametrize("first_max,want", [(3.0, 4.0), (4.0, 4.0), (0.3, 0.5), (0.0, 1.0)])
def test_range_is_smallest_power_of_two_above_max(first_max, want):
    s = _feed([torch.tensor([[0.0, first_max]])])
    assert s.range == want


def test_all_zero_batches_do_not_pin_the_range_at_one():
    # Otherwise a zero first batch would leave range=1.0 and break w <= 2*max/bins.
    s = _feed([torch.zeros(10, 3), torch.full((10, 3), 1e-3)])
    assert s.range == 2.0**-9
    assert abs(float(s.percentile(60)) - 1e-3) <= s.bin_width


def test_extreme_magnitudes_stay_within_bound():
    for scale in (1e-38, 1e30):  # 1e-38: the scale factor overflows float32, float64 path
        batches = [torch.randn(500, 4, generator=torch.Generator().manual_seed(i)) * scale
                   for i in range(2)]
        s = _feed(batches)
        ref = _reference(batches, 1)
        for p in (50.0, 99.0):
            want = np.percentile(ref, p, axis=1, method="inverted_cdf")
            assert (np.abs(s.percentile(p, True).numpy().astype(np.float64) - want)
                    <= s.bin_width * (1 + 1e-6)).all()


def test_deterministic_and_independent_of_batching_and_order():
    batches = _batches("nchw")
    # Values exactly at a power of two sit on a range edge, the case re-binning must keep exact.
    edge = torch.zeros(2, 6, 4, 4)
    edge[0, :, 0, 0] = 4.0
    edge[1, :, 0, 0] = 8.0
    batches = [edge] + batches
    a, b = _feed(batches), _feed(batches)
    _assert_same_stats(a, b)
    _assert_same_stats(a, _feed(list(reversed(batches))))
    _assert_same_stats(a, _feed([torch.cat(batches)]))


def test_merge_equals_single_stream():
    batches = _batches("nchw", n_batches=6)
    zeros = torch.zeros(7, 6, 4, 4)  # a worker that only saw zeros (range 1.0, not comparable)
    single = _feed(batches + [zeros])
    w1, w2, w3 = _feed(batches[:1]), _feed(batches[1:4:2] + [zeros]), _feed(batches[2::2][:2])
    w4 = _feed(batches[5:])
    merged = ActivationStats().merge(w1).merge(w2).merge(ActivationStats()).merge(w3).merge(w4)
    _assert_same_stats(merged, single)
    # Merging a small-range worker into a zeros-only one must take the small range.
    tiny = torch.full((5, 6), 1e-3)
    _assert_same_stats(_feed([torch.zeros(5, 6)]).merge(_feed([tiny])),
                       _feed([torch.zeros(5, 6), tiny]))
    h = w1.histogram()
    w3.merge(w1)
    fresh = ActivationStats().merge(w1)
    fresh.update(batches[0])  # must not write through into w1's tensors
    assert torch.equal(w1.histogram(), h)
    _assert_same_stats(w1, _feed(batches[:1]))


def test_merge_rejects_mismatches():
    a = _feed([torch.rand(4, 3)])
    with pytest.raises(CalibrationError, match=r"channel counts differ \(3 vs 5\)"):
        a.merge(_feed([torch.rand(4, 5)]))
    with pytest.raises(CalibrationError, match=r"bins differ \(4096 vs 64\)"):
        a.merge(_feed([torch.rand(4, 3)], bins=64))
    with pytest.raises(ConfigError, match="pass an ActivationStats"):
        a.merge(torch.rand(4, 3))


@pytest.mark.parametrize("call", ["max", "percentile", "histogram"])
def test_no_data_raises(call):
    s = ActivationStats()
    fn = {"max": s.max, "percentile": lambda: s.percentile(99.9), "histogram": s.histogram}[call]
    with pytest.raises(CalibrationError, match=rf"ActivationStats\.{call}: no activations seen"):
        fn()


def test_bad_batches_raise_and_leave_state_unchanged():
    s = _feed([torch.rand(8, 3, 2)])
    before = (s.count, s.range, s.histogram(), s.max(True))
    with pytest.raises(CalibrationError, match=r"got 4 channels .* earlier batches had 3"):
        s.update(torch.rand(8, 4, 2))
    with pytest.raises(CalibrationError, match=r"empty tensor of shape \(0, 3, 2\)"):
        s.update(torch.rand(0, 3, 2))
    nan = torch.rand(8, 3, 2) * 100
    nan[0, 0, 0] = float("nan")
    with pytest.raises(CalibrationError, match=r"non-finite \(1 NaN, 0 inf"):
        s.update(nan)
    inf = torch.rand(8, 3, 2) * 100
    inf[1, 1, 1], inf[2, 2, 0] = float("inf"), float("-inf")  # -inf would hide under the clamp
    with pytest.raises(CalibrationError, match=r"non-finite \(0 NaN, 2 inf"):
        s.update(inf)
    with pytest.raises(CalibrationError, match="has no axis 1"):
        s.update(torch.rand(8))
    with pytest.raises(CalibrationError, match=r"shape \(3,\) has no axis 0"):
        ActivationStats(channel_dim=0).update(torch.rand(3))  # no batch axis
    with pytest.raises(CalibrationError, match="not a torch.Tensor"):
        s.update(np.ones((2, 3)))
    assert (s.count, s.range) == before[:2]
    assert torch.equal(s.histogram(), before[2]) and torch.equal(s.max(True), before[3])


@pytest.mark.parametrize("p", [0.0, -1.0, 100.5, math.nan])
def test_bad_percentile_raises(p):
    s = _feed([torch.rand(4, 3)])
    with pytest.raises(ConfigError, match=r"outside \(0, 100\]"):
        s.percentile(p)


@pytest.mark.parametrize("bins", [0, 1, 100, 4096.0, True])
def test_bad_bins_raise(bins):
    with pytest.raises(ConfigError, match="not a power of two"):
        ActivationStats(bins=bins)
