"""Activation statistics over calibration data: one streaming pass through the ANN (interpreted).

``collect_stats(graph, data, nodes)`` runs the graph's ANN (snncompile.interpret: the op table's
own targets, node by node; no emitter) on every calibration batch and feeds
the outputs of the requested nodes into ``ActivationStats`` (streaming max and histograms,
bounded memory; see snncompile/stats.py for the accuracy of the percentile estimate).
"""
from __future__ import annotations

import itertools
import warnings
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch

from . import distributed_stats as distributed
from .errors import CalibrationError
from .interpret import Interpreter, is_temporal
from .ir import Graph, Node
from .progress import progress as progress_bar
from .stats import ActivationStats

__all__ = ["calibration_head", "HEAD_ROWS", "iter_batches", "collect_stats", "first_batch", "peek_first_batch", "input_names"]


def iter_batches(data: Any, batch_size: int = 256, *, allow_nonfinite: bool = False,
                 value_range: tuple[float, float] | None = None, what: str = "", n_inputs: int = 1,
                 names: Sequence[str] | None = None) -> Iterator[Any]:
    """Yield input batches: a tensor each for a one-input model, a tuple of ``n_inputs`` tensors
    (forward's order, one batch size) for a model of several inputs.

    ``data`` is one batch (split into ``batch_size`` rows), a list of batches or any iterable (a
    DataLoader, a generator) of batches. The number of inputs decides how a tuple reads:

    * one input: a batch is a tensor, an ``(x, y, ...)`` tuple (x is taken) or a dict; at the top
      level a tuple of tensors with one row count whose later tensors differ from the first in
      shape or dtype is one ``(inputs, labels)`` pair, while same-shaped float tensors are a list
      of batches (as before multi-input support);
    * ``n_inputs`` of 2 or more: a batch is a tuple or list of tensors (its first ``n_inputs``
      are the inputs, any further ones labels), an ``((x1, x2, ...), y)`` pair, or a dict keyed
      by forward's parameter names (``names``; other keys such as labels are ignored). At the top
      level a tuple of tensors, a dict or such a pair is one batch; anything else is an iterable
      of batches.

    Floating batches are read as float32 (the IR's dtype); integer batches are refused (labels?).
    Rows with NaN or Inf (in any input) are refused (CalibrationError naming the batch), or skipped
    with one warning when ``allow_nonfinite``. ``value_range=(lo, hi)``: every value must lie in it
    (the Poisson encoder's probabilities; ``what`` says who asks). Inputs of one batch with
    different row counts are a CalibrationError naming them.
    """
    if isinstance(data, distributed.GatheredHead):  # torch.distributed: every rank's first rows
        yield from data.batches(iter_batches, batch_size, allow_nonfinite=allow_nonfinite, value_range=value_range,
                                what=what, n_inputs=n_inputs, names=names)
        return
    if data is None:
        raise CalibrationError("no calibration data; pass a tensor, a list of tensors or a DataLoader "
                               "of inputs (a few hundred training images is enough)")
    n_inputs = max(int(n_inputs), 1)
    names = list(names) if names is not None and len(names) == n_inputs else None
    shown = names or (["x"] + [f"x{k}" for k in range(1, n_inputs)])
    n = kept = skipped = 0
    for item in _items(data, batch_size, n_inputs, names, shown):
        xs = _inputs_of(item, n, n_inputs, names, shown)
        xs = tuple(_checked_batch(x, n, value_range, what, shown[k] if n_inputs > 1 else "")
                   for k, x in enumerate(xs))
        _same_rows(xs, n, shown)
        n += 1
        if not allow_nonfinite:
            for k, x in enumerate(xs):
                _refuse_nonfinite(x, n - 1, shown[k] if n_inputs > 1 else "")
        else:
            good = torch.stack([torch.isfinite(x.reshape(x.shape[0], -1)).all(1) for x in xs]).all(0)
            if not bool(good.all()):
                skipped += int((~good).sum())
                xs = tuple(x[good] for x in xs)
                if xs[0].shape[0] == 0:
                    continue
        kept += 1
        yield xs[0] if n_inputs == 1 else xs
    if n == 0:
        raise CalibrationError("calibration data yielded no batches; give at least one input batch")
    if skipped:
        warnings.warn(f"calibration: skipped {skipped} input rows with NaN or Inf values "
                      "(allow_nonfinite=True)", stacklevel=2)
    if kept == 0:
        raise CalibrationError(f"calibration: every one of the {n} batches has NaN or Inf in every row, so no "
                               "statistics can be taken — clean the calibration data")


