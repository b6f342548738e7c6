"""The neuron kernels as ``torch.library`` custom ops, for ``torch.compile`` and CUDA graphs.

Ops (namespace ``snncompile``), each with a fake (meta) implementation:

* ``neuron_infer(x, theta, v?, config, T, sumpool) -> (spikes, v_out)``
* ``neuron_train(x, theta, v?, config, T, h_dtype, sumpool) -> (spikes, v_out, h)``,
  differentiable through ``register_autograd`` (``h`` is the saved state for the backward)
* ``neuron_backward(grad_spikes?, grad_v?, h, theta, config, T, x_dtype, has_v, need_x,
  need_v, need_theta, sumpool) -> (grad_x, grad_v, grad_theta)``; a gradient that is not needed
  comes back as an empty tensor.

``config`` is :func:`spec_to_config` of the ``NeuronSpec`` (a dict literal, so the ops take only
schema types); ``theta`` is prepared (fp32, ``[1]`` or ``[C]``); ``sumpool`` is 0, or k for the
neuron fused with a k x k, stride-k sum pool ("spikes" are then the window sums). Call
:func:`neuron`, which prepares the inputs and picks the op. CUDA tensors run the CuPy kernels;
CPU tensors run :func:`torch_forward` / :func:`torch_backward`: the kernels' loops in plain
torch, with the step taken from the family record (``charge``, ``fire``, ``reset`` and
``bptt_step`` through ``TorchAlgebra``), so nothing of a family is written twice and the ops and
their gradients can be checked without a GPU. Importing this module never imports CuPy.
"""
from __future__ import annotations

import ast
import functools

import torch

from ..errors import KernelError
from ..neurons import NeuronSpec, ParamView, TorchAlgebra
from ..neurons.family import bptt_step, fire, reset
from . import cuda_kernels as ck
from .abi import sum_pool_steps
from .cuda_layout import initial_v, layout, prepare, reduce_theta_grad, spread_pooled, theta_view

__all__ = ["neuron", "spec_to_config", "config_to_spec", "neuron_infer", "neuron_train",
           "neuron_backward", "torch_forward", "torch_backward"]


def spec_to_config(spec: NeuronSpec) -> str:
    """Encode a NeuronSpec as the ``config`` string the ops take (a dict literal; traceable)."""
    return repr(spec.to_dict())


@functools.lru_cache(maxsize=256)
def config_to_spec(config: str) -> NeuronSpec:
    """Decode a ``config`` string back to its NeuronSpec."""
    return NeuronSpec(**ast.literal_eval(config))


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name.replace("torch.", ""))


def torch_forward(x, theta, v, spec, lay, train=False, h_dtype=torch.float32, sumpool=None):
    """The forward kernels' loop in plain torch (any device); same outputs as ``cuda_kernels.forward``:
    per step the family's charge, fire and reset; training saves fire's ``h`` (``u - theta``, or
    ``u/theta - 1`` for a multi-spike family) with the +1 spike in its sign bit."""
    family, p, A = spec.family, ParamView(spec.params()), TorchAlgebra()
    th = theta_view(theta, lay)
    v = initial_v(theta, spec, lay) if v is None else v.clone()
    spikes = x.new_empty((lay.T,) + lay.step)
    h = torch.empty((lay.T,) + lay.step, dtype=h_dtype, device=x.device) if train else None
    for t in range(lay.T):
        u = family.charge(A, v, (x if spec.input_kind == "static" else x[t]).float(), p)
        ht, s = fire(A, u, th, family.spikes, p)
        v = reset(A, u, s, th, p, spec.reset)
        spikes[t] = s.to(x.dtype)
        if train:
            h[t] = torch.where(ht >= 0, ht.abs(), -ht.abs()).to(h_dtype)
    return (spikes if sumpool is None else sum_pool_steps(spikes, sumpool)), v, h


