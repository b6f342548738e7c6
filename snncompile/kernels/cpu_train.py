"""Training on the CPU backend: the fused forward (saving fire's h, e.g. u - theta) and BPTT backward in C,
as one autograd node per neuron layer.

``cpu_neuron_train.c`` is built once per surrogate (its derivative is the same C expression the
CUDA kernels use, ``Surrogate.cuda``) into the kernel cache, like the inference kernel (and
loaded through the same checks, ``cpu_build.load_or_build``: nothing unverified is loaded). The
forward's spikes and final v equal ``neuron_reference`` bit for bit; the gradients equal
autograd's through the reference to float rounding. When no library builds, or for inputs it
does not take (a learned leak, non-fp32 data), ``train_cpu`` returns None and the caller runs the
reference.
"""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import torch

from ..errors import KernelError
from ..neurons import NeuronSpec, broadcast_threshold, registry_version
from ..surrogate import get_surrogate
from . import cpu_build
from .abi import param_vector
from .cpu_source import variant_index

__all__ = ["train_cpu", "train_library", "TRAIN_SOURCE"]

TRAIN_SOURCE = Path(__file__).with_name("cpu_neuron_train.c")
_lock = threading.Lock()
_libs: dict = {}  # surrogate define -> library (or None); "version": the family registry it was built from
_errors: dict[str, str] = {}


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, f32, ptr, c_int = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int
    lib.snn_train_forward_f32.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, c_int, c_int, f32, ptr,
                                          c_int]
    lib.snn_train_forward_f32.restype = c_int
    lib.snn_train_backward_f32.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, c_int, c_int,
                                           c_int, c_int, f32, f32, ptr, c_int]
    lib.snn_train_backward_f32.restype = c_int
    lib.snn_train_forward_pool_f32.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, c_int,
                                               c_int, f32, ptr, c_int]
    lib.snn_train_forward_pool_f32.restype = c_int
    lib.snn_train_backward_pool_f32.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64,
                                                c_int, c_int, c_int, c_int, f32, f32, ptr, c_int]
    lib.snn_train_backward_pool_f32.restype = c_int
    return lib


def _define(surrogate: str) -> str:
    return f"SURROGATE_GRAD(x,alpha)=({get_surrogate(surrogate).cuda})"


def train_library(surrogate: str) -> ctypes.CDLL | None:
    """The training kernels for ``surrogate`` (built on first use), or None when they cannot be
    built (the reason is in ``train_library_error``)."""
    define = _define(surrogate)
    with _lock:
        if _libs.get("version") != registry_version():  # a family was registered: build with it
            _libs.clear()
            _errors.clear()
            _libs["version"] = registry_version()
        if define in _libs:
            return _libs[define]
        try:
            lib, _ = cpu_build.load_or_build("cpu_neuron_train", cpu_build.kernel_source(TRAIN_SOURCE, train=True),
                                             _bind, (define,))
        except (KernelError, OSError) as e:
            _errors[define] = str(e)
            lib = None
        _libs[define] = lib
        return lib


def train_library_error(surrogate: str) -> str | None:
    """Why the training kernels for ``surrogate`` did not build (None if they did or were not tried)."""
    return _errors.get(_define(surrogate))


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _layout(step_shape: tuple[int, ...], n_theta: int) -> tuple[int, int]:
    M = 1
    for d in step_shape:
        M *= int(d)
    if n_theta == 1:
        return M, 1
    inner = 1
    for d in step_shape[2:]:
        inner *= int(d)
    return M, max(inner, 1)


def _kernel_args(spec: NeuronSpec) -> tuple:
    """``(variant, v_init, P pointer, P array)``: which generated neuron runs, with what numbers."""
    P = param_vector(spec)
    return variant_index(spec), float(spec.v_init), P.ctypes.data_as(ctypes.c_void_p), P


