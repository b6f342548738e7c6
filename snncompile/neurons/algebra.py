"""The arithmetic a neuron family is written in, and its three renderings.

A family writes its charge (and the charge's gradient) once, as a function of an algebra ``A``:
``A.add(v, A.div(A.sub(x, A.sub(v, p.v_rest)), p.tau))``. Run with :class:`TorchAlgebra` it is
the reference (real torch ops on tensors, in exactly that order); with :class:`CAlgebra` it
renders C for the CPU kernels (plain operators: the build forbids FMA contraction) and, with
``cuda=True``, CUDA for the CuPy kernels (``f32_add``/``f32_sub``/``f32_mul`` PTX with
round-to-nearest and no FTZ, and a division as a multiply by the host-computed fp32 reciprocal,
which is what torch's CUDA division by a scalar does). Fire and reset are written once for all
families in family.py against the same algebra; the multi-spike fire adds a true division by a
value (``true_div``: torch's tensor / tensor, C's ``/``, CUDA's ``div.rn.f32``), ``floor`` and the
NaN-dropping ``minimum`` / ``maximum`` (torch.fmin / fmax, C and CUDA fminf / fmaxf).

Parameters reach a family as ``p.<name>``: Python values in torch, :class:`Sym` names in C.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TorchAlgebra", "CAlgebra", "Sym", "Reciprocal", "ParamView"]


@dataclass(frozen=True)
class Reciprocal:
    """A divisor given by its reciprocal (a learned leak ``1/tau``): ``div(a, r)`` is ``a * r.inv``."""

    inv: object


class ParamView:
    """``p.name`` access to a dict of parameter values."""

    def __init__(self, values: dict):
        self.__dict__.update(values)


class TorchAlgebra:
    """Real arithmetic on tensors and Python numbers: the reference semantics. ``step`` is the
    Heaviside spike, differentiable through ``surrogate`` (None: inference)."""

    def __init__(self, surrogate: str | None = None, alpha: float | None = None):
        self.surrogate, self.alpha = surrogate, alpha

    def step(self, x):
        from ..surrogate import spike
        return spike(x, self.surrogate, self.alpha)

    @staticmethod
    def let(name: str, value):
        return value

    @staticmethod
    def spiked(h):
        """1 where the saved ``h`` records a spike (its sign bit clear), else 0."""
        import torch
        return (~torch.signbit(h)).float()

    def surrogate_grad(self, h):
        from ..surrogate import get_surrogate
        sur = get_surrogate(self.surrogate)
        return sur.grad(h, sur.default_alpha if self.alpha is None else float(self.alpha))

    @staticmethod
    def add(a, b):
        return a + b

    @staticmethod
    def sub(a, b):
        return a - b

    @staticmethod
    def mul(a, b):
        return a * b

    @staticmethod
    def div(a, b):
        return a * b.inv if isinstance(b, Reciprocal) else a / b

    @staticmethod
    def neg(a):
        return -a

    @staticmethod
    def const(c: float):
        return float(c)

    @staticmethod
    def true_div(a, b):
        """``a / b`` correctly rounded: b as a tensor on a's device (torch's CUDA division by a
        Python number multiplies by its reciprocal instead)."""
        return a / (b if isinstance(b, torch.Tensor) else torch.tensor(float(b), device=a.device))

    @staticmethod
    def floor(a):
        return torch.floor(a)

    @staticmethod
    def minimum(a, b):
        """The smaller of a and b; a NaN loses (C's fminf)."""
        return torch.fmin(a, _like(b, a))

    @staticmethod
    def maximum(a, b):
        """The larger of a and b; a NaN loses (C's fmaxf)."""
        return torch.fmax(a, _like(b, a))

    def with_surrogate(self, value, h_fn):
        """``value`` (a count), whose derivative through ``h = h_fn()`` is the surrogate's at h
        (none through value itself); plain ``value`` when no gradient is wanted."""
        if self.surrogate is None or not torch.is_grad_enabled():
            return value
        h = h_fn()
        if not h.requires_grad:
            return value
        from ..surrogate import get_surrogate
        sur = get_surrogate(self.surrogate)
        return _SurrogateValue.apply(value, h, sur.name, sur.default_alpha if self.alpha is None else float(self.alpha))


def _like(b, a):
    return b if isinstance(b, torch.Tensor) else torch.tensor(float(b), dtype=a.dtype, device=a.device)


class _SurrogateValue(torch.autograd.Function):
    """Forward: the value; backward: the gradient times the surrogate at h, into h."""

    @staticmethod
    def forward(ctx, value, h, name, alpha):
        ctx.save_for_backward(h)
        ctx.name, ctx.alpha = name, alpha
        return value.detach().clone()

    @staticmethod
    def backward(ctx, g):
        from ..surrogate import SURROGATES
        (h,) = ctx.saved_tensors
        return None, g * SURROGATES[ctx.name].grad(h.float(), ctx.alpha).to(g.dtype), None, None


@dataclass(frozen=True)
class Sym:
    """A named C value (a parameter, a variable) inside rendered code."""

    name: str
    param: str | None = None  # the parameter it stands for, if any

    def __str__(self) -> str:
        return self.name


def _nan_test(b) -> str:
    """`` || b != b`` (b is NaN: the other operand wins), left out for a number literal."""
    try:
        if str(b).endswith("f") and float(str(b)[:-1]) == float(str(b)[:-1]):
            return ""
    except ValueError:
        pass
    return f" || {b} != {b}"


class CAlgebra:
    """Renders expressions as C (``cuda=False``) or CUDA (``cuda=True``) source text.

    Parameters are :class:`Sym` values; ``div`` only divides by a parameter, so the CUDA
    rendering can multiply by its reciprocal ``<name>_inv`` (computed on the host in fp32).
    """

    def __init__(self, cuda: bool = False):
        self.cuda = cuda
        self.lines: list[str] = []

    def let(self, name: str, value) -> Sym:
        """Bind ``value`` to a new C variable (a statement in ``self.lines``)."""
        self.lines.append(f"const float {name} = {value};")
        return Sym(name)

    def spiked(self, h) -> str:
        return f"((f32_bits({h}) >> 31) ? 0.0f : 1.0f)" if self.cuda else f"(signbit({h}) ? 0.0f : 1.0f)"

    def surrogate_grad(self, h) -> str:
        return f"surrogate_grad({h}, alpha)" if self.cuda else f"SURROGATE_GRAD({h}, alpha)"

    def _op(self, fn: str, sym: str, a, b) -> str:
        return f"{fn}({a}, {b})" if self.cuda else f"({a} {sym} {b})"

    def add(self, a, b) -> str:
        return self._op("f32_add", "+", a, b)

    def sub(self, a, b) -> str:
        return self._op("f32_sub", "-", a, b)

    def mul(self, a, b) -> str:
        return self._op("f32_mul", "*", a, b)

    def div(self, a, b) -> str:
        if not isinstance(b, Sym) or b.param is None:
            raise TypeError("a neuron family may only divide by one of its parameters")
        return f"f32_mul({a}, {b.name}_inv)" if self.cuda else f"({a} / {b})"

    def neg(self, a) -> str:
        return f"(-{a})"

    def step(self, x) -> str:
        return f"(f32_ge0({x}) ? 1.0f : 0.0f)" if self.cuda else f"(({x}) >= 0.0f ? 1.0f : 0.0f)"

    def true_div(self, a, b) -> str:
        """``a / b`` correctly rounded (CUDA: ``div.rn.f32``; C: ``/`` without fast math)."""
        return self._op("f32_div", "/", a, b)

    @staticmethod
    def floor(a) -> str:
        return f"floorf({a})"

    def minimum(self, a, b) -> str:
        """fminf; in C a select gcc vectorises (libm's fminf is a call), NaN-dropping alike."""
        return f"fminf({a}, {b})" if self.cuda else f"({a} < {b}{_nan_test(b)} ? {a} : {b})"

    def maximum(self, a, b) -> str:
        """fmaxf; in C a select, as :meth:`minimum`."""
        return f"fmaxf({a}, {b})" if self.cuda else f"({a} > {b}{_nan_test(b)} ? {a} : {b})"

    @staticmethod
    def with_surrogate(value, h_fn) -> str:
        """The forward value (kernels take the surrogate in their own backward)."""
        return value

    @staticmethod
    def const(c: float) -> str:
        return f"{float(c)!r}f".replace("inff", "INFINITY")
