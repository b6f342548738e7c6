"""Activation statistics over calibration data: one streaming pass through the ANN (interpreted).

``collect_stats(graph, data, nodes)`` runs the graph's ANN (snncompile.interpret: the op table's
own targets, node by node; no emitter) on every calibration batch and feeds
the outputs of the requested nodes into ``ActivationStats`` (streaming max and histograms,
bounded memory; see snncompile/stats.py for the accuracy of the percentile estimate).
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator

import torch

from .errors import CalibrationError
from .interpret import Interpreter, is_temporal
from .ir import Graph, Node
from .stats import ActivationStats

__all__ = ["iter_batches", "collect_stats", "first_batch"]


def iter_batches(data: Any, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """Yield input batches from a tensor (split into ``batch_size`` rows), a list of tensors,
    or any iterable (e.g. a DataLoader) of tensors or ``(x, y, ...)`` tuples (x is taken)."""
    if data is None:
        raise CalibrationError("no calibration data; pass a tensor, a list of tensors or a DataLoader "
                               "of inputs (a few hundred training images is enough)")
    if isinstance(data, torch.Tensor):
        if data.dim() == 0 or data.shape[0] == 0:
            raise CalibrationError("calibration tensor is empty; give at least one input row")
        yield from data.split(batch_size)
        return
    n = 0
    for item in data:
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor):
            raise CalibrationError(f"calibration batch {n} is a {type(x).__name__}; expected a tensor or (x, y)")
        n += 1
        yield x
    if n == 0:
        raise CalibrationError("calibration data yielded no batches; give at least one input batch")


def first_batch(data: Any) -> torch.Tensor:
    """The first calibration batch (used as the example input for tracing)."""
    return next(iter_batches(data, batch_size=8))


def collect_stats(graph: Graph, data: Any, nodes: Iterable[Node], *, bins: int = 4096,
                  batch_size: int = 256, device=None, progress: bool | None = None) -> dict[int, ActivationStats]:
    """Run the (non-temporal) graph on all calibration batches; return stats per node id.

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
        for k, x in enumerate(iter_batches(data, batch_size), 1):
            run(x, observer=observe)
            if progress and time.perf_counter() - t0 > 2.0:
                print(f"\rcalibrating: {k} batches", end="", file=sys.stderr, flush=True)
                shown = True
    if shown:
        print(file=sys.stderr)
    return stats
