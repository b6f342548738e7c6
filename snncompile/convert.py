"""ANN -> SNN conversion in one call, and the default conversion pipeline written out once."""
from __future__ import annotations

import inspect
import os
import warnings
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from .calibrate import peek_first_batch
from .errors import ConfigError
from .few_steps import resolve_choice
from .frontend.fx import trace
from .interpret import is_temporal
from .ir import Graph
from .pipeline import PassContext, Pipeline, get_pass
from .runtime import SpikingModule
from .runtime import check_steps as runtime_check_steps

__all__ = ["conversion_pipeline", "compile", "choose_backend", "check_steps", "check_runnable", "check_model",
           "is_onnx_model", "forward_input_names", "leaf_types", "graph_of", "example_on", "model_device",
           "encoding_spec"]


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
                        hoist: bool = True, calibrate: str = "none", T: int | None = None,
                        max_spikes: int = 1, **instruments) -> Pipeline:
    """The default ANN->SNN pipeline; ``instruments`` go to Pipeline (print_after, dump_dir...).
    ``encoding`` is a method, or a list of methods, one per input (see ``encoding_spec``).
    ``calibrate`` ("none", "bias", "potential", "both") adds calibrate-bias after the readout;
    ``mode="auto"`` or ``calibrate="auto"`` take ``few_step_choice(T)`` (T needed). A given T is
    written into the passes that choose for it (normalize mode "mse", calibrate-bias).
    ``max_spikes`` > 1 converts to multi-spike neurons (family ``multi_if``: up to that many
    spikes a step, every one counted in firing rates), an opt-in family."""
    encoding = encoding_spec(encoding, "conversion_pipeline")
    mode, calibrate = resolve_choice(mode, calibrate, T, encoding, "conversion_pipeline")
    for_T = {} if T is None else {"T": int(T)}
    norm = dict(mode=mode, p=p, granularity=granularity, scale=scale)
    if isinstance(max_spikes, bool) or not isinstance(max_spikes, int) or max_spikes < 1:
        raise ConfigError(f"conversion_pipeline: max_spikes must be an int >= 1 (1: one spike a step, the IF neuron), "
                          f"got {max_spikes!r}")
    neuron = {} if max_spikes == 1 else {"neuron": "multi_if", "params": f"max_spikes={max_spikes}"}
    if mode == "mse":  # it chooses λ for the steps, the starting membrane and the spikes the neurons will have
        norm.update(for_T, v_init=v_init, **({"max_spikes": max_spikes} if max_spikes > 1 else {}))
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
        get_pass("normalize", **norm),
        # every ReLU -> soft-reset IF neuron, threshold 1 (weights now carry the scales)
        get_pass("relu-to-if", v_init=v_init, **neuron),
        # the other max pools now read spikes: gate them by spike counts so their rates converge
        get_pass("spike-maxpool"),
        # the input becomes T steps; then the last layer integrates instead of spiking
        get_pass("encode-input", method=encoding),
        get_pass("readout"),
    ]
    if calibrate != "none":
        # layer by layer, the SNN's mean rates brought to the ANN's (needs the whole SNN, unlowered)
        passes.append(get_pass("calibrate-bias", what=calibrate, **for_T))
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


def is_onnx_model(model: Any) -> bool:
    """True for a str or os.PathLike path ending in ".onnx" and for an ``onnx.ModelProto`` (told
    by its type, so onnx is not imported for a torch model)."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model).lower().endswith(".onnx")
    t = type(model)
    return t.__name__ == "ModelProto" and t.__module__.split(".")[0] == "onnx"


def check_model(model: Any, where: str) -> bool:
    """True for an ONNX model (see ``is_onnx_model``), False for an nn.Module; ConfigError for
    anything else, naming what ``where`` takes."""
    if is_onnx_model(model):
        return True
    if not isinstance(model, nn.Module):
        shown = f" {os.fspath(model)!r}" if isinstance(model, (str, os.PathLike)) else ""
        raise ConfigError(f"{where}: expected a torch.nn.Module, a path to a .onnx file or an onnx.ModelProto, got "
                          f"{type(model).__name__}{shown}")
    return False


def forward_input_names(model: nn.Module) -> list[str]:
    """The tensors ``model.forward`` takes: its positional parameters without a default value, in
    order (``["x"]`` when the signature cannot be read or has none). Their number decides how
    calibration tuples read (see ``snncompile.calibrate.iter_batches``)."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return ["x"]
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]
    return names or ["x"]


