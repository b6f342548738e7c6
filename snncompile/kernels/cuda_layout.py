"""Shapes and inputs of one neuron call, shared by the CUDA launcher and the custom ops.

:func:`prepare` checks and normalises the inputs of ``run_cupy`` / ``custom_ops.neuron`` and
returns a :class:`Layout` (T, the step shape, the threshold kind); :func:`check_sumpool` checks a
fused sum pool against a step. The rest is the small torch arithmetic every path shares: the
initial membrane, the threshold-gradient reduction, the kernel's float parameters (with their
fp32 reciprocals), and the sum pool and its gradient in plain torch. No CuPy, no autograd.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import KernelError
from .abi import param_vector

__all__ = ["Layout", "layout", "prepare", "check_sumpool", "initial_v", "reduce_theta_grad",
           "theta_view", "param_args", "spread_pooled", "IO_DTYPES"]

IO_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Layout:
    """Sizes of one neuron call: T steps of ``step`` (N neurons), threshold per channel or not."""

    T: int
    step: tuple
    N: int
    per_channel: bool
    inner: int  # product of the dims after the channel dim of a step
    C: int


def layout(x_shape, theta_numel: int, input_kind: str, T: int | None) -> Layout:
    """Work out T, the step shape and the threshold kind from shapes alone; KernelError if bad."""
    if input_kind == "static":
        if T is None:
            raise KernelError("a static-input neuron needs T (the number of time steps); pass T")
        step = tuple(x_shape)
    else:
        if len(x_shape) < 1:
            raise KernelError("a sequence neuron takes x as [T, N, ...]; got a 0-d tensor")
        if T is not None and int(T) != x_shape[0]:
            raise KernelError(f"T={T} but x has {x_shape[0]} steps in dim 0; pass T=x.shape[0] "
                              "or reshape x to [T, N, ...]")
        T, step = x_shape[0], tuple(x_shape[1:])
    T = int(T)
    if not 0 <= T < 2**31:
        raise KernelError(f"T must be in [0, 2**31), got {T}")
    if theta_numel == 0:
        raise KernelError("the threshold is empty; give a scalar or one value per channel")
    per_channel = theta_numel > 1
    if per_channel and (len(step) < 2 or step[1] != theta_numel):
        raise KernelError(f"per-channel threshold has {theta_numel} values but a step has shape "
                          f"{list(step)}; give one value per channel (dim 1) or a scalar")
    inner = math.prod(step[2:]) if per_channel else 1
    return Layout(T, step, math.prod(step), per_channel, inner, step[1] if per_channel else 1)


def check_sumpool(k, step: tuple) -> int:
    """Check a k x k, stride-k sum-pool window against one step ``[N, C, H, W]``; returns k."""
    try:
        if isinstance(k, bool):
            raise TypeError
        k = operator.index(k)
    except TypeError:
        raise KernelError(f"sumpool must be a positive int window size (k x k, stride k), got {k!r}") from None
    if k < 1:
        raise KernelError(f"sumpool must be a positive int window size (k x k, stride k), got {k}")
    if len(step) != 4:
        raise KernelError(f"sumpool={k} pools 2-D planes, so one step must have shape [N, C, H, W], "
                          f"got {list(step)}; run without sumpool and pool separately")
    if step[2] < k or step[3] < k:
        raise KernelError(f"sumpool={k} needs planes of at least {k} x {k} (stride {k}, no padding), "
                          f"got {step[2]} x {step[3]}")
    return k


def prepare(x: torch.Tensor, threshold, spec, T: int | None = None, v: torch.Tensor | None = None,
            require_cuda: bool = True, sumpool: int | None = None):
    """Check and normalise the inputs; returns ``(x, theta [C or 1] fp32, v fp32 or None, Layout)``.

    All conversions are differentiable torch ops (``.contiguous()``, ``.to``, ``expand``), so
    gradients flow back to the caller's tensors. Raises KernelError with what to change.
    """
    if not isinstance(x, torch.Tensor):
        raise KernelError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if require_cuda and x.device.type != "cuda":
        raise KernelError(f"the cupy backend runs on CUDA tensors but x is on {x.device}; move the "
                          "model and inputs with .cuda(), or use backend='torch' or 'cpu'")
    if x.dtype not in IO_DTYPES:
        raise KernelError(f"the cupy backend takes float32, float16 or bfloat16 input, got {x.dtype}; "
                          "cast x with .float()")
    if isinstance(threshold, torch.Tensor):
        theta = threshold.to(device=x.device, dtype=torch.float32)
    else:
        theta = torch.as_tensor(threshold, dtype=torch.float32, device=x.device)
    lay = layout(tuple(x.shape), theta.numel(), spec.input_kind, T)
    if sumpool is not None:
        check_sumpool(sumpool, lay.step)
    theta = theta.reshape(-1).contiguous()
    if v is not None:
        if not isinstance(v, torch.Tensor):
            raise KernelError(f"v must be a tensor (the membrane of one step) or None, got {type(v).__name__}")
        v = v.to(device=x.device, dtype=torch.float32)
        try:
            v = v.expand(lay.step)
        except RuntimeError:
            raise KernelError(f"state v has shape {list(v.shape)}, which does not broadcast to one step "
                              f"{list(lay.step)}; pass the v the previous call returned, or None") from None
        v = v.contiguous()
    return x.contiguous(), theta, v, lay


def theta_view(theta: torch.Tensor, lay: Layout) -> torch.Tensor:
    """The prepared threshold shaped to broadcast over one step."""
    return theta.reshape((lay.C,) + (1,) * (len(lay.step) - 2)) if lay.per_channel else theta.reshape(())


def initial_v(theta: torch.Tensor, spec, lay: Layout) -> torch.Tensor:
    """The membrane at t=0 when no state is given: ``v_init * theta``, as the reference has it."""
    return torch.zeros(lay.step, dtype=torch.float32, device=theta.device) + spec.v_init * theta_view(theta, lay)


def reduce_theta_grad(partial: torch.Tensor, lay: Layout) -> torch.Tensor:
    """Sum the per-neuron threshold gradients to the threshold's shape (``[1]`` or ``[C]``)."""
    if lay.per_channel:
        return partial.reshape(-1, lay.C, lay.inner).sum(dim=(0, 2))
    return partial.sum().reshape(1)


def param_args(spec) -> tuple:
    """The family's float parameters as kernel arguments: value, fp32 reciprocal, ... (``abi``)."""
    return tuple(np.float32(v) for v in param_vector(spec)[: 2 * len(spec.family.float_params)])


def spread_pooled(g: torch.Tensor, k: int, step: tuple) -> torch.Tensor:
    """The gradient of ``abi.sum_pool_steps``: each window's value on its k x k neurons, 0 on the rows
    and columns no window covers; ``[T, N, C, Ho, Wo]`` -> ``[T, *step]``."""
    H, W = step[2], step[3]
    full = g.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)
    return F.pad(full, (0, W - full.shape[-1], 0, H - full.shape[-2]))
