"""Compile and launch the CUDA neuron kernels through CuPy, and their autograd wrapper.

``run_cupy(x, threshold, spec, T, v)`` is what ``run_neuron(..., backend="cupy")`` calls. It
checks and prepares the inputs (:func:`prepare`), then runs

* the inference kernel (spikes and the final membrane only) when no gradient is needed, or
* :class:`NeuronFunction`, the ``torch.autograd.Function`` around the training forward kernel
  (which also saves ``h = v - theta`` before every spike) and the BPTT backward kernel, when
  ``spec.surrogate`` is set, grad mode is on and x, the threshold or ``v`` requires grad.

Each :class:`~snncompile.kernels.cuda_source.Specialisation` is compiled once per process and
device by NVRTC (``cupy.RawModule``, cached by :func:`get_kernel`; CuPy also keeps the binary
on disk). Kernels run on PyTorch's current stream and read and write the tensors in place
through their data pointers (zero copy; outputs are allocated by torch, so its caching allocator
and graph pools own them), so they compose with torch streams and CUDA graph capture (run once
before capturing so the compile happens outside the capture). A thread takes ``spec.vec``
neighbouring neurons with 16-byte loads when N is a multiple of it and every tensor is 16-byte
aligned, element by element otherwise.

Inputs: ``x`` on a CUDA device, float32, float16 or bfloat16; a non-contiguous ``x`` (or ``v``,
or threshold) is copied by ``.contiguous()`` first. The threshold is a scalar (any tensor of one
element, or a float) or one value per channel (dim 1 of a step); it is used as fp32. ``v`` is
the fp32 membrane of one step (broadcast if needed). Spikes come back in x's dtype, the final
membrane in fp32. Nothing here imports CuPy until a kernel runs.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import KernelError
from ..surrogate import get_surrogate
from .cuda_source import Specialisation, render_source

__all__ = ["run_cupy", "NeuronFunction", "cupy_available", "Layout", "prepare", "layout", "get_kernel",
           "forward", "backward", "initial_v", "reduce_theta_grad", "BLOCK", "NVRTC_OPTIONS"]

BLOCK = 256  #: threads per block (the kernels declare __launch_bounds__(256))
NVRTC_OPTIONS = ("-std=c++14",)
_IO_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Layout:
    """Sizes of one neuron call: T steps of ``step`` (N neurons), threshold per channel or not."""

    T: int
    step: tuple
    N: int
    per_channel: bool
    inner: int  # product of the dims after the channel dim of a step
    C: int


def cupy_available() -> bool:
    """True when CuPy imports (the 'cupy' backend also needs a CUDA device)."""
    try:
        _cupy()
    except KernelError:
        return False
    return True


def _cupy():
    try:
        import cupy
    except Exception as e:  # ImportError, or a CuPy that does not match the CUDA runtime
        raise KernelError("the 'cupy' neuron backend needs CuPy: pip install cupy-cuda12x (or "
                          "cupy-cuda13x, matching your CUDA), or use backend='torch' or 'cpu'") from e
    return cupy


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


def prepare(x: torch.Tensor, threshold, spec, T: int | None = None, v: torch.Tensor | None = None,
            require_cuda: bool = True):
    """Check and normalise the inputs; returns ``(x, theta [C or 1] fp32, v fp32 or None, Layout)``.

    All conversions are differentiable torch ops (``.contiguous()``, ``.to``, ``expand``), so
    gradients flow back to the caller's tensors. Raises KernelError with what to change.
    """
    if not isinstance(x, torch.Tensor):
        raise KernelError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if require_cuda and x.device.type != "cuda":
        raise KernelError(f"the cupy backend runs on CUDA tensors but x is on {x.device}; move the "
                          "model and inputs with .cuda(), or use backend='torch' or 'cpu'")
    if x.dtype not in _IO_DTYPES:
        raise KernelError(f"the cupy backend takes float32, float16 or bfloat16 input, got {x.dtype}; "
                          "cast x with .float()")
    if isinstance(threshold, torch.Tensor):
        theta = threshold.to(device=x.device, dtype=torch.float32)
    else:
        theta = torch.as_tensor(threshold, dtype=torch.float32, device=x.device)
    lay = layout(tuple(x.shape), theta.numel(), spec.input_kind, T)
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
    if spec.kind == "lif" and spec.form == "spikingjelly" and spec.tau == 0:
        raise KernelError("LIF tau must be nonzero; set NeuronSpec.tau (e.g. 2.0)")
    return x.contiguous(), theta, v, lay


@functools.lru_cache(maxsize=None)
def get_kernel(spec: Specialisation, device_index: int):
    """Compile one specialisation with NVRTC (once per process and device); the CuPy kernel."""
    cp = _cupy()
    with cp.cuda.Device(device_index):
        try:
            kernel = cp.RawModule(code=render_source(spec), options=NVRTC_OPTIONS).get_function(
                spec.kernel_name)
            kernel.num_regs  # compile and load now, not inside a CUDA graph capture
        except Exception as e:  # CompileException, CUDADriverError, ...
            raise KernelError(
                f"building CUDA kernel {spec.kernel_name} failed: {e}\nRead its source with "
                "snncompile.kernels.cuda_source.render_source(spec); check that CuPy matches the "
                "CUDA driver, or use backend='torch'") from e
    return kernel


@functools.lru_cache(maxsize=64)
def _external_stream(ptr: int, device_index: int):
    return _cupy().cuda.ExternalStream(ptr)


def _launch(kernel, device: torch.device, n_threads: int, args: tuple) -> None:
    cp = _cupy()
    stream = torch.cuda.current_stream(device)
    with cp.cuda.Device(device.index), _external_stream(stream.cuda_stream, device.index):
        kernel(((n_threads + BLOCK - 1) // BLOCK,), (BLOCK,), args)


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _vectorised(vec: int, N: int, tensors) -> bool:
    """16-byte accesses are safe: every step starts aligned and every thread has ``vec`` neurons."""
    return N % vec == 0 and all(t is None or t.data_ptr() % 16 == 0 for t in tensors)


def _params(spec) -> tuple:
    inv_tau = 1.0 / spec.tau if spec.tau else 0.0  # torch's CUDA x / tau is x * fp32(1 / tau)
    f = np.float32
    return f(spec.v_init), f(spec.v_reset), f(inv_tau), f(spec.beta), f(spec.v_rest)


def _alpha(spec) -> float:
    return get_surrogate(spec.surrogate).default_alpha if spec.alpha is None else float(spec.alpha)


def initial_v(theta: torch.Tensor, spec, lay: Layout) -> torch.Tensor:
    """The membrane at t=0 when no state is given: ``v_init * theta``, as the reference has it."""
    th = theta.reshape((lay.C,) + (1,) * (len(lay.step) - 2)) if lay.per_channel else theta.reshape(())
    return torch.zeros(lay.step, dtype=torch.float32, device=theta.device) + spec.v_init * th


def forward(x, theta, v, spec, lay: Layout, train: bool = False, h_dtype=torch.float32):
    """Run the inference (or training) forward kernel on prepared inputs.

    Returns ``(spikes [T, *step] x.dtype, v_out fp32, h [T, *step] h_dtype or None)``.
    """
    spikes = torch.empty((lay.T,) + lay.step, dtype=x.dtype, device=x.device)
    v_out = torch.empty(lay.step, dtype=torch.float32, device=x.device)
    h = torch.empty((lay.T,) + lay.step, dtype=h_dtype, device=x.device) if train else None
    if lay.T == 0 or lay.N == 0:
        v_out.copy_(initial_v(theta, spec, lay) if v is None else v)
        return spikes, v_out, h
    ks = Specialisation.for_neuron(spec, x.dtype, lay.per_channel, "train" if train else "infer", h_dtype)
    kernel = get_kernel(ks, x.device.index)
    vec = _vectorised(ks.vec, lay.N, (x, v, spikes, v_out, h))
    args = (x.data_ptr(), theta.data_ptr(), _ptr(v), spikes.data_ptr(), v_out.data_ptr(), _ptr(h),
            np.int64(lay.N), np.int32(lay.T), np.int64(lay.inner), np.int32(lay.C), np.int32(vec),
            *_params(spec))
    _launch(kernel, x.device, -(-lay.N // ks.vec), args)
    return spikes, v_out, h


def reduce_theta_grad(partial: torch.Tensor, lay: Layout) -> torch.Tensor:
    """Sum the per-neuron threshold gradients to the threshold's shape (``[1]`` or ``[C]``)."""
    if lay.per_channel:
        return partial.reshape(-1, lay.C, lay.inner).sum(dim=(0, 2))
    return partial.sum().reshape(1)


