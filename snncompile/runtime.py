"""The SpikingModule: the emitted SNN with T, encoders, readout, reset, streaming step().

``snn(x)`` (``snn(x1, x2)`` for a model of several inputs) resets every neuron, runs all T steps
layer by layer (stateless ops on T folded into the batch, neurons looping over T inside one call)
and returns the readout averaged over T; ``return_all_steps=True`` gives the running average
after every t from the same run. ``step(x_t)`` keeps the state between calls.

A compiled SNN is for inference: eval mode, parameters frozen, no autograd recorded;
``snncompile.to_trainable`` gives a trainable one. Memory is bounded for any T: the batch runs in
chunks, and when one sample's ``[T, ...]`` activations do not fit either, the steps run in
consecutive chunks with the state carried over (the same outputs as one run). The run state
(membranes, counts, the streaming readout) is per thread: concurrent calls from several threads
compute what they would one after another (training from several threads at once shares the
parameters and batch-norm statistics, as any torch module does).
"""
from __future__ import annotations

import itertools
import math
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
    """A runnable SNN around the module emitted from ``graph`` (the lowered graph that runs);
    ``semantic_graph`` is the stage before lowering (default: ``pipeline.before_lowering``), which
    exporters and analyses read. ``T``: default number of steps; ``backend``: neuron backend;
    ``max_chunk_bytes``: the batch runs in chunks whose largest [T*n, ...] activation stays under
    this size, and when one sample does not fit, the T steps run in chunks too — except in train
    mode with autograd on, where the batch runs whole (batch norm's statistics are the batch's).
    ``trainable``: keep the parameters trainable and the train mode (default: when the neurons
    have a surrogate gradient); otherwise eval mode with frozen parameters. ``allow_nonfinite``:
    run inputs holding NaN or Inf. ``pipeline`` is kept for inspection as a copy whose stages
    hold no weights (``keep_stages=True`` keeps it as given). The SNN takes one tensor per graph
    input, in input order (``snn(x1, x2)``). Save with ``snn.save(path)``; ``snncompile.load``.
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
        self._graph_inputs = ins = sorted(graph.inputs, key=lambda i: i.attrs.get("index", 0))
        self._seq = [i.attrs.get("kind") == "sequence" or any(u.op == "encode" and u.attrs.get("method") == "sequence"
                                                              for u in graph.users(i)) for i in ins] or [False]
        self._input_names = [i.meta.get("input_name") or f"x{k or ''}" for k, i in enumerate(ins)] or ["x"]
        self.sequence_input = any(self._seq)
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
        t = next((t for t in itertools.chain(self.module.parameters(), self.module.buffers()) if t.is_floating_point()),
                 None)
        return (None, None) if t is None else (t.device, t.dtype)

    def _split(self, args: tuple, options: tuple = (), given: tuple = (), x=None) -> tuple[tuple, list]:
        """The inputs among ``args`` (after ``x``, the one input given by keyword) and the values of
        ``options`` (their keyword values ``given``), which may follow the inputs by position
        (``snn(x, T)``). ConfigError for a missing or extra input, naming the inputs."""
        n, names, args = len(self._input_names), self._input_names, args if x is None else (x,) + tuple(args)
        got = sum(isinstance(a, torch.Tensor) for a in args)
        if len(args) < n or any(isinstance(a, torch.Tensor) for a in args[n:]) or len(args) > n + len(options):
            raise ConfigError(f"this SNN takes {n} input{'s' if n > 1 else ''} ({', '.join(names)}) but got {got} "
                              f"tensor{'s' if got != 1 else ''} among {len(args)} arguments; call it as "
                              f"snn({', '.join(names)}), one tensor per input of the model's forward, in its order")
        values = list(given)
        for k, v in enumerate(args[n:]):
            if values[k] is not None:
                raise ConfigError(f"SpikingModule: {options[k]} is given both by position and by keyword")
            values[k] = v
        return tuple(args[:n]), values

    def _checked(self, xs: tuple, what: str) -> tuple:
        """Every input checked (``_check_input``) and its batch size the same as the others'."""
        names = self._input_names
        xs = tuple(self._check_input(x, what if len(xs) == 1 else f"{what} {names[k]!r}") for k, x in enumerate(xs))
        rows = [x.shape[1 if s else 0] if x.dim() > s else None for x, s in zip(xs, self._seq)]
        if len(set(rows)) > 1:
            sizes = ", ".join(f"{nm}: {r}" for nm, r in zip(names, rows))
            raise ConfigError(f"SpikingModule {what}s have different batch sizes ({sizes}); give every input the same "
                              "batch, one row per sample")
        return xs

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
                          f"(pass {dtype} inputs to silence this)", stacklevel=5)
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

    def run_sequence(self, *inputs: torch.Tensor, T: int | None = None, x: torch.Tensor | None = None):
        """The readout at every step, ``[T, N, ...]`` (not averaged); resets state first. Takes one
        tensor per input (``T`` may follow them by position); a sequence input is ``[T, N, ...]``
        and the SNN runs its ``x.shape[0]`` steps."""
        xs, (T,) = self._split(inputs, ("T",), (T,), x)
        xs = self._checked(xs, "input")
        T = None if T is None else check_steps(T)
        for k, (x, s) in enumerate(zip(xs, self._seq)):
            if x.dim() < (2 if s else 1):
                raise ConfigError("SpikingModule input must be a tensor with a batch dimension"
                                  + (" after the time dimension ([T, N, ...])" if s else ""))
            step_dims = len(self._graph_inputs[k].shape or ()) if s else 0
            if step_dims and x.dim() != step_dims + 1:
                raise ConfigError(f"this SNN reads a sequence input [T, N, ...] ({step_dims + 1} dims: time, then "
                                  f"one step's {step_dims}); got shape {list(x.shape)}")
            if s and T is not None and T != x.shape[0]:
                raise ConfigError(f"this SNN reads a sequence input [T, N, ...]; x has {x.shape[0]} steps "
                                  f"but T={T} was asked for")
            T = check_steps(x.shape[0], "the input's number of steps") if s else T
            self._check_step_shape(x, k)
        T, seq, lead = T or self.T, self._seq, (self._seq.index(False) if False in self._seq else 0)
        outs = []
        with self._autograd(xs):
            # training keeps every activation for backward anyway, and batch norm needs the whole
            # batch's statistics: chunk only when no graph is being recorded
            whole = self.training and torch.is_grad_enabled()
            rows, steps = (xs[lead].shape[int(seq[lead])], T) if whole else self._plan(T, xs[lead])
            self.last_plan = (rows, steps)
            try:
                for xc in zip(*(x.split(max(rows, 1), dim=int(s)) for x, s in zip(xs, seq))):
                    self._reset_membranes()
                    if steps >= T:
                        outs.append(self.module(*xc, T))
                        continue
                    # one sample's T steps do not fit: balanced consecutive chunks, state carried on
                    n = -(-T // steps)
                    cuts = [T * k // n for k in range(n + 1)]
                    outs.append(torch.cat([self.module(*(x[a:b] if s else x for x, s in zip(xc, seq)), b - a)
                                           for a, b in zip(cuts, cuts[1:])]))
            finally:  # forward's membranes never leak into a later step() (nor hold memory)
                self._reset_membranes()
                self._stream_open = False
        return torch.cat(outs, dim=1)

    def _autograd(self, xs: tuple):
        """No autograd unless something asks for gradients (a trainable parameter or an input)."""
        if not torch.is_grad_enabled() or any(x.requires_grad for x in xs) or \
                any(p.requires_grad for p in self.parameters()):
            return nullcontext()
        return torch.no_grad()

    def _check_step_shape(self, x: torch.Tensor, k: int = 0) -> None:
        """ConfigError when one sample of input ``k`` does not have the shape the graph was traced
        with (a wrong input would otherwise fail deep inside a layer with a bare torch message)."""
        shape, seq = self._graph_inputs[k].shape if self._graph_inputs else None, self._seq[k]
        want, got = None if shape is None else tuple(shape[1:]), tuple(x.shape[2:] if seq else x.shape[1:])
        if want is not None and got != want:
            lead = "[T, N, " if seq else "[N, "
            which = f" input {self._input_names[k]!r}" if len(self._input_names) > 1 else ""
            raise ConfigError(f"this SNN was traced for{which} inputs {lead}{', '.join(map(str, want))}] but got "
                              f"{list(x.shape)}; pass inputs of the traced shape (or trace/compile the model "
                              "again with an example of the new shape)")

    def _reset_membranes(self) -> None:
        for m in self._stateful():
            m.reset_state()

    def forward(self, *inputs: torch.Tensor, T: int | None = None, return_all_steps: bool | None = None, x=None):
        """Run T steps on the inputs (``snn(x)``, ``snn(x1, x2)``: each [N, ...], or a sequence
        [T, N, ...]); the readout averaged over T ``[N, ...]``, or with ``return_all_steps`` its
        running average after every t ``[T, N, ...]`` (the last step's readout, or every step's,
        for readout mode ``last``). ``T`` (default: the SNN's), then ``return_all_steps``, may
        follow the inputs by position."""
        xs, (T, return_all_steps) = self._split(inputs, ("T", "return_all_steps"), (T, return_all_steps), x)
        self.reset()
        seq = self.run_sequence(*xs, T=T)
        if self.readout_mode == "last":
            return seq if return_all_steps else seq[-1]
        if return_all_steps:
            steps = torch.arange(1, seq.shape[0] + 1, device=seq.device, dtype=seq.dtype)
            return seq.cumsum(0) / steps.reshape((-1,) + (1,) * (seq.dim() - 1))
        return seq.mean(0)

    def step(self, *inputs: torch.Tensor, x_t: torch.Tensor | None = None) -> torch.Tensor:
        """Advance one time step on the inputs (one [N, ...] tensor per input), keeping
        state; returns the readout averaged over the steps since the stream began. A stream
        begins at ``reset()``, at the first step after a ``forward()``/``run_sequence()`` (whose
        state never carries on) and when the batch size changes."""
        xs = self._checked(self._split(inputs, x=x_t)[0], "step input")
        if not self._stream_open or (self._step_sum is not None and self._step_sum.shape[0] != xs[0].shape[0]):
            self.reset()  # a new stream
        xs = tuple(x.unsqueeze(0) if s else x for x, s in zip(xs, self._seq))
        for k, x in enumerate(xs):
            self._check_step_shape(x, k)
        with self._autograd(xs):
            out = self.module(*xs, 1)[0]
        if self.readout_mode == "last":
            self._step_sum, self._step_count = out, 1
            return out
        self._step_sum = out if self._step_sum is None else self._step_sum + out
        self._step_count += 1
        return self._step_sum / self._step_count

    def firing_rates(self, *inputs: torch.Tensor, T: int | None = None, x=None) -> dict[str, float]:
        """Mean spikes per neuron per step for every neuron layer, over a run on the inputs."""
        ns = self.neurons()
        for m in ns.values():
            m.record_rates = True
        try:
            with torch.no_grad():
                self.forward(*inputs, T=T, x=x)
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
    return any(n.attrs.get("surrogate") or any(isinstance(v, Graph) and _has_surrogate(v) for v in n.attrs.values())
               for n in graph.nodes)


def _numel(shape) -> int:
    return math.prod(int(d) for d in shape[1:])
