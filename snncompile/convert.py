"""ANN -> SNN conversion in one call, and the default conversion pipeline written out once."""
from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn

from .calibrate import first_batch
from .errors import ConfigError
from .frontend.fx import trace
from .pipeline import PassContext, Pipeline, get_pass
from .runtime import SpikingModule

__all__ = ["conversion_pipeline", "compile", "choose_backend"]


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
            print_after=None, dump_dir: str | None = None, max_chunk_bytes: int = 64 << 20) -> SpikingModule:
    """Convert a trained ReLU network into a rate-coded SNN of soft-reset IF neurons.

    Takes the model (never modified), calibration inputs (tensor, list, or DataLoader of tensors
    or (x, y)), the default number of steps T and options for every pass (see
    ``conversion_pipeline``); ``pipeline`` replaces the default passes. Returns a SpikingModule
    whose ``snn(x)`` approximates ``model(x)`` better as T grows; ``snn.pipeline`` keeps every
    stage for printing and diffing.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"compile: expected a torch.nn.Module, got {type(model).__name__}")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    x0 = example_input if example_input is not None else first_batch(calibration_data)
    graph = trace(model, x0.to(device))
    if pipeline is None:
        pipe = conversion_pipeline(mode=normalize, p=percentile, granularity=granularity, scale=scale,
                                   v_init=v_init, encoding=encoding, hoist=hoist,
                                   print_after=print_after, dump_dir=dump_dir)
    else:
        pipe = pipeline if isinstance(pipeline, Pipeline) else Pipeline(pipeline, print_after=print_after,
                                                                         dump_dir=dump_dir)
    ctx = PassContext(calibration_data=calibration_data, T=T, device=device)
    snn_graph = pipe.run(graph, ctx)
    snn = SpikingModule(snn_graph, T, backend=choose_backend(backend, device), pipeline=pipe,
                        max_chunk_bytes=max_chunk_bytes)
    return snn.to(device)