def torch_backward(grad_spikes, grad_v, h, theta, spec, lay, x_dtype, has_v,
                   need_x=True, need_v=True, need_theta=True, sumpool=None):
    """The backward kernel's BPTT in plain torch: the family's ``bptt_step`` per step, t = T-1..0;
    same outputs as ``cuda_kernels.backward`` (with ``sumpool``, ``grad_spikes`` is the window
    sums' gradient)."""
    family, p = spec.family, ParamView(spec.params())
    A = TorchAlgebra(spec.surrogate, spec.alpha)
    th, keep = theta_view(theta, lay), 0.0 if spec.detach_reset else 1.0
    if sumpool and grad_spikes is not None:
        grad_spikes = spread_pooled(grad_spikes, sumpool, lay.step)
    zeros = torch.zeros(lay.step, dtype=torch.float32, device=h.device)
    gv = zeros if grad_v is None else grad_v.float().expand(lay.step)
    gth, gx_sum, gxs = zeros, zeros, []
    for t in reversed(range(lay.T)):
        gs = zeros if grad_spikes is None else grad_spikes[t].float()
        gx, gv, gth = bptt_step(A, h[t].float(), th, gs, gv, gth, keep, p, family.spikes, spec.reset,
                                family.charge_grad)
        gx_sum = gx_sum + gx
        gxs.append(gx)
    if spec.input_kind == "static":
        gx = gx_sum
    else:
        gx = torch.stack(gxs[::-1]) if gxs else torch.zeros((0,) + lay.step, device=h.device)
    if not has_v:
        gth = gth + spec.v_init * gv
    return (gx.to(x_dtype) if need_x else None, gv.clone() if need_v else None,
            reduce_theta_grad(gth.expand(lay.step), lay) if need_theta else None)


def _layout(x, theta, spec, T):
    return layout(tuple(x.shape), theta.numel(), spec.input_kind, T)


