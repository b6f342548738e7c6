"""Fused CPU neuron kernel: one pass per neuron over all T steps, in C, loaded with ctypes.

On a CPU the neuron update is bound by memory traffic; the torch reference runs 3-4 tensor ops per
step. ``cpu_neuron.c`` runs the whole T loop per block of neurons with the state in a local array,
so each step only streams ``x[t]`` in and ``s[t]`` out; blocks are spread over OpenMP threads (as
many as ``torch.get_num_threads()``).

The source is compiled on first use (``cpu_build.py``: the system C compiler, the kernel cache)
under a name hashed from the source, the flags and the CPU, so a change rebuilds it. Without a compiler (and no
cached build) or when the build fails, ``run_cpu`` runs the torch reference and warns once.

The kernel's I/O is float32: other input dtypes are converted to float32 in Python (one extra
pass) and the spikes back to the input's dtype. Results equal ``neuron_reference`` bit for bit
(same float operations in the same order, no FMA contraction, no fast-math). When autograd
needs a graph, the training kernels of ``cpu_train.py`` (forward saving h, BPTT backward in C)
run instead, or the reference where they do not apply.

``run_cpu(..., sumpool=k)`` fuses the neuron with the k x k, stride-k sum pool that follows it in
converted CNNs (``avg_pool2d(..., divisor_override=1)``): one [H, W] plane at a time, the T loop
inside, each step's spikes summed into ``[T, N, C, H//k, W//k]`` without ever writing the spike
tensor. ``pooled_reference`` is the same thing in plain torch (and the fallback).
"""
from __future__ import annotations

import ctypes
import operator

import torch

from ..errors import KernelError
from ..neurons import NeuronSpec, broadcast_threshold, neuron_reference
from .cpu_library import cpu_kernel_available, kernel_info, load_library, reset_library_state, warn_fallback
from .abi import param_vector, sum_pool_steps
from .cpu_source import variant_index

__all__ = ["run_cpu", "pooled_reference", "cpu_kernel_available", "load_library", "kernel_info",
           "reset_library_state", "BLOCK", "POOL_GROUP"]

#: Neurons per block (the T loop runs inside a block); 0 keeps the library's default (8192).
#: Tune per machine: the block's state (3 floats a neuron) should stay in L2.
BLOCK: int = 0
#: Planes per group in the fused neuron + sum pool (a thread runs the T loop over a group of
#: consecutive [H, W] planes); 0 keeps the library's default (about 16 KiB of membrane).
POOL_GROUP: int = 0


def _kernel_args(spec: NeuronSpec) -> tuple:
    """``(variant, v_init, P)``: how the generated kernel is told which neuron to run."""
    P = param_vector(spec)
    return variant_index(spec), float(spec.v_init), P.ctypes.data_as(ctypes.c_void_p), P


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def _into(out: torch.Tensor | None, spikes: torch.Tensor) -> torch.Tensor:
    if out is None or spikes is out:
        return spikes
    return out.copy_(spikes)


def _step_shape(x: torch.Tensor, spec: NeuronSpec, T: int | None) -> tuple[int, tuple[int, ...]]:
    """``(T, one step's shape)`` of a static ``[N, ...]`` or sequence ``[T, N, ...]`` input."""
    if spec.input_kind == "static":
        if T is None:
            raise KernelError("a static-input neuron needs T: pass the number of time steps")
        return int(T), tuple(x.shape)
    return x.shape[0], tuple(x.shape[1:])