def _items(data: Any, batch_size: int, n_inputs: int, names, shown) -> Iterable:
    """The batches ``data`` holds, each still in the user's form (see ``iter_batches``)."""
    if isinstance(data, Mapping):
        data = _inputs_of(data, 0, n_inputs, names, shown)
        data = data[0] if n_inputs == 1 else data
    if n_inputs == 1:
        pair = _inputs_of_pair(data)
        if pair is not None:
            data = pair
        if isinstance(data, torch.Tensor):
            if data.dim() == 0 or data.shape[0] == 0:
                raise CalibrationError("calibration tensor is empty; give at least one input row")
            return data.split(batch_size)
    elif isinstance(data, torch.Tensor):
        raise CalibrationError(f"calibration data is one tensor, but the model takes {n_inputs} inputs "
                               f"({', '.join(shown)}); give each batch as a tuple of {n_inputs} tensors in forward's "
                               "order or a dict keyed by forward's parameter names")
    elif _is_one_batch(data):
        xs = _inputs_of(data, 0, n_inputs, names, shown)
        if all(isinstance(x, torch.Tensor) and x.dim() > 0 for x in xs):
            _same_rows(xs, 0, shown)
            return zip(*(x.split(batch_size) for x in xs))
        return [xs]
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        return data
    raise CalibrationError(f"calibration data has type {type(data).__name__}; pass a tensor, a list of tensors, an "
                           "(inputs, labels) pair or a DataLoader of inputs"
                           + (f" (each batch a tuple of the {n_inputs} inputs)" if n_inputs > 1 else ""))


def _is_one_batch(data: Any) -> bool:
    """For a model of several inputs: a tuple of tensors, or an ``(inputs, labels...)`` pair."""
    if not isinstance(data, (tuple, list)) or not data:
        return False
    if all(isinstance(t, torch.Tensor) for t in data):
        return True
    first = data[0]
    return len(data) >= 2 and all(isinstance(t, torch.Tensor) for t in data[1:]) and (
        isinstance(first, Mapping) or isinstance(first, (tuple, list)) and
        all(isinstance(t, torch.Tensor) for t in first))


def _inputs_of(item: Any, k: int, n_inputs: int, names, shown) -> tuple:
    """The ``n_inputs`` input tensors of batch ``k`` (not yet checked), in forward's order."""
    if isinstance(item, Mapping):
        if names is None:
            raise CalibrationError(f"calibration batch {k} is a dict, but the graph's inputs carry no names (compile "
                                   "names those of a model of several inputs) — give the batch as a tensor, or a "
                                   "tuple of tensors in forward's order")
        missing = [nm for nm in names if nm not in item]
        if missing:
            raise CalibrationError(f"calibration batch {k} is a dict without {', '.join(map(repr, missing))}; the "
                                   f"model's forward takes {', '.join(names)} — key each input by its parameter name")
        return tuple(item[nm] for nm in names)
    if isinstance(item, (tuple, list)) and item:
        if isinstance(item[0], (tuple, list, Mapping)):
            return _inputs_of(item[0], k, n_inputs, names, shown)  # ((x1, x2, ...), labels)
        if len(item) < n_inputs:
            raise CalibrationError(f"calibration batch {k} holds {len(item)} tensors, but the model takes {n_inputs} "
                                   f"inputs ({', '.join(shown)}); give all of them, in forward's order")
        return tuple(item[:n_inputs])
    if n_inputs == 1:
        return (item,)
    raise CalibrationError(f"calibration batch {k} is a {type(item).__name__}, but the model takes {n_inputs} inputs "
                           f"({', '.join(shown)}); give each batch as a tuple of {n_inputs} tensors in forward's "
                           "order or a dict keyed by forward's parameter names")