def _out_shape(lay, sumpool: int) -> tuple:
    if not sumpool:
        return (lay.T,) + lay.step
    N, C, H, W = lay.step
    return (lay.T, N, C, H // sumpool, W // sumpool)


@torch.library.custom_op("snncompile::neuron_infer", mutates_args=(),
                         schema="(Tensor x, Tensor theta, Tensor? v, str config, int T, int sumpool)"
                                " -> (Tensor, Tensor)")
def neuron_infer(x, theta, v, config, T, sumpool):
    """Inference: spikes (or their window sums) and the final membrane (no state saved)."""
    spec = config_to_spec(config)
    lay = _layout(x, theta, spec, T)
    run = ck.forward if x.is_cuda else torch_forward
    spikes, v_out, _ = run(x, theta, v, spec, lay, sumpool=sumpool or None)
    return spikes, v_out


@neuron_infer.register_fake
def _(x, theta, v, config, T, sumpool):
    lay = _layout(x, theta, config_to_spec(config), T)
    return x.new_empty(_out_shape(lay, sumpool)), x.new_empty(lay.step, dtype=torch.float32)


@torch.library.custom_op("snncompile::neuron_train", mutates_args=(),
                         schema="(Tensor x, Tensor theta, Tensor? v, str config, int T, str h_dtype, "
                                "int sumpool) -> (Tensor, Tensor, Tensor)")
def neuron_train(x, theta, v, config, T, h_dtype, sumpool):
    """Training forward: spikes (or window sums), final membrane and the saved ``h``."""
    spec = config_to_spec(config)
    lay = _layout(x, theta, spec, T)
    run = ck.forward if x.is_cuda else torch_forward
    return run(x, theta, v, spec, lay, True, _dtype(h_dtype), sumpool=sumpool or None)


@neuron_train.register_fake
def _(x, theta, v, config, T, h_dtype, sumpool):
    lay = _layout(x, theta, config_to_spec(config), T)
    return (x.new_empty(_out_shape(lay, sumpool)), x.new_empty(lay.step, dtype=torch.float32),
            x.new_empty((lay.T,) + lay.step, dtype=_dtype(h_dtype)))


@torch.library.custom_op("snncompile::neuron_backward", mutates_args=(),
                         schema="(Tensor? grad_spikes, Tensor? grad_v, Tensor h, Tensor theta, str config, "
                                "int T, str x_dtype, bool has_v, bool need_x, bool need_v, bool need_theta, "
                                "int sumpool) -> (Tensor, Tensor, Tensor)")
def neuron_backward(grad_spikes, grad_v, h, theta, config, T, x_dtype, has_v, need_x, need_v, need_theta,
                    sumpool):
    """BPTT: gradients wrt x, the initial membrane and the threshold (empty when not needed)."""
    spec = config_to_spec(config)
    lay = layout(tuple(h.shape[1:]), theta.numel(), "static", T)
    run = ck.backward if h.is_cuda else torch_backward
    out = run(grad_spikes, grad_v, h, theta, spec, lay, _dtype(x_dtype), has_v, need_x, need_v, need_theta,
              sumpool=sumpool or None)
    return tuple(h.new_empty((0,)) if g is None else g for g in out)


@neuron_backward.register_fake
def _(grad_spikes, grad_v, h, theta, config, T, x_dtype, has_v, need_x, need_v, need_theta, sumpool):
    static = config_to_spec(config).input_kind == "static"
    step = tuple(h.shape[1:])
    gx = h.new_empty(step if static else tuple(h.shape), dtype=_dtype(x_dtype)) if need_x else h.new_empty((0,))
    gv = h.new_empty(step, dtype=torch.float32) if need_v else h.new_empty((0,))
    gth = h.new_empty(theta.shape, dtype=torch.float32) if need_theta else h.new_empty((0,))
    return gx, gv, gth


def _setup_context(ctx, inputs, output):
    x, theta, v, config, T, _, sumpool = inputs
    ctx.save_for_backward(output[2], theta)
    ctx.config, ctx.T, ctx.has_v, ctx.sumpool = config, T, v is not None, sumpool
    ctx.x_dtype = str(x.dtype).replace("torch.", "")


def _backward(ctx, grad_spikes, grad_v, _grad_h):
    h, theta = ctx.saved_tensors
    need_x, need_theta, need_v = ctx.needs_input_grad[:3]
    gx, gv, gth = neuron_backward(grad_spikes, grad_v, h, theta, ctx.config, ctx.T, ctx.x_dtype,
                                  ctx.has_v, need_x, need_v, need_theta, ctx.sumpool)
    return (gx if need_x else None, gth if need_theta else None, gv if need_v else None,
            None, None, None, None)


neuron_train.register_autograd(_backward, setup_context=_setup_context)


def neuron(x: torch.Tensor, threshold, spec: NeuronSpec, T: int | None = None,
           v: torch.Tensor | None = None, *, h_dtype: torch.dtype | None = None,
           sumpool: int | None = None):
    """Run a neuron layer through the custom ops; ``(spikes [T, N, ...], final v fp32)``, or with
    ``sumpool=k`` ``(window sums [T, N, C, H//k, W//k], final v)``.

    Same contract as ``cuda_launch.run_cupy`` and traceable by ``torch.compile``. Uses the
    training op (differentiable, surrogate gradient) when ``spec.surrogate`` is set, grad mode
    is on and an input requires grad; else the inference op.
    """
    x, theta, v, lay = prepare(x, threshold, spec, T, v, require_cuda=False, sumpool=sumpool)
    config, k = spec_to_config(spec), int(sumpool or 0)
    train = (spec.surrogate is not None and torch.is_grad_enabled()
             and any(t is not None and t.requires_grad for t in (x, theta, v)))
    if not train:
        return neuron_infer(x, theta, v, config, lay.T, k)
    h_dtype = torch.float32 if h_dtype is None else h_dtype
    if h_dtype not in (torch.float32, x.dtype):
        raise KernelError(f"h_dtype must be torch.float32 or x's dtype {x.dtype}, got {h_dtype}")
    spikes, v_out, _ = neuron_train(x, theta, v, config, lay.T, str(h_dtype).replace("torch.", ""), k)
    return spikes, v_out
