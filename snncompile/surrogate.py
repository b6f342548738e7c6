"""Surrogate-gradient functions: Heaviside forward, smooth derivative backward.

Each surrogate is defined once: its torch derivative (used by the reference path) and the CUDA
expression of the same derivative (used by the kernels). ``x`` is ``v - theta``; ``alpha`` is the
sharpness parameter. Add one with ``register_surrogate``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .errors import ConfigError

__all__ = ["Surrogate", "register_surrogate", "get_surrogate", "SURROGATES", "spike"]


@dataclass(frozen=True)
class Surrogate:
    """A surrogate: ``grad(x, alpha)`` in torch and ``cuda`` (an expression in ``x`` and ``alpha``)."""

    name: str
    default_alpha: float
    grad: Callable[[torch.Tensor, float], torch.Tensor]
    cuda: str
    doc: str = ""


SURROGATES: dict[str, Surrogate] = {}


def register_surrogate(s: Surrogate) -> Surrogate:
    """Add a surrogate under ``s.name``; kernels and the reference path both pick it up."""
    SURROGATES[s.name] = s
    return s


def get_surrogate(name: str) -> Surrogate:
    """Look a surrogate up by name; raise ConfigError naming the known ones."""
    try:
        return SURROGATES[name]
    except KeyError:
        raise ConfigError(
            f"unknown surrogate {name!r}; known: {', '.join(sorted(SURROGATES))} "
            "(or add one with snncompile.surrogate.register_surrogate)"
        ) from None


def _sigmoid_grad(x, a):
    s = torch.sigmoid(a * x)
    return a * s * (1 - s)


def _atan_grad(x, a):
    return (a / 2) / (1 + (math.pi / 2 * a * x) ** 2)


def _fast_sigmoid_grad(x, a):
    return 1.0 / (1 + a * x.abs()) ** 2


def _triangle_grad(x, a):
    return torch.clamp(a - a * a * x.abs(), min=0)


register_surrogate(Surrogate(
    "sigmoid", 4.0, _sigmoid_grad,
    "alpha / (1.0f + expf(-alpha * x)) * (1.0f - 1.0f / (1.0f + expf(-alpha * x)))",
    "derivative of sigmoid(alpha*x)"))
register_surrogate(Surrogate(
    "atan", 2.0, _atan_grad,
    "(alpha * 0.5f) / (1.0f + (1.5707963267948966f * alpha * x) * (1.5707963267948966f * alpha * x))",
    "derivative of atan(pi/2*alpha*x)/pi + 1/2 (SpikingJelly's ATan)"))
register_surrogate(Surrogate(
    "fast_sigmoid", 25.0, _fast_sigmoid_grad,
    "1.0f / ((1.0f + alpha * fabsf(x)) * (1.0f + alpha * fabsf(x)))",
    "snnTorch's fast sigmoid: 1/(1+slope|x|)^2"))
register_surrogate(Surrogate(
    "triangle", 1.0, _triangle_grad,
    "fmaxf(alpha - alpha * alpha * fabsf(x), 0.0f)",
    "piecewise linear: max(alpha - alpha^2 |x|, 0)"))


class _SpikeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, name, alpha):
        ctx.save_for_backward(x)
        ctx.name, ctx.alpha = name, alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * SURROGATES[ctx.name].grad(x.float(), ctx.alpha).to(g.dtype), None, None


def spike(x: torch.Tensor, surrogate: str | None = None, alpha: float | None = None) -> torch.Tensor:
    """Heaviside step of ``x = v - theta`` (1 where x >= 0); with ``surrogate``, differentiable."""
    if surrogate is None or not torch.is_grad_enabled() or not x.requires_grad:
        return (x >= 0).to(x.dtype)
    s = get_surrogate(surrogate)
    return _SpikeFn.apply(x, s.name, s.default_alpha if alpha is None else float(alpha))
