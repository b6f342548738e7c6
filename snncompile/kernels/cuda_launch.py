"""The CUDA neuron layer: ``run_cupy`` and its autograd wrapper.

``run_cupy(x, threshold, spec, T, v, sumpool=k)`` is what ``run_neuron(..., backend="cupy")``
calls. It checks and prepares the inputs (``cuda_layout.prepare``), then runs

* the inference kernel (spikes and the final membrane only) when no gradient is needed, or
* :class:`NeuronFunction`, the ``torch.autograd.Function`` around the training forward kernel
  (which also saves ``h = u - theta`` of every step) and the BPTT backward kernel, when
  ``spec.surrogate`` is set, grad mode is on and x, the threshold or ``v`` requires grad.

Under ``torch.compile`` it goes through the ``snncompile::`` custom ops instead (custom_ops.py),
so the graph holds one opaque op. The modules, bottom up: cuda_templates.py (CUDA text),
cuda_source.py (Specialisation, the family's step rendered into it), cuda_layout.py (shapes,
inputs), cuda_kernels.py (compile cache, zero-copy launches on torch's stream), custom_ops.py
(torch.library ops and their family-driven torch path), this file (autograd, entry point).

Inputs: ``x`` on a CUDA device, float32, float16 or bfloat16; a non-contiguous ``x`` (or ``v``,
or threshold) is copied by ``.contiguous()`` first. The threshold is a scalar (any tensor of one
element, or a float) or one value per channel (dim 1 of a step); it is used as fp32. ``v`` is
the fp32 membrane of one step (broadcast if needed). Spikes come back in x's dtype (-1/0/+1 for
a signed family), the final membrane in fp32. Nothing here imports CuPy until a kernel runs.
"""
from __future__ import annotations

import torch

from ..errors import KernelError
from . import custom_ops as _custom_ops
from .cuda_kernels import BLOCK, NVRTC_OPTIONS, backward, cupy_available, forward, get_kernel
from .cuda_layout import Layout, check_sumpool, initial_v, layout, param_args, prepare, reduce_theta_grad

__all__ = ["run_cupy", "NeuronFunction", "cupy_available", "Layout", "prepare", "layout", "get_kernel",
           "forward", "backward", "initial_v", "reduce_theta_grad", "param_args", "check_sumpool",
           "BLOCK", "NVRTC_OPTIONS"]


class NeuronFunction(torch.autograd.Function):
    """Training forward + BPTT backward kernels as one autograd node.

    ``apply(x, theta, v, spec, layout, h_dtype, sumpool)`` on prepared inputs returns ``(spikes
    or window sums, v_out)``; the backward computes only the gradients autograd asks for (x,
    theta, v).
    """

    @staticmethod
    def forward(ctx, x, theta, v, spec, lay, h_dtype, sumpool):
        out, v_out, h = forward(x, theta, v, spec, lay, train=True, h_dtype=h_dtype, sumpool=sumpool)
        ctx.save_for_backward(h, theta)
        ctx.spec, ctx.lay, ctx.x_dtype, ctx.has_v, ctx.sumpool = spec, lay, x.dtype, v is not None, sumpool
        ctx.set_materialize_grads(False)
        return out, v_out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_v):
        h, theta = ctx.saved_tensors
        need_x, need_theta, need_v = ctx.needs_input_grad[:3]
        gx, gv, gth = backward(grad_out, grad_v, h, theta, ctx.spec, ctx.lay, ctx.x_dtype,
                               ctx.has_v, need_x, need_v, need_theta, sumpool=ctx.sumpool)
        return gx, gth, gv, None, None, None, None


def run_cupy(x: torch.Tensor, threshold, spec, T: int | None = None, v: torch.Tensor | None = None,
             *, h_dtype: torch.dtype | None = None, sumpool: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a neuron layer with the CUDA kernels; ``(spikes [T, N, ...] x.dtype, final v fp32)``.

    Same contract as ``snncompile.neurons.neuron_reference`` (spikes element for element, final
    v to fp32 rounding). With ``sumpool=k`` (a step ``[N, C, H, W]``) the first result is instead
    the k x k, stride-k (floor) window sums of every step's spikes, ``[T, N, C, H//k, W//k]``,
    computed without writing the spikes (one thread a window, for k <= 4; larger windows pool
    the spikes in torch); training spreads the sums' gradient over each window in the backward
    kernel. Outputs carry gradients only with a surrogate (``spec.surrogate``); without one this
    is inference. ``h_dtype`` is the dtype the training forward saves ``h`` in: float32 (default,
    exact gradients) or x's dtype (less memory traffic, the surrogate is evaluated at a rounded
    h). Under ``torch.compile`` it goes through the ``snncompile::`` custom ops.
    """
    if torch.compiler.is_compiling():
        return _custom_ops.neuron(x, threshold, spec, T, v, h_dtype=h_dtype, sumpool=sumpool)
    x, theta, v, lay = prepare(x, threshold, spec, T, v, sumpool=sumpool)
    k = None if sumpool is None else int(sumpool)
    train = (spec.surrogate is not None and torch.is_grad_enabled()
             and any(t is not None and t.requires_grad for t in (x, theta, v)))
    if not train:
        out, v_out, _ = forward(x, theta, v, spec, lay, sumpool=k)
        return out, v_out
    h_dtype = torch.float32 if h_dtype is None else h_dtype
    if h_dtype not in (torch.float32, x.dtype):
        raise KernelError(f"h_dtype must be torch.float32 or x's dtype {x.dtype}, got {h_dtype}")
    return NeuronFunction.apply(x, theta, v, spec, lay, h_dtype, k)
