"""What ``snncompile.report.write_report`` runs on: the model, its calibration and test data, and the
accuracy table (one SNN per technique and T, each compiled once per distinct pipeline)."""
from __future__ import annotations

import os
import pathlib
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .convert import compile as compile_snn
from .errors import ConfigError
from .low_latency import parse_steps, parse_techniques, pipeline_spec, technique

__all__ = ["ReportInputs", "resolve_inputs", "load_tensors", "accuracy_table", "DEFAULT_TECHNIQUES",
           "MNIST_CALIB", "MNIST_TEST"]

#: the rows of the report's accuracy table: the automatic default, then the 99.9th percentile alone
DEFAULT_TECHNIQUES = ("auto", "baseline")
#: calibration digits and test digits the report takes for a shipped MNIST model (sized so the whole
#: report of the MNIST CNN takes well under a minute on 2 cores)
MNIST_CALIB, MNIST_TEST = 1000, 500


@dataclass
class ReportInputs:
    """The resolved inputs: ``name`` (shown), the ANN ``model``, ``calib`` inputs, test inputs
    ``x`` with labels ``y`` (None without), and what each is (``described``)."""
    name: str
    model: nn.Module
    calib: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor | None
    described: dict = field(default_factory=dict)


def load_tensors(source, what: str):
    """A tensor, an ``(x, y)`` pair or a file holding one: ``.pt``/``.pth`` (``torch.load`` with
    ``weights_only=True``: a tensor, a tuple/list ``(x, y)`` or a dict with ``x``/``inputs`` and
    ``y``/``labels``), ``.npy`` (an array) or ``.npz`` (arrays ``x`` and optionally ``y``).
    Returns ``(x, y or None)``; ConfigError for a missing file or an unknown layout."""
    if source is None:
        return None, None
    if isinstance(source, (str, os.PathLike)):
        p = pathlib.Path(source)
        if not p.is_file():
            raise ConfigError(f"report: no {what} file {str(p)!r}")
        if p.suffix in (".npy", ".npz"):
            import numpy as np
            loaded = np.load(p)
            source = torch.from_numpy(loaded) if p.suffix == ".npy" else \
                {k: torch.from_numpy(loaded[k]) for k in loaded.files}
        elif p.suffix in (".pt", ".pth"):
            try:
                source = torch.load(p, map_location="cpu", weights_only=True)
            except Exception as e:
                raise ConfigError(f"report: cannot read the {what} file {str(p)!r} ({e}); save tensors with "
                                  "torch.save(x, path) or torch.save((x, y), path)") from e
        else:
            raise ConfigError(f"report: the {what} file {str(p)!r} must be .pt/.pth (torch.save) or .npy/.npz")
    if isinstance(source, dict):
        x = next((source[k] for k in ("x", "inputs", "images") if k in source), None)
        y = next((source[k] for k in ("y", "labels", "targets") if k in source), None)
        source = (x, y) if y is not None else x
    if isinstance(source, torch.Tensor):
        return source, None
    if isinstance(source, (tuple, list)) and len(source) == 2 and all(isinstance(t, torch.Tensor) for t in source):
        return source[0], source[1]
    raise ConfigError(f"report: {what} must be a tensor, an (inputs, labels) pair of tensors or a file holding one, "
                      f"got {type(source).__name__}")


