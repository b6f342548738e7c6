"""Compile the CUDA neuron kernels with CuPy (cached) and launch them on prepared inputs.

Each :class:`~snncompile.kernels.cuda_source.Specialisation` is compiled once per process and
device by NVRTC (``cupy.RawModule``, cached by :func:`get_kernel`; CuPy also keeps the binary on
disk). Kernels run on PyTorch's current stream and read and write the tensors in place through
their data pointers (zero copy; outputs are allocated by torch, so its caching allocator and
graph pools own them), so they compose with torch streams and CUDA graph capture (run once
before capturing so the compile happens outside the capture). A thread takes ``spec.vec``
neighbouring neurons with 16-byte loads when N is a multiple of it and every tensor is 16-byte
aligned, element by element otherwise; the fused sum pool runs one window a thread.

:func:`forward` and :func:`backward` take the output of ``cuda_layout.prepare``; the family's
float parameters are passed generically (``cuda_layout.param_args``: value and fp32 reciprocal
each, in ``family.float_params`` order, as ``cuda_source.kernel_signature`` lists them). Nothing
here imports CuPy until a kernel runs.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from ..errors import KernelError
from ..neurons.family import registry_version
from ..surrogate import get_surrogate
from .abi import sum_pool_steps
from .cuda_layout import Layout, initial_v, param_args, reduce_theta_grad
from .cuda_source import KMAX, Specialisation, render_source

__all__ = ["cupy_available", "get_kernel", "forward", "backward", "BLOCK", "NVRTC_OPTIONS"]

BLOCK = 256  #: threads per block (the kernels declare __launch_bounds__(256))
NVRTC_OPTIONS = ("-std=c++14",)


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


def get_kernel(spec: Specialisation, device_index: int):
    """Compile one specialisation with NVRTC (once per process, device and family registry: a
    family registered again gets new kernels); the CuPy kernel."""
    return _compiled(spec, device_index, registry_version())


@functools.lru_cache(maxsize=None)
def _compiled(spec: Specialisation, device_index: int, version: int):
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


def _alpha(spec) -> float:
    return get_surrogate(spec.surrogate).default_alpha if spec.alpha is None else float(spec.alpha)


def forward(x, theta, v, spec, lay: Layout, train: bool = False, h_dtype=torch.float32,
            sumpool: int | None = None):
    """Run the inference (or training) forward kernel on prepared inputs.

    Returns ``(spikes [T, *step] x.dtype, v_out fp32, h [T, *step] h_dtype or None)``; with
    ``sumpool=k`` the first output is the window sums ``[T, N, C, H//k, W//k]`` instead, from the
    fused kernel for k <= KMAX (the spikes are never written), else from the spikes in torch.
    """
    if sumpool is not None and sumpool > KMAX:
        spikes, v_out, h = forward(x, theta, v, spec, lay, train, h_dtype)
        return sum_pool_steps(spikes, sumpool), v_out, h
    k = sumpool
    out_shape = (lay.T,) + lay.step
    if k is not None:
        N, C, H, W = lay.step
        out_shape = (lay.T, N, C, H // k, W // k)
    out = torch.empty(out_shape, dtype=x.dtype, device=x.device)
    v_out = torch.empty(lay.step, dtype=torch.float32, device=x.device)
    h = torch.empty((lay.T,) + lay.step, dtype=h_dtype, device=x.device) if train else None
    if lay.T == 0 or lay.N == 0:
        v_out.copy_(initial_v(theta, spec, lay) if v is None else v)
        return out, v_out, h
    ks = Specialisation.for_neuron(spec, x.dtype, lay.per_channel, "train" if train else "infer", h_dtype,
                                   pooled=k is not None)
    kernel = get_kernel(ks, x.device.index)
    ptrs = (x.data_ptr(), theta.data_ptr(), _ptr(v), out.data_ptr(), v_out.data_ptr(), _ptr(h))
    if k is None:
        vec = _vectorised(ks.vec, lay.N, (x, v, out, v_out, h))
        args = (*ptrs, np.int64(lay.N), np.int32(lay.T), np.int64(lay.inner), np.int32(lay.C),
                np.int32(vec), *param_args(spec))
        n_threads = -(-lay.N // ks.vec)
    else:
        N, C, H, W = lay.step
        args = (*ptrs, np.int64(N * C), np.int32(H), np.int32(W), np.int32(k), np.int32(lay.T),
                np.int32(lay.C), *param_args(spec))
        n_threads = N * C * -(-H // k) * -(-W // k)  # one thread per (possibly partial) window
    _launch(kernel, x.device, n_threads, args)
    return out, v_out, h


def backward(grad_spikes, grad_v, h, theta, spec, lay: Layout, x_dtype, has_v: bool,
             need_x: bool = True, need_v: bool = True, need_theta: bool = True,
             sumpool: int | None = None):
    """BPTT through the T loop with the backward kernel; ``(grad_x, grad_v, grad_theta)``.

    ``grad_spikes``/``grad_v`` may be None (zero); with ``sumpool=k``, ``grad_spikes`` is the
    gradient of the window sums, which the kernel spreads over each window as it reads it.
    Unneeded gradients are not computed and come back as None. grad_x has x's shape and dtype,
    grad_v the fp32 step shape, grad_theta theta's shape (the kernel writes per-neuron partial
    sums, reduced here in fp32).
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
        ks = Specialisation.for_neuron(spec, x_dtype, lay.per_channel, "backward", h.dtype,
                                       pooled=bool(sumpool))
        kernel = get_kernel(ks, dev.index)
        pool = (sumpool, lay.step[2], lay.step[3]) if sumpool else (0, 0, 0)
        vec = _vectorised(ks.vec, lay.N, (None if sumpool else gs, gvo, h, gx, gv, gth))
        args = (_ptr(gs), _ptr(gvo), h.data_ptr(), theta.data_ptr(), _ptr(gx), _ptr(gv), _ptr(gth),
                np.int64(lay.N), np.int32(lay.T), np.int64(lay.inner), np.int32(lay.C),
                np.int32(vec), np.int32(has_v), np.float32(_alpha(spec)),
                np.float32(0.0 if spec.detach_reset else 1.0), *map(np.int32, pool), *param_args(spec))
        _launch(kernel, dev, -(-lay.N // ks.vec), args)
    return gx, gv, None if gth is None else reduce_theta_grad(gth, lay)
