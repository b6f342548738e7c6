"""Runtime modules of the stateful ops other than neurons: the synapse filter and the recurrent
container. Like the neurons, each takes ``[T*N, ...]`` (T folded into the batch) plus T, loops
over T inside itself, and keeps its state between calls (``reset_state()`` clears it) so
streaming ``step()`` works.

Synapse filter (a first-order low-pass on the synaptic current, SpikingJelly's form)::

    i[t] = i[t-1] - i[t-1] / tau + x[t]        i[0] = 0

Recurrent container: a body graph run once per step on ``(x[t], y[t-1])`` (``y[0] = 0``); the
body holds the feedback path (identity or a learned weight) and the neuron, so the outer graph
stays acyclic.

Threads: the state of every runtime module (membranes, synaptic currents, fed-back outputs,
spike counts) is per thread (``PerThread``): one SNN called from several threads at once gives
each call its own state, so concurrent calls compute what the same calls would one after another.
"""
from __future__ import annotations

import threading

import torch
import torch.nn as nn

from .errors import ConfigError

__all__ = ["synapse_filter_reference", "SynapseFilterModule", "RecurrentModule", "unfold_steps",
           "PerThread", "PerThreadState"]


class PerThread:
    """A module attribute whose value is per thread (a data descriptor on the class): each thread
    reads and writes its own value, starting from ``default``."""

    def __init__(self, default=None):
        self.default = default

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return getattr(_thread_state(obj), self.name, self.default)

    def __set__(self, obj, value) -> None:
        setattr(_thread_state(obj), self.name, value)


def _thread_state(obj) -> threading.local:
    local = obj.__dict__.get("_per_thread")
    if local is None:
        local = obj.__dict__.setdefault("_per_thread", threading.local())  # setdefault: one winner
    return local


class PerThreadState:
    """Mixin for modules with ``PerThread`` attributes: copying or pickling the module keeps the
    calling thread's values (a ``threading.local`` itself cannot be copied)."""

    def __getstate__(self):
        state = super().__getstate__()
        local = state.pop("_per_thread", None)
        state["_per_thread_values"] = dict(vars(local)) if local is not None else {}
        return state

    def __setstate__(self, state):
        state = dict(state)
        values = state.pop("_per_thread_values", {})
        super().__setstate__(state)
        for k, v in values.items():
            setattr(_thread_state(self), k, v)


def unfold_steps(x: torch.Tensor, T: int, what: str) -> torch.Tensor:
    """``[T*N, ...]`` -> ``[T, N, ...]``; ConfigError naming ``what`` when rows are not a multiple of T."""
    if x.shape[0] % T:
        raise ConfigError(f"{what} input has {x.shape[0]} rows, not a multiple of T={T}")
    return x.reshape((T, x.shape[0] // T) + tuple(x.shape[1:]))


def synapse_filter_reference(x: torch.Tensor, inv_tau, i: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Filter ``x [T, N, ...]`` with ``i <- i - i * inv_tau + x``; returns ``(i at every step, last i)``.

    ``inv_tau`` is a float or a (learnable) scalar tensor; ``i`` the state from a previous call.
    Differentiable in ``x``, ``inv_tau`` and ``i``.
    """
    out = []
    for t in range(x.shape[0]):
        i = x[t] if i is None else i - i * inv_tau + x[t]
        out.append(i)
    if not out:
        return x, i
    return torch.stack(out), out[-1]


class SynapseFilterModule(PerThreadState, nn.Module):
    """The ``synapse_filter`` op: ``forward(x [T*N, ...], T) -> [T*N, ...]``.

    ``tau`` > 1 (steps); ``learnable`` makes ``1/tau`` a parameter, kept in (0, 1) by a sigmoid.
    """

    i = PerThread()  # the synaptic current, per thread

    def __init__(self, tau: float = 2.0, learnable: bool = False, tau_logit: torch.Tensor | None = None):
        super().__init__()
        if not tau > 1.0:
            raise ConfigError(f"synapse filter tau must be > 1 step, got {tau:g}")
        self.learnable = learnable
        logit = torch.logit(torch.tensor(1.0 / tau)) if tau_logit is None else tau_logit.detach().clone().float()
        if learnable:
            self.inv_tau_logit = nn.Parameter(logit.reshape(()))
        else:
            self.register_buffer("inv_tau_logit", logit.reshape(()))

    @property
    def tau(self) -> float:
        """The current time constant in steps."""
        return 1.0 / float(torch.sigmoid(self.inv_tau_logit.detach()))

    def reset_state(self) -> None:
        """Forget the synaptic current."""
        self.i = None

    reset = reset_state

    def extra_repr(self) -> str:
        return f"tau={self.tau:.3g}" + (", learnable" if self.learnable else "")

    def forward(self, x: torch.Tensor, T: int) -> torch.Tensor:
        xs = unfold_steps(x, T, "synapse filter")
        i = self.i if self.i is not None and self.i.shape == xs.shape[1:] else None
        out, self.i = synapse_filter_reference(xs, torch.sigmoid(self.inv_tau_logit), i)
        return out.reshape(x.shape)


class RecurrentModule(PerThreadState, nn.Module):
    """The ``recurrent`` op: ``forward(x [T*N, ...], T)`` runs ``body(x[t], y[t-1], 1)`` for each t.

    ``body`` is the emitted inner graph (its neuron keeps its membrane between the per-step
    calls); ``out_shape`` is one sample's output shape (for ``y[0] = 0``).
    """

    y = PerThread()  # the fed-back output, per thread

    def __init__(self, body: nn.Module, out_shape: tuple[int, ...], kind: str):
        super().__init__()
        self.body = body
        self.out_shape = tuple(out_shape)
        self.kind = kind

    def reset_state(self) -> None:
        """Forget the fed-back output (the body's neuron resets itself through the runtime)."""
        self.y = None
        for m in self.body.modules():
            if hasattr(m, "reset_state"):
                m.reset_state()

    def reset(self) -> None:
        """Forget the state and the body's spike counts."""
        self.y = None
        for m in self.body.modules():
            if hasattr(m, "reset_state"):
                m.reset()

    def extra_repr(self) -> str:
        return f"feedback={self.kind}, out_shape={list(self.out_shape)}"

    def forward(self, x: torch.Tensor, T: int) -> torch.Tensor:
        xs = unfold_steps(x, T, "recurrent container")
        n = xs.shape[1]
        y = self.y
        if y is None or y.shape[0] != n:
            y = xs.new_zeros((n,) + self.out_shape)
        out = []
        for t in range(T):
            y = self.body(xs[t], y, 1)
            out.append(y)
        self.y = y
        return torch.stack(out).reshape((T * n,) + self.out_shape) if out else x