def _float_inputs(x: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0:
        raise ConfigError(f"report: {what} must be a non-empty tensor [N, ...], got "
                          f"{list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not x.is_floating_point():
        raise ConfigError(f"report: {what} has dtype {x.dtype}; give float inputs scaled as the model was trained")
    return x.float()


def resolve_inputs(model, calib=None, data=None, labels=None) -> ReportInputs:
    """The model and data a report runs on. ``model``: a registry name ("mnist", "mnist_cnn",
    "vgg_mnist"...; the shipped checkpoint) or a trained nn.Module. For a shipped MNIST model the
    defaults are real digits (``mnist_split()``): the first ``MNIST_CALIB`` training digits
    (unlabeled) and the first ``MNIST_TEST`` test digits with labels. ``calib``/``data``: tensors,
    ``(x, y)`` pairs or files (``load_tensors``); ``labels`` override the data's. An nn.Module
    needs ``calib``; without ``data`` the calibration inputs are analysed (without labels the
    report compares the SNN with the ANN's predictions)."""
    cx, _ = load_tensors(calib, "calibration")
    dx, dy = load_tensors(data, "data")
    if labels is not None:  # a tensor, or a file holding one (or an (x, y) pair: its y)
        lx, ly = load_tensors(labels, "labels")
        dy = lx if ly is None else ly
    described = {}
    if isinstance(model, str):
        from snncompile.models import MODELS, checkpoint_path, get_model

        from .demo import ALIASES
        name = ALIASES.get(model, model)
        if name not in MODELS:
            raise ConfigError(f"report: unknown model {model!r}; known: {', '.join(MODELS)} (aliases "
                              f"{', '.join(ALIASES)}), or pass a trained nn.Module")
        ckpt = checkpoint_path(name)
        if ckpt is None or not ckpt.is_file():
            raise ConfigError(f"report: {name} has no trained checkpoint here; train one "
                              f"(python -m snncompile.recipes.train {name}) or pass your trained nn.Module")
        net = get_model(name, pretrained=True).eval()
        described["model"] = f"{name} (shipped checkpoint {ckpt.name})"
        if tuple(MODELS[name].input_shape) == (1, 28, 28) and (cx is None or dx is None):
            from snncompile.models.data import mnist_split
            x_tr, _, x_te, y_te = mnist_split()
            if cx is None:
                cx = x_tr[:MNIST_CALIB]
                described["calib"] = f"the first {len(cx)} real MNIST training digits (unlabeled)"
            if dx is None:
                dx, dy = x_te[:MNIST_TEST], (y_te[:MNIST_TEST] if dy is None else dy)
                described["data"] = f"the first {len(dx)} real MNIST test digits, with their labels"
        elif cx is None:
            raise ConfigError(f"report: no data is known for {name}; give calib= (and data=, labels=)")
    elif isinstance(model, nn.Module):
        name, net = type(model).__name__, model
        described["model"] = f"a {name} given as an nn.Module"
        if cx is None:
            raise ConfigError("report: give calib= (calibration inputs) for a model given as an nn.Module")
    else:
        raise ConfigError(f"report: model must be a registry name (e.g. 'mnist') or an nn.Module, got "
                          f"{type(model).__name__}")
    cx = _float_inputs(cx, "the calibration data")
    if dx is None:
        dx, dy = cx, None
        described.setdefault("data", f"the {len(cx)} calibration inputs (no test data given: the SNN is compared with "
                                     "the ANN's predictions)")
    dx = _float_inputs(dx, "the data")
    if dy is not None and (not isinstance(dy, torch.Tensor) or dy.is_floating_point() or dy.dim() != 1
                           or dy.shape[0] != dx.shape[0]):
        raise ConfigError(f"report: labels must be an integer tensor with one class index per input row ({dx.shape[0]}), "
                          f"got {list(dy.shape) if isinstance(dy, torch.Tensor) else type(dy).__name__}")
    described.setdefault("calib", f"{len(cx)} calibration inputs given")
    described.setdefault("data", f"{len(dx)} inputs given" + (" with labels" if dy is not None else
                                                               " (no labels: compared with the ANN's predictions)"))
    return ReportInputs(name, net, cx, dx, None if dy is None else dy.long(), described)


def accuracy_table(model, calib, x, y, T_values, techniques, *, backend="auto", tick=None):
    """``(table, snns, seconds)``: ``table[key][T]`` the accuracy (fraction) of the SNN compiled
    for T with technique ``key``'s options, run T steps on ``(x, y)`` (None for y: no table,
    only the SNNs); ``snns[pipeline string]`` the SNNs, each compiled once and run once (the
    accuracy at each of its Ts read from one run of its largest T: the running mean after t steps
    is the output of a t-step run); ``seconds``: {"compile", "run"}. ``tick(label)`` after each
    compile."""
    Ts, keys = parse_steps(T_values), parse_techniques(techniques)
    specs = {(k, T): pipeline_spec(technique(k).options, T) for k in keys for T in Ts}
    snns, secs = {}, {"compile": 0.0, "run": 0.0}
    for (k, T), spec in specs.items():
        if spec not in snns:
            torch.manual_seed(0)
            t0 = time.perf_counter()
            snns[spec] = compile_snn(model, calib, T=T, backend=backend, **technique(k).options)
            secs["compile"] += time.perf_counter() - t0
            if tick is not None:
                tick(f"compiled {technique(k).short} for T={T}")
    if y is None:
        return None, snns, secs
    per_spec = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        for spec, snn in snns.items():
            steps = max(T for (_, T), s in specs.items() if s == spec)
            preds = torch.cat([snn(xb, T=steps, return_all_steps=True).argmax(-1) for xb in x.split(500, dim=0)], 1)
            per_spec[spec] = (preds == y.to(preds.device).reshape(1, -1)).double().mean(1).cpu()
    secs["run"] = time.perf_counter() - t0
    table = {k: {T: float(per_spec[specs[(k, T)]][T - 1]) for T in Ts} for k in keys}
    return table, snns, secs
