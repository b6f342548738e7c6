"""The neuron kernels as ``torch.library`` custom ops, for ``torch.compile`` and CUDA graphs.

Ops (namespace ``snncompile``), each with a fake (meta) implementation:

* ``neuron_infer(x, theta, v?, config, T) -> (spikes, v_out)``
* ``neuron_train(x, theta, v?, config, T, h_dtype) -> (spikes, v_out, h)``, differentiable
  through ``register_autograd`` (``h`` is the saved state for the backward, not a result)
* ``neuron_backward(grad_spikes?, grad_v?, h, theta, config, T, x_dtype, has_v, need_x,
  need_v, need_theta) -> (grad_x, grad_v, grad_theta)``; a gradient that is not needed comes
  back as an empty tensor.

``config`` is :func:`spec_to_config` of the ``NeuronSpec`` (a dict literal, so the ops take only
schema types); ``theta`` is prepared (fp32, ``[1]`` or ``[C]``). Call :func:`neuron`, which
prepares the inputs and picks the op. CUDA tensors run the CuPy kernels; CPU tensors run the
same equations in plain torch (:func:`torch_forward`, :func:`torch_backward`), so the ops and
their gradients can be checked without a GPU. Importing this module never imports CuPy.
"""
from __future__ import annotations

import ast
import dataclasses
import functools

import torch

from ..errors import KernelError
from ..neurons import NeuronSpec
from ..surrogate import get_surrogate
from . import cuda_launch as cl

__all__ = ["neuron", "spec_to_config", "config_to_spec", "neuron_infer", "neuron_train",
           "neuron_backward", "torch_forward", "torch_backward"]


def spec_to_config(spec: NeuronSpec) -> str:
    """Encode a NeuronSpec as the ``config`` string the ops take (a dict literal; traceable)."""
    return "{" + ", ".join(f"{f.name!r}: {getattr(spec, f.name)!r}" for f in dataclasses.fields(spec)) + "}"


@functools.lru_cache(maxsize=256)
def config_to_spec(config: str) -> NeuronSpec:
    """Decode a ``config`` string back to its NeuronSpec."""
    return NeuronSpec(**ast.literal_eval(config))


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name.replace("torch.", ""))


def _th(theta: torch.Tensor, lay) -> torch.Tensor:
    return theta.reshape((lay.C,) + (1,) * (len(lay.step) - 2)) if lay.per_channel else theta.reshape(())


def torch_forward(x, theta, v, spec, lay, train=False, h_dtype=torch.float32):
    """The forward kernels' arithmetic in plain torch (any device); same outputs as ``cl.forward``."""
    th = _th(theta, lay)
    v = cl.initial_v(theta, spec, lay) if v is None else v.clone()
    spikes = x.new_empty((lay.T,) + lay.step)
    h = torch.empty((lay.T,) + lay.step, dtype=h_dtype, device=x.device) if train else None
    inv_tau = float(cl._params(spec)[2])
    for t in range(lay.T):
        xt = (x if spec.input_kind == "static" else x[t]).float()
        if spec.kind == "if":
            v = v + xt
        elif spec.form == "snntorch":
            v = spec.beta * v + xt
        else:
            v = v + (xt - (v - spec.v_rest)) * inv_tau
        ht = v - th
        fire = ht >= 0
        spikes[t] = fire.to(x.dtype)
        v = torch.where(fire, v - th if spec.reset == "subtract" else torch.full_like(v, spec.v_reset), v)
        if train:
            h[t] = torch.where(fire, ht.abs(), -ht.abs()).to(h_dtype)
    return spikes, v, h


def torch_backward(grad_spikes, grad_v, h, theta, spec, lay, x_dtype, has_v,
                   need_x=True, need_v=True, need_theta=True):
    """The backward kernel's BPTT in plain torch; same outputs as ``cl.backward``."""
    th = _th(theta, lay)
    alpha = cl._alpha(spec)
    sur = get_surrogate(spec.surrogate)
    inv_tau = float(cl._params(spec)[2])
    zeros = torch.zeros(lay.step, dtype=torch.float32, device=h.device)
    gv = zeros if grad_v is None else grad_v.float().expand(lay.step)
    gth, gx_sum, gxs = zeros, zeros, []
    for t in reversed(range(lay.T)):
        ht = h[t].float()
        fire = ~torch.signbit(ht)
        sg = sur.grad(ht, alpha)
        g_spike = zeros if grad_spikes is None else grad_spikes[t].float()
        if spec.reset == "subtract":
            if not spec.detach_reset:
                g_spike = g_spike - gv * th
            g_u = gv
            gth = gth - torch.where(fire, gv, 0.0)
        else:
            if not spec.detach_reset:
                g_spike = g_spike + gv * (spec.v_reset - (ht + th))
            g_u = torch.where(fire, 0.0, gv)
        g_h = g_spike * sg
        g_u = g_u + g_h
        gth = gth - g_h
        if spec.kind == "if":
            gx, gv = g_u, g_u
        elif spec.form == "snntorch":
            gx, gv = g_u, spec.beta * g_u
        else:
            gx, gv = g_u * inv_tau, g_u - g_u * inv_tau
        gx_sum = gx_sum + gx
        gxs.append(gx)
    if spec.input_kind == "static":
        gx = gx_sum
    else:
        gx = torch.stack(gxs[::-1]) if gxs else torch.zeros((0,) + lay.step, device=h.device)
    if not has_v:
        gth = gth + spec.v_init * gv
    return (gx.to(x_dtype) if need_x else None, gv.clone() if need_v else None,
            cl.reduce_theta_grad(gth.expand(lay.step), lay) if need_theta else None)