def _same_rows(xs: tuple, k: int, shown) -> None:
    rows = [x.shape[0] if isinstance(x, torch.Tensor) and x.dim() else None for x in xs]
    if len(set(rows)) > 1:
        sizes = ", ".join(f"{nm}: {r} rows" for nm, r in zip(shown, rows))
        raise CalibrationError(f"calibration batch {k}: the inputs have different batch sizes ({sizes}); every input "
                               "of a batch needs one row per sample")


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


def _checked_batch(x: Any, n: int, value_range, what: str, name: str = "") -> torch.Tensor:
    where = f"calibration batch {n}" + (f" input {name!r}" if name else "")
    if not isinstance(x, torch.Tensor):
        raise CalibrationError(f"{where} is a {type(x).__name__}; expected a tensor or (x, y)")
    if not x.is_floating_point():
        raise CalibrationError(f"{where} is a {x.dtype} tensor of shape {list(x.shape)}; calibration "
                               "batches are model inputs (floating point) — if these are labels, pass the inputs "
                               "alone, an (inputs, labels) pair, or a DataLoader of (x, y)")
    if x.dim() == 0 or x.shape[0] == 0:
        raise CalibrationError(f"{where} is empty (shape {list(x.shape)}); give at least one input row")
    if x.dtype != torch.float32:
        x = x.float()
    if value_range is not None:
        lo, hi = value_range
        finite = x[torch.isfinite(x)]
        if finite.numel() and (float(finite.min()) < lo or float(finite.max()) > hi):
            raise CalibrationError(
                f"{where} has values in [{float(finite.min()):.4g}, {float(finite.max()):.4g}], but "
                f"{what or 'this pipeline'} needs inputs in [{lo:g}, {hi:g}] — scale the data into that range "
                "(e.g. undo the standardization: pixels in [0, 1]), or convert with encoding='direct'")
    return x


def _refuse_nonfinite(x: torch.Tensor, n: int, name: str = "") -> None:
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        nan, rows = int(torch.isnan(x).sum()), int(bad.reshape(x.shape[0], -1).any(1).sum())
        where = f"calibration batch {n}" + (f" input {name!r}" if name else "")
        raise CalibrationError(
            f"{where} has {nan} NaN and {int(bad.sum()) - nan} Inf values (in {rows} of its "
            f"{x.shape[0]} rows); statistics over them would be meaningless — clean the calibration data, or "
            "pass allow_nonfinite=True to skip those rows")


#: a one-shot iterator keeps its first items up to this many rows for passes that need only those
HEAD_ROWS = 1024


class _Peeked:
    """A one-shot iterator whose first item was taken for tracing: iterating it yields that item,
    then the rest; a second iteration is refused (an iterator cannot be read twice). It keeps
    its first items (up to HEAD_ROWS rows) for ``calibration_head``."""

    def __init__(self, first: Any, rest: Iterator):
        self._first, self._rest, self._used = first, rest, False
        self.head: list = []

    def __iter__(self) -> Iterator:
        if self._used:
            raise CalibrationError("the calibration data is an iterator (or generator), which can be read only "
                                   "once, and it was already read — pass a list of batches, a tensor or a "
                                   "DataLoader to calibrate more than once")
        self._used = True
        return self._keeping(itertools.chain([self._first], self._rest))

    def _keeping(self, items: Iterator) -> Iterator:
        rows = 0
        for item in items:
            if rows < HEAD_ROWS:
                self.head.append(item)
                rows += _rows_of(item)
            yield item


