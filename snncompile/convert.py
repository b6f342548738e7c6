"""ANN -> SNN conversion in one call, and the default conversion pipeline written out once."""
from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn

from .calibrate import peek_first_batch
from .errors import ConfigError
from .frontend.fx import trace
from .interpret import is_temporal
from .ir import Graph
from .pipeline import PassContext, Pipeline, get_pass
from .runtime import SpikingModule
from .runtime import check_steps as runtime_check_steps

__all__ = ["conversion_pipeline", "compile", "choose_backend", "check_steps", "check_runnable"]


def check_steps(T: Any, where: str) -> int:
    """``T`` as an int (``runtime.check_steps``), the error naming the entry point ``where``."""
    return runtime_check_steps(T, f"{where}: T")


def check_runnable(graph: Graph, pipe: Pipeline, where: str) -> None:
    """ConfigError when the pipeline's result is not an SNN the runtime can run: a graph with no
    op that sees time (no encode, neuron or readout) is still the ANN."""
    if not is_temporal(graph):
        raise ConfigError(f"{where}: the pipeline {str(pipe)!r} leaves a graph with no time steps (no encode-input, "
                          "neurons or readout: it is still the ANN), which the runtime cannot run — add relu-to-if "
                          "(or insert-surrogate), encode-input and readout; conversion_pipeline() and "
                          "training_pipeline() show the order")


def _warn_train_mode(model: nn.Module) -> None:
    """One warning when a module whose output depends on the mode (batch norm, dropout) is in train mode."""
    kinds = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd)
    live = [f"{repr(p) if p else 'the model'} ({type(m).__name__})" for p, m in model.named_modules()
            if m.training and isinstance(m, kinds)]
    if live:
        more = f" and {len(live) - 2} more" if len(live) > 2 else ""
        warnings.warn(f"compile: the model is in train mode ({', '.join(live[:2])}{more}); it is converted as in "
                      "eval mode (batch norm with its running statistics, no dropout) — call model.eval() before "
                      "compile to say that is what you mean", stacklevel=3)


def conversion_pipeline(*, mode: str = "percentile", p: float = 99.9, granularity: str = "channel",
                        scale: float = 1.0, v_init: float = 0.5, encoding: str = "direct",
                        hoist: bool = True, **instruments) -> Pipeline:
    """The default ANN->SNN pipeline; ``instruments`` go to Pipeline (print_after, dump_dir...)."""
    passes = [
        # one spelling per op; constants folded, so later passes match simple patterns
        get_pass("canonicalize"),
        # BN folds into its conv before any weight is rescaled
        get_pass("fold-batchnorm"),
        # max pool before the ReLU where the current is static: exact, and the neuron sees it
        get_pass("swap-maxpool-relu"),
        # avgpool -> sum pooling; its 1/k^2 moves into the next layer's weights
        get_pass("avgpool-to-sumpool"),
        # statistics are taken on the graph as it will spike (after the rewrites above)
        get_pass("normalize", mode=mode, p=p, granularity=granularity, scale=scale),
        # every ReLU -> soft-reset IF neuron, threshold 1 (weights now carry the scales)
        get_pass("relu-to-if", v_init=v_init),
        # the other max pools now read spikes: gate them by spike counts so their rates converge
        get_pass("spike-maxpool"),
        # the input becomes T steps; then the last layer integrates instead of spiking
        get_pass("encode-input", method=encoding),
        get_pass("readout"),
    ]
    if hoist:
        # it needs the final set of neurons and encodings to know what is static
        passes.append(get_pass("hoist-static"))
    # last: a neuron and the sum pool reading its spikes become one op (spikes never stored)
    passes.append(get_pass("fuse-neuron-sumpool"))
    return Pipeline(passes, **instruments)


def choose_backend(backend: str, device: torch.device) -> str:
    """Resolve "auto": CuPy kernels on CUDA when CuPy imports; else the fused CPU loop on the
    CPU when a C compiler works; else the torch reference (with one warning on CUDA)."""
    if backend not in ("auto", "torch", "cupy", "cpu"):
        raise ConfigError(f"backend must be 'auto', 'torch', 'cupy' or 'cpu', got {backend!r}")
    if backend != "auto":
        return backend
    if device.type == "cuda":
        try:
            import cupy  # noqa: F401
            return "cupy"
        except Exception:
            warnings.warn("snncompile: CuPy is not importable, so neurons run on the torch reference path "
                          "(slower); install snncompile[cuda12] or [cuda13] for the fused kernels", stacklevel=3)
            return "torch"
    try:
        from .kernels.cpu import cpu_kernel_available
    except ImportError:
        return "torch"
    return "cpu" if cpu_kernel_available() else "torch"


def compile(model: nn.Module, calibration_data: Any, T: int = 32, *, example_input: torch.Tensor | None = None,
            normalize: str = "percentile", percentile: float = 99.9, granularity: str = "channel",
            scale: float = 1.0, v_init: float = 0.5, encoding: str = "direct", hoist: bool = True,
            backend: str = "auto", pipeline: Pipeline | str | None = None, device=None,
            print_after=None, dump_dir: str | None = None, max_chunk_bytes: int = 64 << 20,
            allow_nonfinite: bool = False) -> SpikingModule:
    """Convert a trained ReLU network into a rate-coded SNN of soft-reset IF neurons.

    Takes the model (never modified), calibration inputs (tensor, list, or DataLoader of tensors
    or (x, y)), the default number of steps T and options for every pass (see
    ``conversion_pipeline``); ``pipeline`` replaces the default passes. Returns a SpikingModule
    whose ``snn(x)`` approximates ``model(x)`` better as T grows; ``snn.pipeline`` keeps every
    stage for printing and diffing.

    Calibration data may be a generator or iterator (read once; its first batch is the example
    input and is calibrated on too) or an ``(inputs, labels)`` pair. Batches with NaN or Inf are
    refused unless ``allow_nonfinite`` (then those rows are skipped, with a warning, and the SNN
    runs such inputs too). A model with batch norm or dropout in train mode is converted as in
    eval mode, with a warning.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"compile: expected a torch.nn.Module, got {type(model).__name__}")
    T = check_steps(T, "compile")
    if pipeline is not None and not isinstance(pipeline, (Pipeline, str)):
        raise ConfigError(f"compile: pipeline must be a Pipeline or a spec string, got {type(pipeline).__name__}")
    _warn_train_mode(model)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    if example_input is None:
        x0, calibration_data = peek_first_batch(calibration_data, allow_nonfinite=allow_nonfinite)
    else:
        x0 = example_input
    graph = trace(model, x0.to(device))
    if pipeline is None:
        pipe = conversion_pipeline(mode=normalize, p=percentile, granularity=granularity, scale=scale,
                                   v_init=v_init, encoding=encoding, hoist=hoist,
                                   print_after=print_after, dump_dir=dump_dir)
    else:
        pipe = pipeline if isinstance(pipeline, Pipeline) else Pipeline(pipeline, print_after=print_after,
                                                                         dump_dir=dump_dir)
    ctx = PassContext(calibration_data=calibration_data, T=T, device=device,
                      options={"allow_nonfinite": bool(allow_nonfinite)})
    snn_graph = pipe.run(graph, ctx)
    check_runnable(snn_graph, pipe, "compile")
    snn = SpikingModule(snn_graph, T, backend=choose_backend(backend, device), pipeline=pipe,
                        max_chunk_bytes=max_chunk_bytes)
    if allow_nonfinite:
        snn.allow_nonfinite = True  # the runtime's own check of NaN/Inf inputs, where it has one
    return snn.to(device)