def _layout(x, theta, spec, T):
    return cl.layout(tuple(x.shape), theta.numel(), spec.input_kind, T)


@torch.library.custom_op("snncompile::neuron_infer", mutates_args=(),
                         schema="(Tensor x, Tensor theta, Tensor? v, str config, int T) -> (Tensor, Tensor)")
def neuron_infer(x, theta, v, config, T):
    """Inference: spikes and the final membrane (no state saved)."""
    spec = config_to_spec(config)
    lay = _layout(x, theta, spec, T)
    run = cl.forward if x.is_cuda else torch_forward
    spikes, v_out, _ = run(x, theta, v, spec, lay)
    return spikes, v_out


@neuron_infer.register_fake
def _(x, theta, v, config, T):
    lay = _layout(x, theta, config_to_spec(config), T)
    return x.new_empty((lay.T,) + lay.step), x.new_empty(lay.step, dtype=torch.float32)


@torch.library.custom_op("snncompile::neuron_train", mutates_args=(),
                         schema="(Tensor x, Tensor theta, Tensor? v, str config, int T, str h_dtype)"
                                " -> (Tensor, Tensor, Tensor)")
def neuron_train(x, theta, v, config, T, h_dtype):
    """Training forward: spikes, final membrane and the saved ``h`` for :func:`neuron_backward`."""
    spec = config_to_spec(config)
    lay = _layout(x, theta, spec, T)
    run = cl.forward if x.is_cuda else torch_forward
    spikes, v_out, h = run(x, theta, v, spec, lay, True, _dtype(h_dtype))
    return spikes, v_out, h


@neuron_train.register_fake
def _(x, theta, v, config, T, h_dtype):
    lay = _layout(x, theta, config_to_spec(config), T)
    shape = (lay.T,) + lay.step
    return (x.new_empty(shape), x.new_empty(lay.step, dtype=torch.float32),
            x.new_empty(shape, dtype=_dtype(h_dtype)))


@torch.library.custom_op("snncompile::neuron_backward", mutates_args=(),
                         schema="(Tensor? grad_spikes, Tensor? grad_v, Tensor h, Tensor theta, str config, "
                                "int T, str x_dtype, bool has_v, bool need_x, bool need_v, bool need_theta)"
                                " -> (Tensor, Tensor, Tensor)")
def neuron_backward(grad_spikes, grad_v, h, theta, config, T, x_dtype, has_v, need_x, need_v, need_theta):
    """BPTT: gradients wrt x, the initial membrane and the threshold (empty when not needed)."""
    spec = config_to_spec(config)
    lay = cl.layout(tuple(h.shape[1:]), theta.numel(), "static", T)
    run = cl.backward if h.is_cuda else torch_backward
    out = run(grad_spikes, grad_v, h, theta, spec, lay, _dtype(x_dtype), has_v, need_x, need_v, need_theta)
    return tuple(h.new_empty((0,)) if g is None else g for g in out)


@neuron_backward.register_fake
def _(grad_spikes, grad_v, h, theta, config, T, x_dtype, has_v, need_x, need_v, need_theta):
    static = config_to_spec(config).input_kind == "static"
    step = tuple(h.shape[1:])
    gx = h.new_empty(step if static else tuple(h.shape), dtype=_dtype(x_dtype)) if need_x else h.new_empty((0,))
    gv = h.new_empty(step, dtype=torch.float32) if need_v else h.new_empty((0,))
    gth = h.new_empty(theta.shape, dtype=torch.float32) if need_theta else h.new_empty((0,))
    return gx, gv, gth


def _setup_context(ctx, inputs, output):
    x, theta, v, config, T, _ = inputs
    ctx.save_for_backward(output[2], theta)
    ctx.config, ctx.T, ctx.has_v = config, T, v is not None
    ctx.x_dtype = str(x.dtype).replace("torch.", "")


def _backward(ctx, grad_spikes, grad_v, _grad_h):
    h, theta = ctx.saved_tensors
    need_x, need_theta, need_v = ctx.needs_input_grad[:3]
    gx, gv, gth = neuron_backward(grad_spikes, grad_v, h, theta, ctx.config, ctx.T, ctx.x_dtype,
                                  ctx.has_v, need_x, need_v, need_theta)
    return (gx if need_x else None, gth if need_theta else None, gv if need_v else None,
            None, None, None)


neuron_train.register_autograd(_backward, setup_context=_setup_context)


def neuron(x: torch.Tensor, threshold, spec: NeuronSpec, T: int | None = None,
           v: torch.Tensor | None = None, *, h_dtype: torch.dtype | None = None):
    """Run a neuron layer through the custom ops; ``(spikes [T, N, ...], final v fp32)``.

    Same contract as ``cuda_launch.run_cupy`` and traceable by ``torch.compile``. Uses the
    training op (differentiable, surrogate gradient) when ``spec.surrogate`` is set, grad mode
    is on and an input requires grad; else the inference op.
    """
    x, theta, v, lay = cl.prepare(x, threshold, spec, T, v, require_cuda=False)
    config = spec_to_config(spec)
    train = (spec.surrogate is not None and torch.is_grad_enabled()
             and any(t is not None and t.requires_grad for t in (x, theta, v)))
    if not train:
        return neuron_infer(x, theta, v, config, lay.T)
    h_dtype = torch.float32 if h_dtype is None else h_dtype
    if h_dtype not in (torch.float32, x.dtype):
        raise KernelError(f"h_dtype must be torch.float32 or x's dtype {x.dtype}, got {h_dtype}")
    spikes, v_out, _ = neuron_train(x, theta, v, config, lay.T, str(h_dtype).replace("torch.", ""))
    return spikes, v_out
