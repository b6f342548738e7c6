"""Pictures of an SNN's behaviour, each from the data it shows (``pip install 'snncompile[plot]'``).

Every function takes the numbers it plots (an ``Analysis`` gives them: ``a.accuracy``,
``a.rates()``, ``a.operations()``, ``a.details[layer]``) and a path ending in ``.png``, writes the
PNG (parent folders created) and returns its path. matplotlib is imported inside the functions,
and only its Agg canvas is used: no window ever opens and pyplot's global state is untouched.
"""
from __future__ import annotations

import math
import os
import pathlib
from typing import Mapping

import torch

from .errors import ConfigError

__all__ = ["plot_accuracy_vs_T", "plot_firing_rates", "plot_activation_scatter", "plot_raster", "plot_synops"]


def _figure(size=(6.4, 4.0)):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ConfigError(f"snncompile's plots need matplotlib ({e}); install it with pip install 'snncompile[plot]'") \
            from e
    fig = Figure(figsize=size, dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _path(path, what: str) -> pathlib.Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"{what}: path must be a file path ending in .png, got {type(path).__name__}")
    p = pathlib.Path(path)
    if p.suffix.lower() != ".png":
        raise ConfigError(f"{what}: writes a PNG; give a path ending in .png, got {str(p)!r}")
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _save(fig, p: pathlib.Path) -> pathlib.Path:
    fig.tight_layout()
    fig.savefig(p, format="png")
    return p


def _finite(v, what: str, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{what}: {name} must be a finite number, got {v!r}")
    return float(v)


def _named_values(values, what: str, name: str) -> dict[str, float]:
    if not isinstance(values, Mapping) or not values:
        raise ConfigError(f"{what}: give {name} as a non-empty dict {{layer name: value}}, got "
                          f"{type(values).__name__ if not isinstance(values, Mapping) else 'an empty dict'}")
    return {str(k): _finite(v, what, f"{name}[{k!r}]") for k, v in values.items()}


def plot_accuracy_vs_T(curves: Mapping[str, Mapping[int, float]], path, *, ann: float | None = None,
                       title: str = "accuracy vs time steps", ylabel: str = "accuracy (%)") -> pathlib.Path:
    """One line per technique (or normalization): ``curves[label][T]`` is the accuracy, a fraction
    in [0, 1] (as ``Analysis.accuracy``); ``ann``: the ANN's, drawn as a dashed line. T on a log2
    axis. Returns the PNG's path; ConfigError for empty curves, T that are not positive ints,
    accuracies outside [0, 1]."""
    what = "plot_accuracy_vs_T"
    p = _path(path, what)
    if not isinstance(curves, Mapping) or not curves:
        raise ConfigError(f"{what}: give curves as a non-empty dict {{label: {{T: accuracy}}}}")
    checked = {}
    for label, row in curves.items():
        if not isinstance(row, Mapping) or not row:
            raise ConfigError(f"{what}: curve {label!r} must be a non-empty dict {{T: accuracy}}")
        pts = []
        for T, acc in row.items():
            if isinstance(T, bool) or not isinstance(T, int) or T < 1:
                raise ConfigError(f"{what}: curve {label!r} has T={T!r}; time steps are positive ints")
            acc = _finite(acc, what, f"the accuracy of {label!r} at T={T}")
            if not 0.0 <= acc <= 1.0:
                raise ConfigError(f"{what}: the accuracy of {label!r} at T={T} is {acc}; give fractions in [0, 1]")
            pts.append((T, acc))
        checked[str(label)] = sorted(pts)
    fig = _figure()
    ax = fig.add_subplot()
    for label, pts in checked.items():
        ax.plot([t for t, _ in pts], [100 * a for _, a in pts], marker="o", label=label)
    if ann is not None:
        ax.axhline(100 * _finite(ann, what, "ann"), color="k", linestyle="--", linewidth=1,
                   label=f"ANN {100 * ann:.2f}%")
    ax.set_xscale("log", base=2)
    Ts = sorted({t for pts in checked.values() for t, _ in pts})
    ax.set_xticks(Ts, [str(t) for t in Ts])
    ax.set_xlabel("time steps T")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, p)


