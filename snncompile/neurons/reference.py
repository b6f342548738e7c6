"""The pure-torch reference every backend must match, built from the family record.

Per step: ``u = charge(v, x)``, ``(h, s) = fire(u)``, ``v = reset(u, s)`` (family.py), in torch
arithmetic in exactly the order the family writes it. v starts at ``v_init * theta`` unless a
state ``v`` is given. theta is a scalar or one value per channel (dim 1 of a step). State and
arithmetic are fp32; spikes come back in the input's dtype.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .algebra import ParamView, Reciprocal, TorchAlgebra
from .family import fire, reset
from .spec import NeuronSpec

__all__ = ["neuron_reference", "broadcast_threshold", "initial_membrane"]


def broadcast_threshold(theta: torch.Tensor | float, step_shape: tuple[int, ...]) -> torch.Tensor:
    """Shape a scalar or per-channel threshold so it broadcasts over one step ``[N, C, ...]``."""
    theta = torch.as_tensor(theta, dtype=torch.float32)
    if theta.dim() == 0 or theta.numel() == 1:
        return theta.reshape(())
    if len(step_shape) < 2 or step_shape[1] != theta.numel():
        raise ConfigError(
            f"per-channel threshold has {theta.numel()} values but a step has shape {list(step_shape)}; "
            "give one value per channel (dim 1) or a scalar")
    return theta.reshape((theta.numel(),) + (1,) * (len(step_shape) - 2))


def initial_membrane(th: torch.Tensor, spec: NeuronSpec, step_shape, device=None) -> torch.Tensor:
    """``v_init * theta`` over one step (fp32): the membrane when no state is given."""
    return torch.zeros(step_shape, dtype=torch.float32, device=device) + spec.v_init * th


def neuron_reference(x: torch.Tensor, theta, spec: NeuronSpec, T: int | None = None,
                     v: torch.Tensor | None = None, leak: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the neuron over T steps with plain torch ops; the oracle for every kernel.

    Takes ``x`` as ``[T, N, ...]`` (sequence) or ``[N, ...]`` plus ``T`` (static input), a
    threshold, a spec and optionally the initial membrane ``v`` (fp32, one step's shape).
    ``leak`` (a tensor) replaces the parameter the family's leak names so it can be learned
    (``1/tau`` for LIF's spikingjelly form, ``beta`` for its snntorch form). Returns ``(spikes
    [T, N, ...] in x's dtype, final v in fp32)``. Differentiable when ``spec.surrogate`` is set.
    """
    if spec.input_kind == "static":
        if T is None:
            raise ConfigError("a static-input neuron needs T")
        step_shape = tuple(x.shape)
    else:
        T = x.shape[0]
        step_shape = tuple(x.shape[1:])
    family = spec.family
    values = spec.params()
    if leak is not None:
        if family.leak is None:
            raise ConfigError(f"a learnable leak needs a leaky neuron; the {family.name!r} family does not leak")
        name, reciprocal = family.leak(ParamView(values))
        values[name] = Reciprocal(leak) if reciprocal else leak
    p = ParamView(values)
    A = TorchAlgebra(spec.surrogate, spec.alpha)
    th = broadcast_threshold(theta, step_shape).to(x.device)
    if v is None:
        v = initial_membrane(th, spec, step_shape, x.device)
    out = []
    for t in range(T):
        xt = (x if spec.input_kind == "static" else x[t]).float()
        u = family.charge(A, v, xt, p)
        _, s = fire(A, u, th, family.spikes, p)
        v = reset(A, u, s.detach() if spec.detach_reset else s, th, p, spec.reset)
        out.append(s.to(x.dtype))
    if T == 0:
        return x.new_zeros((0,) + step_shape), v
    return torch.stack(out), v