def _sumpool_shape(k, step_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Check a sum-pool window against one step ``[N, C, H, W]``; return ``(k, H//k, W//k)``."""
    try:
        if isinstance(k, bool):
            raise TypeError
        ki = operator.index(k)  # an int, or a numpy / torch integer
    except TypeError:
        ki = 0
    if ki < 1:
        raise KernelError(f"sumpool must be a positive int window size (k x k, stride k), got "
                          f"{k!r}")
    k = ki
    if len(step_shape) != 4:
        raise KernelError(f"sumpool={k} pools 2-D planes, so one step must have shape [N, C, H, W], "
                          f"got {list(step_shape)} ({len(step_shape)}-D); run without sumpool "
                          "and pool separately")
    H, W = step_shape[2], step_shape[3]
    if H < k or W < k:
        raise KernelError(f"sumpool={k} needs planes of at least {k} x {k} (stride {k}, no "
                          f"padding), got {H} x {W}")
    return k, H // k, W // k


def pooled_reference(x: torch.Tensor, threshold, spec: NeuronSpec, T: int | None = None,
                     v: torch.Tensor | None = None, *, sumpool: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused neuron + sum pool in plain torch: ``neuron_reference`` then a k x k, stride-k
    ``avg_pool2d(..., divisor_override=1)`` of every step's spikes.

    Takes the same ``x``/``threshold``/``spec``/``T``/``v`` as ``neuron_reference`` with one step
    of shape ``[N, C, H, W]``; returns ``(window sums [T, N, C, H//k, W//k] in x's dtype, final v
    fp32 [N, C, H, W])``. Differentiable when the spec has a surrogate.
    """
    _, step_shape = _step_shape(x, spec, T)
    k, _, _ = _sumpool_shape(sumpool, step_shape)
    s, v = neuron_reference(x, threshold, spec, T, v)
    return sum_pool_steps(s, k), v


def _expand_v(v: torch.Tensor | None, step_shape: tuple[int, ...]) -> torch.Tensor | None:
    """The initial membrane broadcast to one step's shape, or a KernelError saying what to pass."""
    if v is None or tuple(v.shape) == step_shape:
        return v
    try:
        return v.expand(step_shape)
    except RuntimeError:
        raise KernelError(f"the initial membrane v has shape {list(v.shape)} but one step has "
                          f"shape {list(step_shape)}; pass v with the step's shape") from None


def _kernel_io(x: torch.Tensor, th: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous float32 input (the kernel's I/O type: one extra pass for other dtypes) and
    the flat threshold vector."""
    xf = x.detach()
    if xf.dtype != torch.float32:
        xf = xf.float()
    return xf.contiguous(), th.reshape(-1).contiguous()


def run_cpu(x: torch.Tensor, threshold, spec: NeuronSpec, T: int | None = None,
            v: torch.Tensor | None = None, *, out: torch.Tensor | None = None,
            sumpool: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one neuron layer over T steps with the fused C kernel; same contract as the reference.

    ``x`` is ``[T, N, ...]`` (sequence) or ``[N, ...]`` with ``T`` (static input, read once),
    ``threshold`` a scalar or one value per channel (dim 1 of a step), ``v`` the initial membrane
    (fp32, one step's shape) or None for ``v_init * threshold``. Returns ``(spikes [T, N, ...] in
    x's dtype, final v fp32)``, equal to ``neuron_reference``. ``out`` (contiguous, x's dtype,
    ``[T, N, ...]``) receives the spikes and is returned: it saves allocating the output, whose
    first touch (page faults) can cost more than the kernel. When autograd needs a graph it runs
    the C training kernels (``cpu_train.train_cpu``: a spec with a surrogate, fp32) or else the
    reference; the reference also when ``v`` is not fp32, and (with one warning) when no kernel
    builds.

    ``sumpool=k`` (steps must be ``[N, C, H, W]``, H and W at least k) returns instead of the
    spikes their k x k window sums with stride k, ``[T, N, C, H//k, W//k]`` in x's dtype (rows and
    columns that fill no window are dropped from the output but still simulated: v covers every
    neuron), equal to ``pooled_reference``; ``out`` then has that shape.
    """
    if not isinstance(x, torch.Tensor):
        raise KernelError(f"the CPU neuron kernel needs a torch.Tensor input, got {type(x).__name__}")
    for name, t in (("x", x), ("the initial membrane v", v), ("out", out)):
        if t is not None and t.device.type != "cpu":
            raise KernelError(f"the CPU neuron kernel got {name} on {t.device}; move it to the CPU "
                              "or use backend='cupy' for CUDA tensors")
    if sumpool is not None:
        return _run_cpu_sumpool(x, threshold, spec, T, v, out, sumpool)
    if _needs_grad(x, threshold, v):
        if out is not None:
            raise KernelError("out= is for inference; call run_cpu without out when autograd "
                              "needs a graph (or under torch.no_grad())")
        from .cpu_train import train_cpu
        res = train_cpu(x, threshold, spec, T, v)
        return res if res is not None else neuron_reference(x, threshold, spec, T, v)
    if spec.input_kind == "static":
        if T is None:
            raise KernelError("a static-input neuron needs T: pass the number of time steps")
        T = int(T)
        step_shape = tuple(x.shape)
    else:
        T = x.shape[0]
        step_shape = tuple(x.shape[1:])
    if out is not None and (tuple(out.shape) != (T,) + step_shape or out.dtype != x.dtype
                            or not out.is_contiguous()):
        raise KernelError(f"out must be a contiguous {x.dtype} tensor of shape {[T, *step_shape]}, "
                          f"got {out.dtype} {list(out.shape)}; allocate it with torch.empty")
    if v is not None and v.dtype != torch.float32:
        s, v = neuron_reference(x, threshold, spec, T, v)  # the state would not be fp32
        return _into(out, s), v
    th = broadcast_threshold(threshold, step_shape).detach().to("cpu")
    if T == 0:
        if v is None:
            v = torch.zeros(step_shape, dtype=torch.float32) + spec.v_init * th
        return _into(out, x.new_zeros((0,) + step_shape)), v
    v = _expand_v(v, step_shape)
    M = 1
    for d in step_shape:
        M *= d
    if M == 0:
        v = torch.zeros(step_shape, dtype=torch.float32) + spec.v_init * th if v is None else v
        return _into(out, x.new_zeros((T,) + step_shape)), v.clone()
    lib = load_library()
    if lib is None:
        warn_fallback()
        s, v = neuron_reference(x, threshold, spec, T, v)
        return _into(out, s), v

    xf, theta = _kernel_io(x, th)
    n_theta, inner = theta.numel(), 1
    if n_theta > 1:
        for d in step_shape[2:]:
            inner *= d
    v_in = None if v is None else v.detach().contiguous()
    if out is not None and x.dtype == torch.float32:
        spikes = out
    else:
        spikes = torch.empty((T,) + step_shape, dtype=torch.float32)
    v_out = torch.empty(step_shape, dtype=torch.float32)
    variant, v_init, P, _keep = _kernel_args(spec)
    rc = lib.snn_neuron_f32(
        xf.data_ptr(), spikes.data_ptr(), None if v_in is None else v_in.data_ptr(),
        v_out.data_ptr(), theta.data_ptr(), n_theta, inner, M, T,
        int(spec.input_kind == "static"), variant, v_init, P, int(BLOCK), max(1, torch.get_num_threads()))
    if rc == -4:
        raise KernelError("the CPU neuron kernel ran out of memory for its per-thread state; "
                          "set snncompile.kernels.cpu.BLOCK lower or use fewer threads")
    if rc != 0:
        raise KernelError(f"the CPU neuron kernel rejected its arguments (code {rc}); this is a "
                          "bug in snncompile: please report it with the spec and shapes")
    if x.dtype != torch.float32:
        spikes = spikes.to(x.dtype)
    return _into(out, spikes), v_out


def _run_cpu_sumpool(x: torch.Tensor, threshold, spec: NeuronSpec, T: int | None,
                     v: torch.Tensor | None, out: torch.Tensor | None, sumpool
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``run_cpu(..., sumpool=k)``: the neuron fused with a k x k, stride-k sum pool."""
    T, step_shape = _step_shape(x, spec, T)
    k, Ho, Wo = _sumpool_shape(sumpool, step_shape)
    N, C, H, W = step_shape
    out_shape = (T, N, C, Ho, Wo)
    if _needs_grad(x, threshold, v):
        if out is not None:
            raise KernelError("out= is for inference; call run_cpu without out when autograd "
                              "needs a graph (or under torch.no_grad())")
        from .cpu_train import train_cpu
        res = train_cpu(x, threshold, spec, T, v, sumpool=k)
        return res if res is not None else pooled_reference(x, threshold, spec, T, v, sumpool=k)
    if out is not None and (tuple(out.shape) != out_shape or out.dtype != x.dtype
                            or not out.is_contiguous()):
        raise KernelError(f"out must be a contiguous {x.dtype} tensor of shape {list(out_shape)} "
                          f"(the {k} x {k} window sums), got {out.dtype} {list(out.shape)}; "
                          "allocate it with torch.empty")
    if v is not None and v.dtype != torch.float32:
        p, v = pooled_reference(x, threshold, spec, T, v, sumpool=k)  # the state would not be fp32
        return _into(out, p), v
    th = broadcast_threshold(threshold, step_shape).detach().to("cpu")
    v = _expand_v(v, step_shape)
    if T == 0 or N * C == 0:
        if v is None:
            v = torch.zeros(step_shape, dtype=torch.float32) + spec.v_init * th
        return _into(out, x.new_zeros(out_shape)), (v if T == 0 else v.clone())
    lib = load_library()
    if lib is None:
        warn_fallback()
        p, v = pooled_reference(x, threshold, spec, T, v, sumpool=k)
        return _into(out, p), v

    xf, theta = _kernel_io(x, th)
    v_in = None if v is None else v.detach().contiguous()
    if out is not None and x.dtype == torch.float32:
        pooled = out
    else:
        pooled = torch.empty(out_shape, dtype=torch.float32)
    v_out = torch.empty(step_shape, dtype=torch.float32)
    variant, v_init, P, _keep = _kernel_args(spec)
    rc = lib.snn_neuron_sumpool_f32(
        xf.data_ptr(), pooled.data_ptr(), None if v_in is None else v_in.data_ptr(),
        v_out.data_ptr(), theta.data_ptr(), theta.numel(), N * C, H, W, k, T,
        int(spec.input_kind == "static"), variant, v_init, P, int(POOL_GROUP), max(1, torch.get_num_threads()))
    if rc == -4:
        raise KernelError("the CPU neuron kernel ran out of memory for its per-thread state "
                          f"({H} x {W} planes); set snncompile.kernels.cpu.POOL_GROUP lower or "
                          "use fewer threads")
    if rc != 0:
        raise KernelError(f"the CPU neuron + sum pool kernel rejected its arguments (code {rc}); "
                          "this is a bug in snncompile: please report it with the spec and shapes")
    if x.dtype != torch.float32:
        pooled = pooled.to(x.dtype)
    return _into(out, pooled), v_out