def plot_firing_rates(rates: Mapping[str, float], path, *, title: str = "firing rate per layer") -> pathlib.Path:
    """A bar per neuron layer: ``rates[layer]`` in spikes per neuron per step (``Analysis.rates()``).
    Returns the PNG's path; ConfigError for an empty dict or a negative or non-finite rate."""
    what = "plot_firing_rates"
    p = _path(path, what)
    vals = _named_values(rates, what, "rates")
    if any(v < 0 for v in vals.values()):
        raise ConfigError(f"{what}: a firing rate is negative ({min(vals.values())}); rates are spikes per neuron per "
                          "step, >= 0")
    fig = _figure()
    ax = fig.add_subplot()
    names = list(vals)
    bars = ax.bar(range(len(names)), [vals[n] for n in names], color="tab:blue")
    ax.bar_label(bars, [f"{vals[n]:.3f}" for n in names], fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("spikes / neuron / step")
    ax.set_title(title)
    ax.margins(y=0.15)
    return _save(fig, p)


def _tensor(v, what: str, name: str) -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        raise ConfigError(f"{what}: {name} must be a torch.Tensor, got {type(v).__name__}")
    if v.numel() == 0:
        raise ConfigError(f"{what}: {name} is empty")
    return v.detach().float().cpu()


def plot_activation_scatter(ann: torch.Tensor, snn: torch.Tensor, path, *, layer: str = "",
                            T: int | None = None, max_points: int = 20000) -> pathlib.Path:
    """ANN activation (x) against what the SNN's rate stands for (y: mean spikes per step times the
    threshold), one point per neuron and sample, for one layer (``Analysis.details[layer].ann``
    and ``.snn``, the same shape). At most ``max_points`` points (an even subsample); the
    diagonal y = x is where a perfect conversion lies. Returns the PNG's path; ConfigError for
    tensors that are not the same shape, empty, or not finite."""
    what = "plot_activation_scatter"
    p = _path(path, what)
    a, s = _tensor(ann, what, "ann"), _tensor(snn, what, "snn")
    if a.shape != s.shape:
        raise ConfigError(f"{what}: ann has shape {list(a.shape)} but snn {list(s.shape)}; give the two values of the "
                          "same neurons (Analysis.details[layer].ann and .snn)")
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(s).all())):
        raise ConfigError(f"{what}: the values hold NaN or Inf")
    a, s = a.flatten(), s.flatten()
    if a.numel() > max_points:
        idx = torch.linspace(0, a.numel() - 1, max_points).long()
        a, s = a[idx], s[idx]
    fig = _figure((5.0, 5.0))
    ax = fig.add_subplot()
    ax.scatter(a.numpy(), s.numpy(), s=3, alpha=0.3, color="tab:blue", edgecolors="none")
    hi = max(float(a.max()), float(s.max()), 1e-6)
    lo = min(float(a.min()), float(s.min()), 0.0)
    ax.plot([lo, hi], [lo, hi], color="k", linestyle="--", linewidth=1, label="y = x")
    ax.set_xlabel("ANN activation (normalized units)")
    ax.set_ylabel("SNN rate x threshold" + (f" (T={T})" if T else ""))
    ax.set_title(f"ANN vs SNN{': ' + layer if layer else ''}")
    ax.legend(loc="upper left")
    return _save(fig, p)


