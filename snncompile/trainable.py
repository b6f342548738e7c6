"""Direct training in one call: an ANN definition (or a converted SNN) -> a trainable SpikingModule.

    snn = snncompile.to_trainable(model, T=4, neuron="lif", surrogate="atan")
    loss = snncompile.losses.ce_rate_loss(snn.run_sequence(x), y); loss.backward()

The forward runs all T steps (stateless ops on T folded into the batch, each neuron looping over
T) and gradients flow back through time (BPTT) through the surrogate of every spike.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .convert import check_runnable, check_steps, choose_backend
from .errors import ConfigError
from .frontend.fx import trace
from .ops import has_trait
from .pipeline import PassContext, Pipeline, get_pass
from .runtime import SpikingModule

__all__ = ["training_pipeline", "to_trainable", "infer_example_input"]


def training_pipeline(*, neuron: str = "lif", surrogate: str = "atan", alpha: float | None = None,
                      tau: float | None = None, beta: float | None = None, threshold: float = 1.0, v_init: float = 0.0,
                      detach_reset: bool = False, learn_threshold: bool = False, learn_leak: bool = False,
                      encoding: str = "direct", readout: str = "mean", hoist: bool = True,
                      **instruments) -> Pipeline:
    """The direct-training pipeline; ``instruments`` go to Pipeline (print_after, dump_dir...)."""
    passes = [
        # one spelling per op; dropout stays because it acts while training
        get_pass("canonicalize", keep_dropout=True),
        # no normalization and no BN folding: the weights are learned with the neurons
        get_pass("insert-surrogate", neuron=neuron, surrogate=surrogate, alpha=alpha, tau=tau, beta=beta,
                 threshold=threshold, v_init=v_init, detach_reset=detach_reset,
                 learn_threshold=learn_threshold, learn_leak=learn_leak),
        get_pass("encode-input", method=encoding),
        get_pass("readout", mode=readout),
    ]
    if hoist and encoding == "direct":
        # the layers before the first neuron see the same image every step: run them once
        # (batch norm's batch statistics are the same over N as over T*N copies)
        passes.append(get_pass("hoist-static"))
    # a neuron and the k x k average pool reading its spikes become one op: on the CPU the
    # training kernels then never store the spikes and fold the pool's backward into BPTT
    passes.append(get_pass("fuse-neuron-sumpool", avgpool=True))
    return Pipeline(passes, **instruments)


def infer_example_input(model: nn.Module) -> torch.Tensor:
    """A zero input batch of 2 for ``model``: from its ``input_shape`` attribute, else from its
    first module when that is an ``nn.Linear``; ConfigError asking for ``example_input`` otherwise."""
    shape = getattr(model, "input_shape", None)
    if shape is None:
        first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))), None)
        if isinstance(first, nn.Linear):
            shape = (first.in_features,)
    if shape is None:
        raise ConfigError(f"cannot tell the input shape of {type(model).__name__}; pass example_input= "
                          "(one batch of inputs, one step's shape for a sequence model) or give the model an "
                          "input_shape attribute")
    return torch.zeros((2,) + tuple(shape))


def to_trainable(model: nn.Module | SpikingModule, T: int = 4, neuron: str = "lif", surrogate: str = "atan", *,
                 example_input: torch.Tensor | None = None, alpha: float | None = None, tau: float | None = None,
                 beta: float | None = None, threshold: float = 1.0, v_init: float = 0.0,
                 detach_reset: bool = False, learn_threshold: bool = False, learn_leak: bool = False,
                 encoding: str = "direct", readout: str = "mean", backend: str = "auto", hoist: bool = True,
                 pipeline: Pipeline | str | None = None, device: Any = None,
                 print_after=None) -> SpikingModule:
    """Turn an ANN definition into a spiking network trained with surrogate gradients.

    Takes a model (never modified) whose ReLUs become IF or LIF neurons (``neuron``) with the
    given surrogate (see ``insert-surrogate`` for the neuron options; stateful layers from
    snncompile.layers keep theirs), the number of steps T, the input ``encoding`` ("direct",
    "poisson", or "sequence" for inputs given as ``[T, N, ...]``) and the ``readout`` ("mean"
    over T or the "last" step). ``example_input`` is one batch (one step's shape for sequence
    models); when absent it is inferred (see ``infer_example_input``).

    Given a SpikingModule from ``snncompile.compile`` instead, returns a copy of it whose
    neurons get the surrogate (the hybrid: converted weights as the start of a fine-tune); the
    neuron kind, thresholds and the rest of the conversion stay.

    Returns a SpikingModule in train mode; ``snn.run_sequence(x)`` gives ``[T, N, ...]`` for the
    losses in snncompile.losses, ``snn(x)`` the mean (or last) output.
    """
    T = check_steps(T, "to_trainable")
    if isinstance(model, SpikingModule):
        return _fine_tunable(model, T, surrogate, alpha, detach_reset, learn_threshold, backend)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"to_trainable: expected a torch.nn.Module, got {type(model).__name__}")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    x0 = infer_example_input(model) if example_input is None else example_input
    graph = trace(model, x0.to(device))
    if pipeline is None:
        pipe = training_pipeline(neuron=neuron, surrogate=surrogate, alpha=alpha, tau=tau, beta=beta,
                                 threshold=threshold, v_init=v_init, detach_reset=detach_reset,
                                 learn_threshold=learn_threshold, learn_leak=learn_leak, encoding=encoding,
                                 readout=readout, hoist=hoist, print_after=print_after)
    else:
        pipe = pipeline if isinstance(pipeline, Pipeline) else Pipeline(pipeline, print_after=print_after)
    snn_graph = pipe.run(graph, PassContext(T=T, device=device))
    check_runnable(snn_graph, pipe, "to_trainable")
    snn = SpikingModule(snn_graph, T, backend=choose_backend(backend, device), pipeline=pipe, trainable=True)
    return snn.to(device).train()


def _fine_tunable(snn: SpikingModule, T: int, surrogate: str, alpha, detach_reset: bool,
                  learn_threshold: bool, backend: str) -> SpikingModule:
    pass_ = get_pass("insert-surrogate", surrogate=surrogate, alpha=alpha, detach_reset=detach_reset)
    graph = pass_(snn.graph.copy(), PassContext(T=T))
    for n in graph.nodes:
        if has_trait(n, "neuron"):
            n.attrs["detach_reset"] = bool(detach_reset)
            n.attrs["learn_threshold"] = bool(learn_threshold)
    graph.verify()
    device = next((b.device for b in snn.buffers()), torch.device("cpu"))
    new = SpikingModule(graph, T, backend=choose_backend(backend, device) if backend != "auto" else snn.backend,
                        pipeline=snn.pipeline, max_chunk_bytes=snn.max_chunk_bytes, trainable=True,
                        allow_nonfinite=snn.allow_nonfinite)
    # the weights as they are now (the graph holds them as converted; snn may have been tuned since)
    missing, unexpected = new.module.load_state_dict(snn.module.state_dict(), strict=False)
    if unexpected or missing:
        raise ConfigError(f"to_trainable: the converted SNN's state does not match its graph "
                          f"(missing {missing}, unexpected {unexpected})")
    return new.to(device).train()
