"""A report on one conversion: accuracy per T per technique, per-layer activity, operations and energy,
five pictures and a summary in markdown.

    path = snncompile.report.write_report("mnist", "/tmp/report")   # /tmp/report/summary.md

``write_report`` compiles the model with a couple of training-free techniques (the automatic
default and the 99.9th percentile without calibration: ``snncompile.low_latency``'s keys), one
SNN per T, measures their accuracy, analyses one of them (``snncompile.analyze``) and writes
accuracy_vs_T.png, firing_rates.png, activation_scatter.png, raster.png, synops.png and
summary.md into ``out_dir``.
"""
from __future__ import annotations

import pathlib
import sys
import time

import torch

from .analyze import Analysis, analyze
from .errors import ConfigError
from .few_steps import FEW_STEPS
from .low_latency import parse_steps, parse_techniques, pipeline_spec, technique
from .plots import plot_accuracy_vs_T, plot_activation_scatter, plot_firing_rates, plot_raster, plot_synops
from .report_data import DEFAULT_TECHNIQUES, accuracy_table, resolve_inputs
from .report_md import summary_markdown

__all__ = ["write_report", "PICTURES"]

PICTURES = ("accuracy_vs_T.png", "firing_rates.png", "activation_scatter.png", "raster.png", "synops.png")


class _Progress:
    """Steps of the report: a tqdm bar, a callable ``progress(step, done, total)``, or nothing."""

    def __init__(self, progress, total: int):
        self.total, self.done, self.bar, self.fn = total, 0, None, None
        if callable(progress) and not isinstance(progress, bool):
            self.fn = progress
        elif progress is True or (progress is None and _on_terminal()):
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc="snncompile report", unit="step", file=sys.stderr)
            except ImportError:
                pass
        elif progress not in (None, False):
            raise ConfigError(f"report: progress must be None (a bar on a terminal), True, False or a callable "
                              f"progress(step, done, total), got {progress!r}")

    def __call__(self, step: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(step, refresh=False)
            self.bar.update(1)
        if self.fn is not None:
            self.fn(step, self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _on_terminal() -> bool:
    """Whether stderr is a terminal (``snncompile.progress``'s rule, SNNCOMPILE_PROGRESS included,
    where that module exists)."""
    try:
        from .progress import progress_enabled
    except ImportError:
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty and isatty())
    return progress_enabled(None)


def _analysis_T(Ts: tuple[int, ...], analysis_T) -> int:
    if analysis_T is None:  # the largest few-step T: where the techniques differ and energy matters
        few = [T for T in Ts if T <= FEW_STEPS]
        return max(few) if few else max(Ts)
    if analysis_T not in Ts:
        raise ConfigError(f"report: analysis_T={analysis_T!r} must be one of T_values {list(Ts)}")
    return analysis_T


def write_report(model, out_dir, *, calib=None, data=None, labels=None, T_values=(1, 2, 4, 8, 16, 32),
                 techniques=None, backend: str = "auto", progress=None, analysis_T: int | None = None,
                 layer: str | None = None) -> pathlib.Path:
    """Write a conversion report into ``out_dir`` (created) and return the path of its summary.md.

    Takes ``model``: a registry name ("mnist", "mnist_cnn", "vgg_mnist", ...: the shipped
    checkpoint, with real MNIST digits by default: 1,000 calibration, 500 labelled test digits)
    or a trained nn.Module (then ``calib`` is needed); ``calib``, ``data``: tensors, ``(inputs,
    labels)`` pairs or files (.pt/.npy/.npz; see ``report_data.load_tensors``); ``labels`` for
    ``data``; ``T_values``: the time steps of the accuracy table; ``techniques``: keys of
    ``snncompile.low_latency.TECHNIQUES`` (default "auto", "baseline"; the first is analysed);
    ``backend``: the neuron backend; ``progress``: None (a tqdm bar when stderr is a terminal and
    tqdm is installed), True, False, or a callable ``progress(step, done, total)``;
    ``analysis_T``: the T whose SNN is analysed (default the largest of ``T_values`` up to
    snncompile.FEW_STEPS); ``layer``: the neuron layer of the scatter and raster (default the
    middle one). Guarantees: every file of ``PICTURES`` and summary.md are written; the
    summary's numbers are the Analysis' and the accuracy table's. Errors are ConfigErrors naming
    the argument (or the conversion's own errors for a model that does not convert).
    """
    t_start = time.perf_counter()
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"report: {str(out)!r} exists and is not a folder; give out_dir as a folder path")
    out.mkdir(parents=True, exist_ok=True)
    Ts = parse_steps(T_values)
    keys = parse_techniques(DEFAULT_TECHNIQUES if techniques is None else techniques)
    aT = _analysis_T(Ts, analysis_T)
    inputs = resolve_inputs(model, calib, data, labels)
    n_specs = len({pipeline_spec(technique(k).options, T) for k in keys for T in Ts})
    tick = _Progress(progress, n_specs + 3)
    agreement = inputs.y is None  # no labels: the SNN is measured against the ANN's own predictions
    try:
        y = _ann_predictions(inputs.model, inputs.x) if agreement else inputs.y
        table, snns, secs = accuracy_table(inputs.model, inputs.calib, inputs.x, y, Ts, keys, backend=backend,
                                           tick=tick)
        tick("accuracy measured")
        snn = snns[pipeline_spec(technique(keys[0]).options, aT)]
        t0 = time.perf_counter()
        with torch.no_grad():
            a = analyze(snn, (inputs.x, y), T=aT, ann=None if agreement else inputs.model)
        if agreement:
            a.label_source = "the ANN's predictions"
        secs["analyze"] = time.perf_counter() - t0
        tick("analysed")
        t0 = time.perf_counter()
        shown = _pictures(out, a, table, keys, layer)
        secs["plots"] = time.perf_counter() - t0
        tick("pictures written")
    finally:
        tick.close()
    secs["total"] = time.perf_counter() - t_start
    path = out / "summary.md"
    path.write_text(summary_markdown(inputs, a, table, keys, Ts, aT, snn, secs, backend, shown))
    return path