def plot_raster(spikes: torch.Tensor, path, *, layer: str = "", neurons: int = 24) -> pathlib.Path:
    """A spike raster: ``spikes [T, n]`` (one sample's steps x a layer's neurons, flat, as
    ``Analysis.details[layer].raster``); up to ``neurons`` of them are drawn, spread evenly over
    the neurons that fire at least once (silent ones fill up when fewer fire). A multi-spike
    count is drawn larger, a negative (signed) spike in red. Returns the PNG's path; ConfigError
    for a tensor that is not 2-D or holds non-finite values."""
    what = "plot_raster"
    p = _path(path, what)
    s = _tensor(spikes, what, "spikes")
    if s.dim() != 2:
        raise ConfigError(f"{what}: spikes must be [T, neurons] (2-D), got shape {list(s.shape)}")
    if not bool(torch.isfinite(s).all()):
        raise ConfigError(f"{what}: spikes hold NaN or Inf")
    if isinstance(neurons, bool) or not isinstance(neurons, int) or neurons < 1:
        raise ConfigError(f"{what}: neurons must be a positive int, got {neurons!r}")
    active = torch.nonzero(s.abs().sum(0) > 0).flatten()
    if active.numel() >= neurons:
        chosen = active[torch.linspace(0, active.numel() - 1, neurons).round().long()]
    else:
        silent = torch.nonzero(s.abs().sum(0) == 0).flatten()[: neurons - active.numel()]
        chosen = torch.cat([active, silent]).sort().values
    sub = s[:, chosen]
    fig = _figure((6.4, max(2.5, 0.18 * len(chosen) + 1.2)))
    ax = fig.add_subplot()
    t, k = torch.nonzero(sub, as_tuple=True)
    vals = sub[t, k]
    ax.scatter((t + 1).numpy(), k.numpy(), s=(18 * vals.abs()).numpy(), marker="|",
               c=["tab:red" if v < 0 else "k" for v in vals.tolist()], linewidths=1.5)
    ax.set_yticks(range(len(chosen)), [str(int(i)) for i in chosen], fontsize=6)
    ax.set_xlim(0.5, s.shape[0] + 0.5)
    ax.set_ylim(-0.5, len(chosen) - 0.5)
    ax.set_xlabel("time step")
    ax.set_ylabel("neuron (flat index)")
    ax.set_title(f"spike raster{': ' + layer if layer else ''} ({int(active.numel())} of {s.shape[1]} neurons fire)")
    return _save(fig, p)


def plot_synops(operations: Mapping[str, Mapping[str, float]], path, *,
                title: str = "operations per layer (per sample)") -> pathlib.Path:
    """Bars per weighted layer: the SNN's synaptic operations (accumulates), the SNN's
    multiply-accumulates and the ANN's multiply-accumulates beside them, log scale (a zero count
    draws no bar);
    ``operations[layer] = {"synops", "macs", "ann_macs"}`` (``Analysis.operations()``; "macs" may
    be left out). Returns the PNG's path; ConfigError for an empty dict, a missing key or a
    negative count."""
    what = "plot_synops"
    p = _path(path, what)
    if not isinstance(operations, Mapping) or not operations:
        raise ConfigError(f"{what}: give operations as a non-empty dict {{layer: {{'synops', 'ann_macs'}}}}")
    rows = {}
    for name, ops in operations.items():
        if not isinstance(ops, Mapping) or "synops" not in ops or "ann_macs" not in ops:
            raise ConfigError(f"{what}: operations[{name!r}] must be a dict with 'synops' and 'ann_macs' (and "
                              "optionally 'macs'), as Analysis.operations() gives")
        row = {k: _finite(ops.get(k, 0.0), what, f"operations[{name!r}][{k!r}]") for k in ("synops", "macs", "ann_macs")}
        if any(v < 0 for v in row.values()):
            raise ConfigError(f"{what}: operations[{name!r}] has a negative count")
        rows[str(name)] = row
    fig = _figure()
    ax = fig.add_subplot()
    names, w = list(rows), 0.27
    for j, (key, label, color) in enumerate((("synops", "SNN synops (AC)", "tab:orange"),
                                             ("macs", "SNN MACs", "tab:red"), ("ann_macs", "ANN MACs", "tab:blue"))):
        xs = [i + (j - 1) * w for i in range(len(names))]
        ax.bar(xs, [rows[n][key] if rows[n][key] > 0 else float("nan") for n in names], w, label=label, color=color)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("operations per sample")
    ax.set_title(title)
    ax.legend()
    return _save(fig, p)
