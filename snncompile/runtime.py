"""The SpikingModule: the emitted SNN with T, encoders, readout, reset, streaming step().

``snn(x)`` resets every neuron, runs all T steps layer by layer (stateless ops on T folded into
the batch, neurons looping over T inside one call) and returns the readout averaged over T.
``snn(x, return_all_steps=True)`` gives the running average after every t from the same run, so
the accuracy at every T costs one simulation. ``step(x_t)`` keeps the state between calls.

A compiled SNN is for inference: eval mode, parameters frozen (``requires_grad`` False), no
autograd recorded; ``snncompile.to_trainable`` gives a trainable one. Memory is bounded for any
T: the batch runs in chunks, and when one sample's ``[T, ...]`` activations do not fit either,
the steps run in consecutive chunks with the state carried over (the same outputs as one run).

Threads: the run state (membranes, counts, the streaming readout) is per thread, so concurrent
calls on one SNN from several threads each get their own state and compute what they would one
after another; ``step()`` streams are per thread too. (Training one SNN from several threads at
once shares its parameters and batch-norm statistics, as any torch module does.)
"""
from __future__ import annotations

import itertools
import numbers
import warnings
from contextlib import nullcontext

import torch
import torch.nn as nn

from .emit import emit
from .errors import ConfigError
from .ir import Graph
from .neuron_module import SpikingNeuron
from .serialize import load_module, save_module
from .snapshots import light_pipeline
from .stateful import PerThread, PerThreadState

__all__ = ["SpikingModule", "check_steps", "load"]


def check_steps(T, what: str = "T") -> int:
    """``T`` as an int; ConfigError unless it is a positive whole number (bool, float, str, None
    and numbers below 1 are refused: a number of time steps is an int such as 32)."""
    if isinstance(T, bool) or not isinstance(T, numbers.Integral):
        shown = "nan" if isinstance(T, float) and T != T else repr(T)
        raise ConfigError(f"{what} (the number of time steps) must be a positive int, got {shown} (a "
                          f"{type(T).__name__}) — give a positive int such as T=32")
    if T < 1:
        raise ConfigError(f"{what} (the number of time steps) must be at least 1, got {int(T)} — give a "
                          "positive int such as T=32")
    return int(T)


