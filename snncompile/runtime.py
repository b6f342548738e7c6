"""The SpikingModule: the emitted SNN with T, encoders, readout, reset, streaming step().

``snn(x)`` resets every neuron, runs all T steps layer by layer (stateless ops on T folded into
the batch, neurons looping over T inside one call) and returns the readout averaged over T.
``snn(x, return_all_steps=True)`` gives the running average after every t from the same run, so
the accuracy at every T costs one simulation. ``step(x_t)`` keeps the state between calls.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .emit import emit
from .errors import ConfigError
from .ir import Graph
from .neuron_module import SpikingNeuron

__all__ = ["SpikingModule"]


class SpikingModule(nn.Module):
    """A runnable SNN around the module emitted from ``graph``.

    ``graph`` is the lowered graph that runs; ``semantic_graph`` the stage before lowering
    (taken from ``pipeline.before_lowering`` when not given), which exporters and analyses read.
    ``T``: default number of steps; ``backend``: neuron backend; ``max_chunk_bytes``: the batch is
    simulated in chunks so the largest [T*n, ...] activation stays under this size (bounds
    memory; on a CPU smaller chunks also stay in cache) — except in train mode with autograd on,
    where the batch runs whole (batch norm's statistics are the batch's). ``pipeline`` is kept for inspection
    (``snn.pipeline.stage("normalize")``).
    """

    def __init__(self, graph: Graph, T: int, *, backend: str = "torch", pipeline=None,
                 max_chunk_bytes: int = 64 << 20, semantic_graph: Graph | None = None):
        super().__init__()
        if T < 1:
            raise ConfigError(f"T must be at least 1, got {T}")
        self.graph = graph
        # the stage before lowering (no hoisting, no fusions): what printing, exporters and
        # analyses read; the lowered graph is what runs
        if semantic_graph is None and pipeline is not None:
            semantic_graph = getattr(pipeline, "before_lowering", None)
        self.semantic_graph = semantic_graph if semantic_graph is not None else graph
        self.T = int(T)
        self.backend = backend
        self.pipeline = pipeline
        self.module = emit(graph, backend=backend)
        self.max_chunk_bytes = max_chunk_bytes
        self._per_sample = max((_numel(n.shape) for n in graph.nodes if n.shape is not None), default=1)
        # a sequence input arrives as [T, N, ...]: T is its length and the batch is dim 1
        self.sequence_input = any(e.attrs.get("method") == "sequence" for e in graph.find("encode"))
        modes = {r.attrs.get("mode", "mean") for r in graph.find("readout")}
        if not modes <= {"mean", "last"} or len(modes) > 1:
            raise ConfigError(f"readout mode must be one of 'mean', 'last' (one for all outputs), got {sorted(modes)}")
        self.readout_mode = modes.pop() if modes else "mean"
        self._step_sum = None
        self._step_count = 0

    @property
    def code(self) -> str:
        """The emitted forward, as Python source."""
        return self.module.code

    def neurons(self) -> dict[str, SpikingNeuron]:
        """The neuron layers by name."""
        return {k: m for k, m in self.module.named_modules() if isinstance(m, SpikingNeuron)}

    def _stateful(self):
        return [m for m in self.module.modules() if m is not self.module and hasattr(m, "reset_state")]

    def reset(self) -> None:
        """Clear membranes, spike counts and the streaming readout."""
        for m in self._stateful():
            m.reset()
        self._step_sum, self._step_count = None, 0

    def _chunk_rows(self, T: int, x: torch.Tensor) -> int:
        per_row = T * self._per_sample * x.element_size()
        return max(1, self.max_chunk_bytes // max(per_row, 1))

    def run_sequence(self, x: torch.Tensor, T: int | None = None) -> torch.Tensor:
        """The readout at every step, ``[T, N, ...]`` (not averaged); resets state first.

        A sequence-input SNN takes ``x`` as ``[T, N, ...]`` and runs ``x.shape[0]`` steps.
        """
        if not isinstance(x, torch.Tensor) or x.dim() < (2 if self.sequence_input else 1):
            raise ConfigError("SpikingModule input must be a tensor with a batch dimension"
                              + (" after the time dimension ([T, N, ...])" if self.sequence_input else ""))
        if self.sequence_input:
            step_dims = len(self.graph.inputs[0].shape or ()) if self.graph.inputs else 0
            if step_dims and x.dim() != step_dims + 1:
                raise ConfigError(f"this SNN reads a sequence input [T, N, ...] ({step_dims + 1} dims: time, then "
                                  f"one step's {step_dims}); got shape {list(x.shape)}")
            if T is not None and int(T) != x.shape[0]:
                raise ConfigError(f"this SNN reads a sequence input [T, N, ...]; x has {x.shape[0]} steps "
                                  f"but T={T} was asked for")
            T = x.shape[0]
        T = int(T or self.T)
        self._check_step_shape(x)
        outs = []
        batch_dim = 1 if self.sequence_input else 0
        # training keeps every activation for backward anyway, and batch norm needs the whole
        # batch's statistics: chunk only when no graph is being recorded
        whole = self.training and torch.is_grad_enabled()
        rows = x.shape[batch_dim] if whole else self._chunk_rows(T, x)
        for xc in x.split(max(rows, 1), dim=batch_dim):
            self._reset_membranes()
            outs.append(self.module(xc, T))
        return torch.cat(outs, dim=1)

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
        ``return_all_steps``)."""
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
        averaged over the steps since the last ``reset()``."""
        if self._step_sum is not None and self._step_sum.shape[0] != x_t.shape[0]:
            self.reset()  # a new batch size is a new stream
        x_in = x_t.unsqueeze(0) if self.sequence_input else x_t
        self._check_step_shape(x_in)
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


def _numel(shape) -> int:
    n = 1
    for d in shape[1:]:
        n *= int(d)
    return n