class _CpuNeuronFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, theta, v, spec, T, lib, k):
        static = spec.input_kind == "static"
        step_shape = tuple(x.shape) if static else tuple(x.shape[1:])
        th = broadcast_threshold(theta, step_shape).detach().reshape(-1).contiguous().float()
        M, inner = _layout(step_shape, th.numel())
        xf = x.detach().contiguous()
        vf = None if v is None else v.detach().float().expand(step_shape).contiguous()
        h = torch.empty((T,) + step_shape, dtype=torch.float32)
        v_out = torch.empty(step_shape, dtype=torch.float32)
        variant, v_init, P, _keep = _kernel_args(spec)
        threads = max(1, torch.get_num_threads())
        if k is None:
            out = torch.empty((T,) + step_shape, dtype=torch.float32)
            rc = lib.snn_train_forward_f32(
                _ptr(xf), _ptr(out), _ptr(h), _ptr(vf), _ptr(v_out), _ptr(th), th.numel(), inner, M, T, variant,
                int(static), v_init, P, threads)
        else:
            N, C, H, W = step_shape
            out = torch.empty((T, N, C, H // k, W // k), dtype=torch.float32)
            rc = lib.snn_train_forward_pool_f32(
                _ptr(xf), _ptr(out), _ptr(h), _ptr(vf), _ptr(v_out), _ptr(th), th.numel(), N * C, H, W, k, T,
                variant, int(static), v_init, P, threads)
        if rc != 0:
            raise KernelError(f"the CPU training kernel failed (code {rc}: -1 bad arguments, -2 out of memory)")
        ctx.save_for_backward(h, th)
        ctx.spec, ctx.lib, ctx.T, ctx.M, ctx.inner, ctx.k = spec, lib, T, M, inner, k
        ctx.step_shape, ctx.has_v, ctx.theta_shape = step_shape, v is not None, theta.shape
        ctx.v_shape = None if v is None else v.shape
        return out, v_out

    @staticmethod
    def backward(ctx, g_spikes, g_v):
        h, th = ctx.saved_tensors
        spec, T, M, step_shape = ctx.spec, ctx.T, ctx.M, ctx.step_shape
        need_x, need_theta, need_v = ctx.needs_input_grad[:3]
        static = spec.input_kind == "static"
        gs = None if g_spikes is None else g_spikes.float().contiguous()
        gvo = None if g_v is None else g_v.float().expand(step_shape).contiguous()
        gx = torch.empty(step_shape if static else (T,) + step_shape, dtype=torch.float32) if need_x else None
        gv = torch.empty(step_shape, dtype=torch.float32) if need_v else None
        gth = torch.empty(step_shape, dtype=torch.float32) if need_theta else None
        if T == 0:
            for t in (gx, gv, gth):
                if t is not None:
                    t.zero_()
        else:
            variant, v_init, P, _keep = _kernel_args(spec)
            alpha = get_surrogate(spec.surrogate).default_alpha if spec.alpha is None else float(spec.alpha)
            common = (variant, int(static), int(ctx.has_v), int(spec.detach_reset), v_init, alpha, P,
                      max(1, torch.get_num_threads()))
            ptrs = (_ptr(gs), _ptr(gvo), _ptr(h), _ptr(th), _ptr(gx), _ptr(gv), _ptr(gth), th.numel())
            if ctx.k is None:
                rc = ctx.lib.snn_train_backward_f32(*ptrs, ctx.inner, M, T, *common)
            else:
                N, C, H, W = step_shape
                rc = ctx.lib.snn_train_backward_pool_f32(*ptrs, N * C, H, W, ctx.k, T, *common)
            if rc != 0:
                raise KernelError(f"the CPU training kernel failed (code {rc}: -1 bad arguments, -2 out of memory)")
        if gth is not None:
            n = th.numel()
            gth = (gth.reshape(-1, n, ctx.inner).sum(dim=(0, 2)) if n > 1 else gth.sum()).reshape(ctx.theta_shape)
        if gv is not None and ctx.v_shape is not None and tuple(ctx.v_shape) != step_shape:
            gv = gv.sum_to_size(ctx.v_shape)
        return gx, gth, gv, None, None, None, None


def train_cpu(x: torch.Tensor, threshold, spec: NeuronSpec, T: int | None, v: torch.Tensor | None,
              sumpool: int | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Run one neuron layer with the C training kernels as one autograd node.

    Same contract as ``neuron_reference`` (spikes ``[T, N, ...]``, final v fp32) for a spec with
    a surrogate and fp32 CPU tensors; with ``sumpool=k`` (steps ``[N, C, H, W]``) the spikes'
    k x k, stride-k window sums ``[T, N, C, H//k, W//k]`` instead, the spike tensor never
    written (as ``pooled_reference``). Returns None when the kernels do not apply here (no
    surrogate, other dtypes, no compiler), so the caller runs the reference.
    """
    if spec.surrogate is None or x.dtype != torch.float32 or x.device.type != "cpu":
        return None
    theta = threshold if isinstance(threshold, torch.Tensor) else torch.tensor(float(threshold))
    if theta.dtype != torch.float32 or (v is not None and v.dtype != torch.float32):
        return None
    if spec.input_kind == "static":
        if T is None:
            raise KernelError("a static-input neuron needs T: pass the number of time steps")
        T = int(T)
    else:
        T = x.shape[0]
    if sumpool is not None:
        step = tuple(x.shape) if spec.input_kind == "static" else tuple(x.shape[1:])
        if len(step) != 4 or step[2] < sumpool or step[3] < sumpool:
            return None
    lib = train_library(spec.surrogate)
    if lib is None:
        return None
    return _CpuNeuronFunction.apply(x, theta, v, spec, T, lib, sumpool)
