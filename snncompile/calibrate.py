"""Activation statistics over calibration data: one streaming pass through the ANN (interpreted).

``collect_stats(graph, data, nodes)`` runs the graph's ANN (snncompile.interpret: the op table's
own targets, node by node; no emitter) on every calibration batch and feeds
the outputs of the requested nodes into ``ActivationStats`` (streaming max and histograms,
bounded memory; see snncompile/stats.py for the accuracy of the percentile estimate).
"""
from __future__ import annotations

import itertools
import sys
import time
import warnings
from typing import Any, Iterable, Iterator

import torch

from .errors import CalibrationError
from .interpret import Interpreter, is_temporal
from .ir import Graph, Node
from .stats import ActivationStats

__all__ = ["iter_batches", "collect_stats", "first_batch", "peek_first_batch"]


def iter_batches(data: Any, batch_size: int = 256, *, allow_nonfinite: bool = False,
                 value_range: tuple[float, float] | None = None, what: str = "") -> Iterator[torch.Tensor]:
    """Yield input batches from a tensor (split into ``batch_size`` rows), a list of tensors,
    an ``(inputs, labels)`` pair of tensors (the inputs are taken), or any iterable (a DataLoader,
    a generator) of tensors or ``(x, y, ...)`` tuples (x is taken).

    Floating batches are read as float32 (the IR's dtype); integer batches are refused (labels?).
    Rows with NaN or Inf are refused (CalibrationError naming the batch), or skipped with one
    warning when ``allow_nonfinite``. ``value_range=(lo, hi)``: every value must lie in it (the
    Poisson encoder's probabilities; ``what`` says who asks).
    """
    if data is None:
        raise CalibrationError("no calibration data; pass a tensor, a list of tensors or a DataLoader "
                               "of inputs (a few hundred training images is enough)")
    pair = _inputs_of_pair(data)
    if pair is not None:
        data = pair
    if isinstance(data, torch.Tensor):
        if data.dim() == 0 or data.shape[0] == 0:
            raise CalibrationError("calibration tensor is empty; give at least one input row")
        items: Iterable = data.split(batch_size)
    elif isinstance(data, Iterable):
        items = data
    else:
        raise CalibrationError(f"calibration data has type {type(data).__name__}; pass a tensor, a list of tensors, an "
                               "(inputs, labels) pair or a DataLoader of inputs")
    n = kept = skipped = 0
    for item in items:
        x = item[0] if isinstance(item, (tuple, list)) else item
        x = _checked_batch(x, n, value_range, what)
        n += 1
        if not allow_nonfinite:
            _refuse_nonfinite(x, n - 1)
        else:
            good = torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
            if not bool(good.all()):
                skipped += int((~good).sum())
                x = x[good]
                if x.shape[0] == 0:
                    continue
        kept += 1
        yield x
    if n == 0:
        raise CalibrationError("calibration data yielded no batches; give at least one input batch")
    if skipped:
        warnings.warn(f"calibration: skipped {skipped} input rows with NaN or Inf values "
                      "(allow_nonfinite=True)", stacklevel=2)
    if kept == 0:
        raise CalibrationError(f"calibration: every one of the {n} batches has NaN or Inf in every row, so no "
                               "statistics can be taken — clean the calibration data")


def _inputs_of_pair(data: Any) -> torch.Tensor | None:
    """The inputs of an ``(inputs, labels, ...)`` tuple or list of tensors with one row count, where
    the later tensors differ from the first in shape or dtype (so they are not more input batches)."""
    if not isinstance(data, (tuple, list)) or len(data) < 2 or not all(isinstance(t, torch.Tensor) for t in data):
        return None
    first = data[0]
    if first.dim() == 0 or any(t.dim() == 0 or t.shape[0] != first.shape[0] for t in data[1:]):
        return None
    if all(t.shape[1:] == first.shape[1:] and t.is_floating_point() for t in data[1:]):
        return None  # a list of same-shaped input batches
    return first


