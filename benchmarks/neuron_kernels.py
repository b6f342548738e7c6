"""Benchmark the CUDA neuron kernels against the torch reference, torch.compile and a copy.

For IF, LIF (SpikingJelly form) and signed IF (soft reset, per-channel threshold), T in {4, 8,
32}, N in {1M, 16M} neurons (a step is [N / 64, 64], or [N / 16384, 64, 16, 16] with ``--sumpool
k``: the neuron fused with a k x k sum pool), fp32 / fp16 / bf16, two modes:

* ``infer``: spikes and the final membrane, no autograd;
* ``train``: forward + backward with the atan surrogate (``torch.autograd.backward`` on the spikes
  and the final membrane with given output gradients; x and the threshold require grad).

Implementations: ``kernel`` (``snncompile.kernels.cuda_launch.run_cupy``), ``reference``
(``neuron_reference``, the torch loop), ``compiled`` (``torch.compile`` of the reference) and
``copy`` (``Tensor.copy_`` device to device, moving as many bytes as the kernel must). GB/s is
that compulsory traffic over the median time:

* infer: x read + spikes written (T*N io bytes each) + final v written (N*4);
* train: forward x read, spikes and h (fp32) written, backward spike gradients and h read,
  x gradients written, plus the final v, its gradient and threshold partials (N*4 each);
* with ``--sumpool k`` the spikes and their gradients move T*N/k^2 io bytes instead of T*N;

so ``%copy`` is the kernel's (or the reference's) share of a plain copy's bandwidth. The table
prints as it goes; ``compiled`` recompiles per dtype, T and N (minutes for the whole sweep; leave
it out with ``--impl kernel,reference,copy``). Run:

    python benchmarks/neuron_kernels.py [--quick] [--impl kernel,copy] [--sumpool 2] [--repeat 20] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch
import torch.nn.functional as F

from snncompile.neurons import NeuronSpec, neuron_reference

__all__ = ["traffic_bytes", "time_ms", "bench_case", "main"]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
IMPLS = ("kernel", "reference", "compiled", "copy")
SPECS = {"if": NeuronSpec(kind="if", v_init=0.5),
         "lif": NeuronSpec(kind="lif", form="spikingjelly", tau=2.0, v_init=0.5),
         "signed_if": NeuronSpec(kind="signed_if", v_init=0.5)}


def traffic_bytes(mode: str, T: int, N: int, io_bytes: int, sumpool: int | None = None) -> int:
    """Bytes a neuron layer must move (see the module docstring)."""
    out = T * N * io_bytes // (sumpool * sumpool if sumpool else 1)  # spikes (or window sums)
    if mode == "infer":
        return T * N * io_bytes + out + 4 * N
    return T * N * (2 * io_bytes + 8) + 2 * out + 3 * 4 * N


def _pooled(fn, k):
    """``fn`` followed by the k x k sum pool of its spikes (the unfused reference)."""
    def run(x, theta, spec):
        s, v = fn(x, theta, spec)
        return F.avg_pool2d(s.flatten(0, 1), k, divisor_override=1).unflatten(0, s.shape[:2]), v
    return run


def time_ms(fn, repeat: int, warmup: int = 2) -> float:
    """Median milliseconds of ``fn()`` on the GPU (CUDA events, after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _runner(impl: str, kind: str, mode: str, x, theta, gs, gv, compiled_cache: dict, sumpool=None):
    from snncompile.kernels.cuda_launch import run_cupy

    spec = SPECS[kind] if mode == "infer" else SPECS[kind].replace(surrogate="atan")
    if impl == "kernel":
        fn = (lambda x, theta, spec: run_cupy(x, theta, spec, sumpool=sumpool)) if sumpool else run_cupy
    elif impl == "reference":
        fn = _pooled(neuron_reference, sumpool) if sumpool else neuron_reference
    else:
        key = (kind, mode, sumpool)
        if key not in compiled_cache:
            ref = _pooled(neuron_reference, sumpool) if sumpool else neuron_reference
            compiled_cache[key] = torch.compile(ref, dynamic=False)
        fn = compiled_cache[key]
    if mode == "infer":
        def run():
            with torch.no_grad():
                fn(x, theta, spec)
    else:
        def run():
            s, v = fn(x, theta, spec)
            torch.autograd.backward([s, v], [gs, gv])
            x.grad = theta.grad = None
    return run


def bench_case(kind: str, mode: str, dtype: str, T: int, N: int, impls, repeat: int,
               copy_ms_cache: dict, compiled_cache: dict, sumpool: int | None = None) -> list[dict]:
    """Time every implementation on one case; returns one row per implementation."""
    dt, dev = DTYPES[dtype], torch.device("cuda")
    C, HW = 64, 16
    step = (N // (C * HW * HW), C, HW, HW) if sumpool else (N // C, C)
    out_step = (step[0], C, HW // sumpool, HW // sumpool) if sumpool else step
    x = torch.randn((T,) + step, device=dev).add_(0.3).to(dt).requires_grad_(mode == "train")
    theta = (torch.rand(C, device=dev) + 0.5).requires_grad_(mode == "train")
    gs = torch.randn((T,) + out_step, device=dev).to(dt) if mode == "train" else None
    gv = torch.randn(step, device=dev) if mode == "train" else None
    nbytes = traffic_bytes(mode, T, N, x.element_size(), sumpool)
    if nbytes not in copy_ms_cache:
        src = torch.empty(nbytes // 2, dtype=torch.uint8, device=dev)
        dst = torch.empty_like(src)
        copy_ms_cache[nbytes] = time_ms(lambda: dst.copy_(src), repeat)
        del src, dst
    copy_ms = copy_ms_cache[nbytes]
    rows = []
    for impl in impls:
        if impl == "copy":
            ms = copy_ms
        else:
            try:
                ms = time_ms(_runner(impl, kind, mode, x, theta, gs, gv, compiled_cache, sumpool), repeat)
            except torch.cuda.OutOfMemoryError:
                ms = float("nan")
            except Exception as e:  # e.g. torch.compile not available: report and go on
                print(f"  {impl} {kind} {mode} {dtype} T={T} N={N}: {type(e).__name__}: {e}"[:300],
                      file=sys.stderr)
                ms = float("nan")
            torch.cuda.empty_cache()
        gbs = nbytes / ms / 1e6 if ms == ms else float("nan")
        rows.append(dict(kind=kind, mode=mode, dtype=dtype, T=T, N=N, impl=impl, ms=ms, gbs=gbs, sumpool=sumpool,
                         frac_copy=copy_ms / ms if ms == ms else float("nan"), bytes=nbytes))
    return rows


def _print_rows(rows: list[dict], header: bool) -> None:
    head = f"{'kind':9} {'mode':5} {'dtype':5} {'T':>3} {'N':>9} {'impl':9} {'ms':>9} {'GB/s':>8} {'%copy':>6}"
    if header:
        print(head)
        print("-" * len(head))
    for r in rows:
        print(f"{r['kind']:9} {r['mode']:5} {r['dtype']:5} {r['T']:>3} {r['N']:>9} {r['impl']:9} "
              f"{r['ms']:>9.3f} {r['gbs']:>8.1f} {100 * r['frac_copy']:>5.0f}%", flush=True)


def main(argv=None) -> int:
    """Parse arguments, run the sweep, print the table (and write JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", default="if,lif", help=f"comma-separated, of {','.join(SPECS)}")
    ap.add_argument("--sumpool", type=int, default=None, help="fuse a k x k sum pool (N: multiples of 16384)")
    ap.add_argument("--modes", default="infer,train")
    ap.add_argument("--dtypes", default="fp32,fp16,bf16")
    ap.add_argument("--T", default="4,8,32", help="comma-separated time steps")
    ap.add_argument("--N", default=f"{1 << 20},{1 << 24}", help="comma-separated neuron counts (multiples of 64)")
    ap.add_argument("--impl", default=",".join(IMPLS), help=f"subset of {','.join(IMPLS)}")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="T=8, N=1M, fp32 and fp16, 5 repeats")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/neuron_kernels.py needs a CUDA GPU, and torch.cuda.is_available() is False "
              "(a CPU-only torch build or no GPU). Run it on a machine with an NVIDIA GPU, a CUDA "
              "build of PyTorch and CuPy (pip install cupy-cuda12x); for the CPU kernel see "
              "benchmarks/cpu_neuron.py.", file=sys.stderr)
        return 1
    from snncompile.kernels.cuda_launch import cupy_available

    if not cupy_available():
        print("benchmarks/neuron_kernels.py needs CuPy for the kernels: pip install cupy-cuda12x "
              "(or cupy-cuda13x, matching your CUDA).", file=sys.stderr)
        return 1
    if args.quick:
        args.T, args.N, args.dtypes, args.repeat = "8", str(1 << 20), "fp32,fp16", 5
    impls = [i for i in args.impl.split(",") if i]
    bad = [i for i in impls if i not in IMPLS]
    if bad:
        ap.error(f"unknown --impl {bad}; choose from {IMPLS}")
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}")
    rows, copy_cache, compiled_cache = [], {}, {}
    for kind in args.kinds.split(","):
        for mode in args.modes.split(","):
            for dtype in args.dtypes.split(","):
                for T in map(int, args.T.split(",")):
                    for N in map(int, args.N.split(",")):
                        case = bench_case(kind, mode, dtype, T, N, impls, args.repeat, copy_cache,
                                          compiled_cache, args.sumpool)
                        _print_rows(case, header=not rows)
                        rows += case
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"wrote {len(rows)} rows to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