def _rows_of(item: Any) -> int:
    """The row count of a batch in the user's form (its first tensor's), 1 when none is found."""
    if isinstance(item, torch.Tensor):
        return int(item.shape[0]) if item.dim() else 1
    values = item.values() if isinstance(item, Mapping) else item if isinstance(item, (tuple, list)) else ()
    return next((_rows_of(v) for v in values), 1)


def calibration_head(data: Any) -> Any:
    """Calibration data for a pass that needs only its first rows (at most HEAD_ROWS): ``data``
    itself when it can be read again, else (a one-shot iterator a pass already read) the first
    items it yielded; under torch.distributed, a ``distributed.GatheredHead`` of every rank's."""
    if isinstance(data, _Peeked) and data._used:
        data = data.head
    return distributed.GatheredHead(data, HEAD_ROWS) if distributed.is_distributed() else data


def peek_first_batch(data: Any, *, allow_nonfinite: bool = False, n_inputs: int = 1,
                     names: Sequence[str] | None = None) -> tuple[Any, Any]:
    """The first calibration batch (the example input for tracing: a tensor, or a tuple of
    ``n_inputs`` tensors) and the data to calibrate on: ``data`` itself, or for an iterator or
    generator (read only once) one that still yields the batch taken here. ``n_inputs`` and
    ``names`` say how batches read (see ``iter_batches``)."""
    opts = dict(batch_size=8, allow_nonfinite=allow_nonfinite, n_inputs=n_inputs, names=names)
    if isinstance(data, Iterator) and not isinstance(data, (torch.Tensor, tuple, list)):
        try:
            item = next(data)
        except StopIteration:
            raise CalibrationError("calibration data yielded no batches; give at least one input batch") from None
        return next(iter_batches([item], **opts)), _Peeked(item, data)
    return next(iter_batches(data, **opts)), data


def first_batch(data: Any, *, n_inputs: int = 1, names: Sequence[str] | None = None) -> Any:
    """The first calibration batch (used as the example input for tracing). An iterator loses it:
    use ``peek_first_batch`` to keep it."""
    return next(iter_batches(data, batch_size=8, n_inputs=n_inputs, names=names))


def input_names(graph: Graph) -> list[str] | None:
    """The forward parameter names of the graph's inputs, in input order (``meta["input_name"]``,
    which compile() sets), or None when any is unknown."""
    names = [i.meta.get("input_name") for i in sorted(graph.inputs, key=lambda i: i.attrs.get("index", 0))]
    return names if names and all(isinstance(nm, str) for nm in names) else None


def collect_stats(graph: Graph, data: Any, nodes: Iterable[Node], *, bins: int = 4096,
                  batch_size: int = 256, device=None, progress: bool | None = None, allow_nonfinite: bool = False,
                  value_range: tuple[float, float] | None = None, what: str = "") -> dict[int, ActivationStats]:
    """Run the (non-temporal) graph on all calibration batches; return stats per node id.

    Every batch feeds every graph input (a graph of several inputs reads tuples or dicts of
    tensors: see ``iter_batches``, with the names from ``input_names``). ``allow_nonfinite``,
    ``value_range`` and ``what`` go to ``iter_batches`` (NaN/Inf rows refused unless allowed;
    values outside ``value_range`` refused).

    Deterministic for the same data; runs on ``device`` (default: where the graph's first
    parameter lives). Shows a progress bar (tqdm) on stderr when it is a terminal (or ``progress=True``)
    once it takes more than two seconds.
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

    n_inputs = max(len(graph.inputs), 1)
    with torch.no_grad():
        batches = iter_batches(data, batch_size, allow_nonfinite=allow_nonfinite, value_range=value_range, what=what,
                               n_inputs=n_inputs, names=input_names(graph))
        for x in progress_bar(batches, desc="calibrating", enabled=progress, delay=2.0):
            run(*(x if n_inputs > 1 else (x,)), observer=observe)
    return distributed.all_reduce_stats(stats)  # torch.distributed: as one process over every rank's data