def leaf_types(leaf_modules: Any, where: str) -> tuple[type, ...]:
    """``leaf_modules`` (one nn.Module subclass or a sequence of them) as a tuple of types;
    ConfigError naming the bad item otherwise."""
    items = (leaf_modules,) if isinstance(leaf_modules, type) else leaf_modules
    if items is None:
        return ()
    try:
        items = tuple(items)
    except TypeError:
        items = (items,)
    for t in items:
        if not (isinstance(t, type) and issubclass(t, nn.Module)):
            raise ConfigError(f"{where}: leaf_modules takes torch.nn.Module subclasses (the classes, such as "
                              f"MyBlock, not instances), got {t!r}")
    return items


def example_on(x0: Any, device: torch.device, names: list[str], where: str) -> Any:
    """The example input on ``device``: a tensor, or a tuple of tensors from a tuple, list or dict
    (keyed by forward's parameter ``names``); ConfigError naming a non-tensor."""
    if isinstance(x0, Mapping):
        missing = [n for n in names if n not in x0]
        if missing:
            raise ConfigError(f"{where}: example_input is a dict without {missing}; forward takes {names}")
        x0 = tuple(x0[n] for n in names)
    xs = tuple(x0) if isinstance(x0, (tuple, list)) else (x0,)
    for k, x in enumerate(xs):
        if not isinstance(x, torch.Tensor):
            raise ConfigError(f"{where}: example_input{f' item {k}' if len(xs) > 1 else ''} is a {type(x).__name__}; "
                              "give a tensor (or a tuple of tensors, one per input of forward) with a batch dimension")
    moved = tuple(x.to(device) for x in xs)
    return moved if isinstance(x0, (tuple, list)) else moved[0]


def graph_of(model: Any, example_input: Any, leaf_modules: tuple, where: str) -> Graph:
    """The IR graph of ``model``: an ONNX path or ModelProto is read by
    ``snncompile.frontend.onnx.from_onnx`` (imported here: onnx stays optional; ``example_input``
    is not needed), an nn.Module is traced with ``example_input`` and ``leaf_modules``. In a graph of
    several inputs each carries its name in ``meta["input_name"]`` (forward's parameter, or the
    ONNX input's): calibration dicts and the runtime's messages use it."""
    if is_onnx_model(model):
        if leaf_modules:
            raise ConfigError(f"{where}: leaf_modules applies to torch models that are traced, not to ONNX models")
        try:
            from .frontend.onnx import from_onnx
        except ImportError as e:
            raise ConfigError(f"{where}: reading an ONNX model needs snncompile's ONNX frontend and the onnx package "
                              f"({e}); pip install onnx") from None
        graph = from_onnx(model)
        names = [i.source.module_path if i.source is not None and i.source.code == "input" else None
                 for i in _ordered_inputs(graph)]
    else:
        graph = trace(model, example_input, leaf_modules=leaf_modules)
        names = forward_input_names(model)
    if len(graph.inputs) > 1:  # (one input needs no name: messages say "input", batches are tensors)
        for inp, name in zip(_ordered_inputs(graph), names):
            if name:
                inp.meta.setdefault("input_name", name)
    return graph


def _ordered_inputs(graph: Graph) -> list:
    return sorted(graph.inputs, key=lambda i: i.attrs.get("index", 0))


def model_device(model: Any, device: Any, onnx: bool) -> torch.device:
    """``device``, else where the model's first parameter lives (the CPU for ONNX models and
    models without parameters)."""
    if device is None and not onnx:
        device = next((p.device for p in model.parameters()), None)
    return torch.device(device if device is not None else "cpu")