class SpikingModule(PerThreadState, nn.Module):
    """A runnable SNN around the module emitted from ``graph``.

    ``graph`` is the lowered graph that runs; ``semantic_graph`` the stage before lowering
    (taken from ``pipeline.before_lowering`` when not given), which exporters and analyses read.
    ``T``: default number of steps; ``backend``: neuron backend; ``max_chunk_bytes``: the batch is
    simulated in chunks so the largest [T*n, ...] activation stays under this size, and when one
    sample does not fit, the T steps run in chunks too (bounds memory for any T; on a CPU
    smaller chunks also stay in cache) — except in train mode with autograd on, where the batch
    runs whole (batch norm's statistics are the batch's). ``trainable``: keep the parameters
    trainable and the train mode (default: when the graph's neurons have a surrogate gradient);
    otherwise the SNN is in eval mode with frozen parameters. ``allow_nonfinite``: run inputs
    holding NaN or Inf (refused by default: their outputs mean nothing). ``pipeline`` is kept
    for inspection (``snn.pipeline.stage("normalize")`` prints a stage) as a copy whose stages
    hold no weights (``keep_stages=True`` keeps the pipeline as given, weights and all).
    Save with ``snn.save(path)``; ``snncompile.load(path)`` gives it back.
    """

    _step_sum = PerThread()
    _step_count = PerThread(0)
    _stream_open = PerThread(False)
    last_plan = PerThread()  # (rows, steps) of the last run's chunks, for inspection

    def __init__(self, graph: Graph, T: int, *, backend: str = "torch", pipeline=None,
                 max_chunk_bytes: int = 64 << 20, semantic_graph: Graph | None = None,
                 trainable: bool | None = None, allow_nonfinite: bool = False, keep_stages: bool = False):
        super().__init__()
        self.T = check_steps(T)
        if isinstance(max_chunk_bytes, bool) or not isinstance(max_chunk_bytes, numbers.Integral) or max_chunk_bytes < 1:
            raise ConfigError(f"max_chunk_bytes must be a positive int (bytes), got {max_chunk_bytes!r}")
        self.graph = graph
        # the stage before lowering (no hoisting, no fusions): what printing, exporters and
        # analyses read; the lowered graph is what runs
        if semantic_graph is None and pipeline is not None:
            semantic_graph = getattr(pipeline, "before_lowering", None)
        self.semantic_graph = semantic_graph if semantic_graph is not None else graph
        self.backend = backend
        self.pipeline = pipeline if keep_stages or pipeline is None else light_pipeline(pipeline, self.semantic_graph)
        self.module = emit(graph, backend=backend)
        self.max_chunk_bytes = int(max_chunk_bytes)
        self.allow_nonfinite = bool(allow_nonfinite)
        self._per_sample = max((_numel(n.shape) for n in graph.nodes if n.shape is not None), default=1)
        # a sequence input arrives as [T, N, ...]: T is its length and the batch is dim 1
        self.sequence_input = any(e.attrs.get("method") == "sequence" for e in graph.find("encode"))
        modes = {r.attrs.get("mode", "mean") for r in graph.find("readout")}
        if not modes <= {"mean", "last"} or len(modes) > 1:
            raise ConfigError(f"readout mode must be one of 'mean', 'last' (one for all outputs), got {sorted(modes)}")
        self.readout_mode = modes.pop() if modes else "mean"
        self.trainable = _has_surrogate(graph) if trainable is None else bool(trainable)
        if not self.trainable:  # inference: no autograd over T steps, batch norm on running stats
            self.requires_grad_(False)
            self.eval()

    @property
    def code(self) -> str:
        """The emitted forward, as Python source."""
        return self.module.code

    def neurons(self) -> dict[str, SpikingNeuron]:
        """The neuron layers by name."""
        return {k: m for k, m in self.module.named_modules() if isinstance(m, SpikingNeuron)}

    def save(self, path) -> None:
        """Write the SNN to ``path`` (safetensors, the graph and options as JSON; no pickle):
        ``snncompile.load(path)`` gives back an SNN with bit-identical outputs."""
        save_module(self, path)

    @classmethod
    def load(cls, path, *, device=None, backend: str | None = None) -> "SpikingModule":
        """The SNN saved at ``path`` (see ``snncompile.load``)."""
        return load_module(cls, path, device=device, backend=backend)

    def _stateful(self):
        return [m for m in self.module.modules() if m is not self.module and hasattr(m, "reset_state")]

    def reset(self) -> None:
        """Clear membranes, spike counts and the streaming readout (a new ``step()`` stream)."""
        for m in self._stateful():
            m.reset()
        self._step_sum, self._step_count, self._stream_open = None, 0, True

    def _chunk_rows(self, T: int, x: torch.Tensor) -> int:
        per_row = T * self._per_sample * x.element_size()
        return max(1, self.max_chunk_bytes // max(per_row, 1))

    def _plan(self, T: int, x: torch.Tensor) -> tuple[int, int]:
        """(rows, steps) a chunk: whole sequences of ``rows`` samples when one fits, else one
        sample at most ``steps`` steps at a time (at least 8: a one-step chunk would run its
        layers as matrix-vector products, whose rounding differs from a batch's)."""
        per_step = max(self._per_sample * x.element_size(), 1)
        if T * per_step <= self.max_chunk_bytes:
            return self._chunk_rows(T, x), T
        return 1, max(8, self.max_chunk_bytes // per_step)

    def _device_dtype(self):
        t = next((t for t in itertools.chain(self.module.parameters(), self.module.buffers())
                  if t.is_floating_point()), None)
        return (None, None) if t is None else (t.device, t.dtype)

    def _check_input(self, x, what: str = "input") -> torch.Tensor:
        """The input as the SNN takes it: a tensor on the SNN's device, of its floating dtype
        (another float dtype is cast, with a warning), finite unless ``allow_nonfinite``."""
        if not isinstance(x, torch.Tensor):
            raise ConfigError(f"SpikingModule {what} must be a torch.Tensor, got {type(x).__name__}; "
                              "convert it with torch.as_tensor(x, dtype=torch.float32)")
        device, dtype = self._device_dtype()
        if device is not None and x.device != device:
            raise ConfigError(f"SpikingModule {what} is on {x.device} but the SNN's weights are on {device}; "
                              f"move the input (x.to('{device}')) or the SNN (snn.to('{x.device}'))")
        if not x.is_floating_point():
            raise ConfigError(f"SpikingModule {what} has dtype {x.dtype}; the SNN takes floating-point inputs "
                              f"({dtype or torch.float32}): convert and scale them as the model was trained "
                              "(e.g. x.float() / 255 for 8-bit images)")
        if dtype is not None and x.dtype != dtype:
            warnings.warn(f"snncompile: the {what} is {x.dtype} but the SNN runs in {dtype}; cast it to {dtype} "
                          f"(pass {dtype} inputs to silence this)", stacklevel=4)
            x = x.to(dtype)
        if not self.allow_nonfinite:
            bad = ~torch.isfinite(x)
            if bool(bad.any()):
                n_nan = int(torch.isnan(x).sum())
                found = " and ".join(f"{k} {kind} values" for k, kind in ((n_nan, "NaN"), (int(bad.sum()) - n_nan,
                                                                                       "infinite")) if k)
                raise ConfigError(f"SpikingModule {what} holds {found}; an SNN run on them gives meaningless outputs: "
                                  "clean the input, or set snn.allow_nonfinite = True to run it anyway")
        return x

    def run_sequence(self, x: torch.Tensor, T: int | None = None) -> torch.Tensor:
        """The readout at every step, ``[T, N, ...]`` (not averaged); resets state first.

        A sequence-input SNN takes ``x`` as ``[T, N, ...]`` and runs ``x.shape[0]`` steps.
        """
        x = self._check_input(x)
        if x.dim() < (2 if self.sequence_input else 1):
            raise ConfigError("SpikingModule input must be a tensor with a batch dimension"
                              + (" after the time dimension ([T, N, ...])" if self.sequence_input else ""))
        if T is not None:
            T = check_steps(T)
        if self.sequence_input:
            step_dims = len(self.graph.inputs[0].shape or ()) if self.graph.inputs else 0
            if step_dims and x.dim() != step_dims + 1:
                raise ConfigError(f"this SNN reads a sequence input [T, N, ...] ({step_dims + 1} dims: time, then "
                                  f"one step's {step_dims}); got shape {list(x.shape)}")
            if T is not None and T != x.shape[0]:
                raise ConfigError(f"this SNN reads a sequence input [T, N, ...]; x has {x.shape[0]} steps "
                                  f"but T={T} was asked for")
            T = check_steps(x.shape[0], "the input's number of steps")
        T = T or self.T
        self._check_step_shape(x)
        batch_dim = 1 if self.sequence_input else 0
        outs = []
        with self._autograd(x):
            # training keeps every activation for backward anyway, and batch norm needs the whole
            # batch's statistics: chunk only when no graph is being recorded
            whole = self.training and torch.is_grad_enabled()
            rows, steps = (x.shape[batch_dim], T) if whole else self._plan(T, x)
            self.last_plan = (rows, steps)
            try:
                for xc in x.split(max(rows, 1), dim=batch_dim):
                    self._reset_membranes()
                    if steps >= T:
                        outs.append(self.module(xc, T))
                        continue
                    # one sample's T steps do not fit: balanced consecutive chunks, state carried on
                    n = -(-T // steps)
                    cuts = [T * k // n for k in range(n + 1)]
                    outs.append(torch.cat([self.module(xc[a:b] if self.sequence_input else xc, b - a)
                                           for a, b in zip(cuts, cuts[1:])]))
            finally:  # forward's membranes never leak into a later step() (nor hold memory)
                self._reset_membranes()
                self._stream_open = False
        return torch.cat(outs, dim=1)

    def _autograd(self, x: torch.Tensor):
        """No autograd unless something asks for gradients (a trainable parameter or the input)."""
        if not torch.is_grad_enabled() or x.requires_grad or any(p.requires_grad for p in self.parameters()):
            return nullcontext()
        return torch.no_grad()

    def _check_step_shape(self, x: torch.Tensor) -> None:
        """ConfigError when one sample of ``x`` does not have the shape the graph was traced with
        (a wrong input would otherwise fail deep inside a layer with a bare torch message)."""
        inp = self.graph.inputs[0] if self.graph.inputs else None
        want = tuple(inp.shape[1:]) if inp is not None and inp.shape is not None else None
        got = tuple(x.shape[2:] if self.sequence_input else x.shape[1:])
        if want is not None and got != want:
            lead = "[T, N, " if self.sequence_input else "[N, "
            raise ConfigError(f"this SNN was traced for inputs {lead}{', '.join(map(str, want))}] but got "
                              f"{list(x.shape)}; pass inputs of the traced shape (or trace/compile the model "
                              "again with an example of the new shape)")

    def _reset_membranes(self) -> None:
        for m in self._stateful():
            m.reset_state()

    def forward(self, x: torch.Tensor, T: int | None = None, return_all_steps: bool = False) -> torch.Tensor:
        """Run T steps on ``x`` [N, ...] (or a sequence [T, N, ...]); the readout averaged over T
        ``[N, ...]``, or with ``return_all_steps`` its running average after every t ``[T, N, ...]``.
        A graph whose readout mode is ``last`` gives the last step's readout (every step's with
        ``return_all_steps``). ``T`` (default: the SNN's) is a positive int."""
        self.reset()
        seq = self.run_sequence(x, T)
        if self.readout_mode == "last":
            return seq if return_all_steps else seq[-1]
        if return_all_steps:
            steps = torch.arange(1, seq.shape[0] + 1, device=seq.device, dtype=seq.dtype)
            return seq.cumsum(0) / steps.reshape((-1,) + (1,) * (seq.dim() - 1))
        return seq.mean(0)

    def step(self, x_t: torch.Tensor) -> torch.Tensor:
        """Advance one time step on input ``x_t`` [N, ...], keeping state; returns the readout
        averaged over the steps since the stream began. A stream begins at ``reset()``, at the
        first step after a ``forward()``/``run_sequence()`` (whose state never carries on) and
        when the batch size changes."""
        x_t = self._check_input(x_t, "step input")
        if not self._stream_open or (self._step_sum is not None and self._step_sum.shape[0] != x_t.shape[0]):
            self.reset()  # a new stream
        x_in = x_t.unsqueeze(0) if self.sequence_input else x_t
        self._check_step_shape(x_in)
        with self._autograd(x_t):
            out = self.module(x_in, 1)[0]
        if self.readout_mode == "last":
            self._step_sum, self._step_count = out, 1
            return out
        self._step_sum = out if self._step_sum is None else self._step_sum + out
        self._step_count += 1
        return self._step_sum / self._step_count

    def firing_rates(self, x: torch.Tensor, T: int | None = None) -> dict[str, float]:
        """Mean spikes per neuron per step for every neuron layer, over a run on ``x``."""
        ns = self.neurons()
        for m in ns.values():
            m.record_rates = True
        try:
            with torch.no_grad():
                self.forward(x, T)
            return {k: m.spike_count / max(m.neuron_steps, 1) for k, m in ns.items()}
        finally:
            for m in ns.values():
                m.record_rates = False


def load(path, *, device=None, backend: str | None = None) -> SpikingModule:
    """Load an SNN written by ``snn.save(path)``: outputs bit-identical to the saved SNN's.

    ``device`` (default: where it was saved, or the CPU when that device is absent) and
    ``backend`` (default: the saved one, or one that runs on ``device``) may be changed.
    A truncated, corrupted, foreign or newer-version file is a ``SerializationError`` naming
    the file and what is wrong; no code from the file is ever run (no pickle).
    """
    return load_module(SpikingModule, path, device=device, backend=backend)


def _has_surrogate(graph: Graph) -> bool:
    for n in graph.nodes:
        if n.attrs.get("surrogate"):
            return True
        if any(isinstance(v, Graph) and _has_surrogate(v) for v in n.attrs.values()):
            return True
    return False


def _numel(shape) -> int:
    n = 1
    for d in shape[1:]:
        n *= int(d)
    return n