@torch.no_grad()
def _ann_predictions(model, x: torch.Tensor) -> torch.Tensor:
    """The ANN's classes for ``x`` (the labels of an unlabelled report: agreement with the ANN)."""
    out = [model(xb) for xb in x.split(500)]
    if not all(isinstance(o, torch.Tensor) and o.dim() == 2 for o in out):
        raise ConfigError("report: without labels the SNN is compared with the ANN's predictions, but the model does "
                          "not return logits [N, classes]; give labels= (or --data with labels)")
    return torch.cat(out).argmax(-1).cpu()


def _pictures(out: pathlib.Path, a: Analysis, table, keys, layer) -> str:
    """Write the five PNGs; returns the neuron layer shown in the scatter and the raster."""
    if not a.details:
        raise ConfigError("report: the analysed SNN has no neuron layer to show")
    names = list(a.details)
    chosen = names[len(names) // 2] if layer is None else layer
    if chosen not in a.details:
        raise ConfigError(f"report: layer {layer!r} is not a neuron layer of the SNN; choose one of {', '.join(names)}")
    curves = {technique(k).short: table[k] for k in keys}
    agree = a.label_source != "labels"
    plot_accuracy_vs_T(curves, out / "accuracy_vs_T.png", ann=None if agree else a.ann_accuracy,
                       title=("agreement with the ANN" if agree else "accuracy") + " vs T (one SNN per T)",
                       ylabel="agreement with the ANN (%)" if agree else "accuracy (%)")
    plot_firing_rates(a.rates(), out / "firing_rates.png", title=f"firing rate per layer (T={a.T})")
    d = a.details[chosen]
    plot_activation_scatter(d.ann, d.snn, out / "activation_scatter.png", layer=chosen, T=a.T)
    plot_raster(d.raster, out / "raster.png", layer=f"{chosen}, first sample")
    plot_synops(a.operations(), out / "synops.png", title=f"operations per layer per sample (T={a.T})")
    return chosen