def _checked_batch(x: Any, n: int, value_range, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise CalibrationError(f"calibration batch {n} is a {type(x).__name__}; expected a tensor or (x, y)")
    if not x.is_floating_point():
        raise CalibrationError(f"calibration batch {n} is a {x.dtype} tensor of shape {list(x.shape)}; calibration "
                               "batches are model inputs (floating point) — if these are labels, pass the inputs "
                               "alone, an (inputs, labels) pair, or a DataLoader of (x, y)")
    if x.dim() == 0 or x.shape[0] == 0:
        raise CalibrationError(f"calibration batch {n} is empty (shape {list(x.shape)}); give at least one input row")
    if x.dtype != torch.float32:
        x = x.float()
    if value_range is not None:
        lo, hi = value_range
        finite = x[torch.isfinite(x)]
        if finite.numel() and (float(finite.min()) < lo or float(finite.max()) > hi):
            raise CalibrationError(
                f"calibration batch {n} has values in [{float(finite.min()):.4g}, {float(finite.max()):.4g}], but "
                f"{what or 'this pipeline'} needs inputs in [{lo:g}, {hi:g}] — scale the data into that range "
                "(e.g. undo the standardization: pixels in [0, 1]), or convert with encoding='direct'")
    return x


def _refuse_nonfinite(x: torch.Tensor, n: int) -> None:
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        nan, rows = int(torch.isnan(x).sum()), int(bad.reshape(x.shape[0], -1).any(1).sum())
        raise CalibrationError(
            f"calibration batch {n} has {nan} NaN and {int(bad.sum()) - nan} Inf values (in {rows} of its "
            f"{x.shape[0]} rows); statistics over them would be meaningless — clean the calibration data, or "
            "pass allow_nonfinite=True to skip those rows")


class _Peeked:
    """A one-shot iterator whose first item was taken for tracing: iterating it yields that item,
    then the rest; a second iteration is refused (an iterator cannot be read twice)."""

    def __init__(self, first: Any, rest: Iterator):
        self._first, self._rest, self._used = first, rest, False

    def __iter__(self) -> Iterator:
        if self._used:
            raise CalibrationError("the calibration data is an iterator (or generator), which can be read only "
                                   "once, and it was already read — pass a list of batches, a tensor or a "
                                   "DataLoader to calibrate more than once")
        self._used = True
        return itertools.chain([self._first], self._rest)


def peek_first_batch(data: Any, *, allow_nonfinite: bool = False) -> tuple[torch.Tensor, Any]:
    """The first calibration batch (the example input for tracing) and the data to calibrate on:
    ``data`` itself, or for an iterator or generator (read only once) one that still yields the
    batch taken here."""
    if isinstance(data, Iterator) and not isinstance(data, (torch.Tensor, tuple, list)):
        try:
            item = next(data)
        except StopIteration:
            raise CalibrationError("calibration data yielded no batches; give at least one input batch") from None
        return next(iter_batches([item], batch_size=8, allow_nonfinite=allow_nonfinite)), _Peeked(item, data)
    return next(iter_batches(data, batch_size=8, allow_nonfinite=allow_nonfinite)), data


def first_batch(data: Any) -> torch.Tensor:
    """The first calibration batch (used as the example input for tracing). An iterator loses it:
    use ``peek_first_batch`` to keep it."""
    return next(iter_batches(data, batch_size=8))


def collect_stats(graph: Graph, data: Any, nodes: Iterable[Node], *, bins: int = 4096,
                  batch_size: int = 256, device=None, progress: bool | None = None, allow_nonfinite: bool = False,
                  value_range: tuple[float, float] | None = None, what: str = "") -> dict[int, ActivationStats]:
    """Run the (non-temporal) graph on all calibration batches; return stats per node id.

    ``allow_nonfinite``, ``value_range`` and ``what`` go to ``iter_batches`` (NaN/Inf rows refused
    unless allowed; values outside ``value_range`` refused).

    Deterministic for the same data; runs on ``device`` (default: where the graph's first
    parameter lives). Shows a progress line on stderr (when it is a terminal, or ``progress=True``) once it takes
    more than two seconds.
    """
    if is_temporal(graph):
        raise CalibrationError("calibration runs on the ANN; run it before relu-to-if/encode/readout")
    wanted = {n.id: n for n in nodes}
    run = Interpreter(graph, device)
    stats = {i: ActivationStats(bins=bins) for i in wanted}

    def observe(node: Node, value: torch.Tensor) -> None:
        st = stats.get(node.id)
        if st is not None:
            st.update(value)

    if progress is None:
        progress = sys.stderr.isatty()
    t0, k, shown = time.perf_counter(), 0, False
    with torch.no_grad():
        batches = iter_batches(data, batch_size, allow_nonfinite=allow_nonfinite, value_range=value_range, what=what)
        for k, x in enumerate(batches, 1):
            run(x, observer=observe)
            if progress and time.perf_counter() - t0 > 2.0:
                print(f"\rcalibrating: {k} batches", end="", file=sys.stderr, flush=True)
                shown = True
    if shown:
        print(file=sys.stderr)
    return stats