def backward(grad_spikes, grad_v, h, theta, spec, lay: Layout, x_dtype, has_v: bool,
             need_x: bool = True, need_v: bool = True, need_theta: bool = True):
    """BPTT through the T loop with the backward kernel; ``(grad_x, grad_v, grad_theta)``.

    ``grad_spikes``/``grad_v`` may be None (zero). Unneeded gradients are not computed and come
    back as None. grad_x has x's shape and dtype, grad_v the fp32 step shape, grad_theta
    theta's shape (the kernel writes per-neuron partial sums, reduced here in fp32).
    """
    dev = h.device
    x_shape = lay.step if spec.input_kind == "static" else (lay.T,) + lay.step
    gx = torch.empty(x_shape, dtype=x_dtype, device=dev) if need_x else None
    gv = torch.empty(lay.step, dtype=torch.float32, device=dev) if need_v else None
    gth = torch.empty(lay.step, dtype=torch.float32, device=dev) if need_theta else None
    gvo = None if grad_v is None else grad_v.to(torch.float32).expand(lay.step).contiguous()
    if lay.T == 0 or lay.N == 0:
        g0 = torch.zeros(lay.step, dtype=torch.float32, device=dev) if gvo is None else gvo
        if gx is not None:
            gx.zero_()
        if gv is not None:
            gv.copy_(g0)
        if gth is not None:
            gth.copy_(g0 * (0.0 if has_v else spec.v_init))
    else:
        gs = None if grad_spikes is None else grad_spikes.to(x_dtype).contiguous()
        ks = Specialisation.for_neuron(spec, x_dtype, lay.per_channel, "backward", h.dtype)
        kernel = get_kernel(ks, dev.index)
        vec = _vectorised(ks.vec, lay.N, (gs, gvo, h, gx, gv, gth))
        args = (_ptr(gs), _ptr(gvo), h.data_ptr(), theta.data_ptr(), _ptr(gx), _ptr(gv), _ptr(gth),
                np.int64(lay.N), np.int32(lay.T), np.int64(lay.inner), np.int32(lay.C),
                np.int32(vec), np.int32(has_v), *_params(spec), np.float32(_alpha(spec)),
                np.int32(spec.detach_reset))
        _launch(kernel, dev, -(-lay.N // ks.vec), args)
    return gx, gv, None if gth is None else reduce_theta_grad(gth, lay)


class NeuronFunction(torch.autograd.Function):
    """Training forward + BPTT backward kernels as one autograd node.

    ``apply(x, theta, v, spec, layout, h_dtype)`` on prepared inputs returns ``(spikes, v_out)``;
    the backward computes only the gradients autograd asks for (x, theta, v).
    """

    @staticmethod
    def forward(ctx, x, theta, v, spec, lay, h_dtype):
        spikes, v_out, h = forward(x, theta, v, spec, lay, train=True, h_dtype=h_dtype)
        ctx.save_for_backward(h, theta)
        ctx.spec, ctx.lay, ctx.x_dtype, ctx.has_v = spec, lay, x.dtype, v is not None
        ctx.set_materialize_grads(False)
        return spikes, v_out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_spikes, grad_v):
        h, theta = ctx.saved_tensors
        need_x, need_theta, need_v = ctx.needs_input_grad[:3]
        gx, gv, gth = backward(grad_spikes, grad_v, h, theta, ctx.spec, ctx.lay, ctx.x_dtype,
                               ctx.has_v, need_x, need_v, need_theta)
        return gx, gth, gv, None, None, None


def run_cupy(x: torch.Tensor, threshold, spec, T: int | None = None, v: torch.Tensor | None = None,
             *, h_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a neuron layer with the CUDA kernels; ``(spikes [T, N, ...] x.dtype, final v fp32)``.

    Same contract as ``snncompile.neurons.neuron_reference`` (spikes element for element, final
    v to fp32 rounding). Outputs carry gradients only with a surrogate (``spec.surrogate``);
    without one this is inference. ``h_dtype`` is the dtype the training forward saves ``h`` in:
    float32 (default, exact gradients) or x's dtype (less memory traffic, the surrogate is
    evaluated at a rounded h). Under ``torch.compile`` it goes through the ``snncompile::``
    custom ops (``custom_ops.neuron``) instead, so the graph holds one opaque op.
    """
    if torch.compiler.is_compiling():
        return _custom_ops.neuron(x, threshold, spec, T, v, h_dtype=h_dtype)
    x, theta, v, lay = prepare(x, threshold, spec, T, v)
    train = (spec.surrogate is not None and torch.is_grad_enabled()
             and any(t is not None and t.requires_grad for t in (x, theta, v)))
    if not train:
        spikes, v_out, _ = forward(x, theta, v, spec, lay)
        return spikes, v_out
    h_dtype = torch.float32 if h_dtype is None else h_dtype
    if h_dtype not in (torch.float32, x.dtype):
        raise KernelError(f"h_dtype must be torch.float32 or x's dtype {x.dtype}, got {h_dtype}")
    return NeuronFunction.apply(x, theta, v, spec, lay, h_dtype)


from . import custom_ops as _custom_ops  # noqa: E402  (registers the snncompile:: ops; no CuPy)