def compile(model: Any, calibration_data: Any, T: int = 32, *, example_input: Any = None,
            normalize: str = "auto", percentile: float = 99.9, granularity: str = "channel",
            scale: float = 1.0, v_init: float = 0.5, calibrate: str = "auto", max_spikes: int = 1, encoding: str | Sequence[str] = "direct", hoist: bool = True,
            backend: str = "auto", pipeline: Pipeline | str | None = None, device=None,
            print_after=None, dump_dir: str | None = None, max_chunk_bytes: int = 64 << 20,
            allow_nonfinite: bool = False, leaf_modules: Any = ()) -> SpikingModule:
    """Convert a trained ReLU network into a rate-coded SNN of soft-reset IF neurons.

    Takes the model (an nn.Module, never modified, or an ONNX model: a path ending in ".onnx" or
    an ``onnx.ModelProto``, read by ``snncompile.frontend.onnx.from_onnx``), calibration inputs,
    the default number of steps T and options for every pass (see ``conversion_pipeline``);
    ``normalize="auto"`` and ``calibrate="auto"`` apply ``few_step_choice(T)``: at T <= 16 the
    thresholds are chosen for T and the biases calibrated layer by layer (slower to compile, much
    more accurate at few steps); ``max_spikes`` > 1 opts into multi-spike neurons (see
    ``conversion_pipeline``); ``pipeline`` replaces the default passes; ``leaf_modules`` (nn.Module subclasses) go to
    ``trace``, which keeps their instances as one opaque node each. Returns a SpikingModule whose
    ``snn(x)`` approximates ``model(x)`` better as T grows; ``snn.pipeline`` keeps every stage.

    Calibration data is one batch, a list of batches, a DataLoader, a generator or iterator
    (read once; its first batch is the example input and is calibrated on too). For a model whose
    forward takes one tensor, a batch is a tensor or ``(inputs, labels)``; for a forward of
    several tensors (their number is forward's positional parameters without defaults, or the
    ONNX graph's inputs) a batch is a tuple of them in forward's order (further tensors are
    labels), ``((x1, x2), y)``, or a dict keyed by forward's parameter names; then the SNN runs as
    ``snn(x1, x2)``. ``encoding`` may be one method per input (a list). Batches with NaN or Inf are
    refused unless ``allow_nonfinite`` (then those rows are skipped, with a warning, and the SNN
    runs such inputs too). A model with batch norm or dropout in train mode is converted as in
    eval mode, with a warning.
    """
    onnx = check_model(model, "compile")
    T = check_steps(T, "compile")
    if pipeline is not None and not isinstance(pipeline, (Pipeline, str)):
        raise ConfigError(f"compile: pipeline must be a Pipeline or a spec string, got {type(pipeline).__name__}")
    leaves = leaf_types(leaf_modules, "compile")
    if not onnx:
        _warn_train_mode(model)
    device = model_device(model, device, onnx)
    if onnx:
        graph = graph_of(model, None, leaves, "compile")
    else:
        names = forward_input_names(model)
        if example_input is None:  # (one input has no name: see graph_of)
            example_input, calibration_data = peek_first_batch(
                calibration_data, allow_nonfinite=allow_nonfinite, n_inputs=len(names),
                names=names if len(names) > 1 else None)
        graph = graph_of(model, example_on(example_input, device, names, "compile"), leaves, "compile")
    if pipeline is None:
        pipe = conversion_pipeline(mode=normalize, p=percentile, granularity=granularity, scale=scale,
                                   v_init=v_init, encoding=encoding, hoist=hoist, calibrate=calibrate, T=T,
                                   max_spikes=max_spikes,
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


def encoding_spec(encoding: Any, where: str) -> str:
    """The encode-input ``method`` option: the method, or one per input joined by ";" when
    ``encoding`` is a list or tuple of methods (ConfigError for anything else)."""
    if isinstance(encoding, (list, tuple)) and encoding and all(isinstance(e, str) for e in encoding):
        return ";".join(encoding)
    if not isinstance(encoding, str):
        raise ConfigError(f"{where}: encoding must be 'direct', 'poisson' or 'sequence', or a list of them (one per "
                          f"input), got {encoding!r}")
    return encoding
