"""Benchmark the fused CPU neuron kernel against the torch reference and a plain copy.

Cases (IF neuron, soft reset, scalar threshold):
  static   x [N=8, 32, 26, 26] read once, T=128 steps out
  sequence x [T=128, 8, 32, 11, 11]

For each case: the fused kernel (``snncompile.kernels.cpu.run_cpu``; once allocating its output
like the reference does, once with ``out=`` a preallocated tensor), the torch reference
(``neuron_reference``) and ``torch.Tensor.copy_`` of as many bytes as the spike output into a
preallocated tensor. GB/s is
the compulsory traffic (input read once + spikes written + final v written; for copy_: read +
write of the output's bytes) over the median time; the three run round-robin.

Then the neuron fused with the 2 x 2 stride-2 sum pool that follows it in the converted MNIST
CNN (static x [N=100, 32, 26, 26], T=32, IF): ``run_cpu(..., sumpool=2)`` (allocating, and with
``out=``) against the non-pooled fused kernel + ``F.avg_pool2d(..., divisor_override=1)`` (and
that kernel alone) and against the torch composition (``pooled_reference``: reference neuron +
the same avg_pool2d).
Run:

    python benchmarks/cpu_neuron.py [--threads N] [--repeat R] [--block B] [--case all|neuron|sumpool]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from snncompile.kernels import cpu
from snncompile.kernels.cpu import kernel_info, pooled_reference, run_cpu
from snncompile.neurons import NeuronSpec, neuron_reference

__all__ = ["time_ms", "run_case", "run_sumpool_case", "main"]


def time_ms(fns: dict, repeat: int, warmup: int = 1) -> tuple[dict, dict]:
    """Median and best wall time in ms of each ``fns[name]()``, run round-robin (load drifts
    hit all alike).

    ``fns`` maps a name to ``(fn, every)``: ``fn`` runs in every ``every``-th round only (for slow
    ones).
    """
    for fn, _ in fns.values():
        for _ in range(warmup):
            fn()
    times: dict = {name: [] for name in fns}
    for r in range(repeat):
        for name, (fn, every) in fns.items():
            if r % every:
                continue
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return ({name: statistics.median(ts) for name, ts in times.items()},
            {name: min(ts) for name, ts in times.items()})


def run_case(name: str, x: torch.Tensor, spec: NeuronSpec, T: int, repeat: int) -> list[tuple]:
    """Time fused / reference / copy_ on one case; check fused == reference; return table rows."""
    theta = torch.tensor(1.0)
    step = tuple(x.shape) if spec.input_kind == "static" else tuple(x.shape[1:])
    M = 1
    for d in step:
        M *= d
    out_bytes = T * M * 4
    in_bytes = x.numel() * 4
    neuron_bytes = in_bytes + out_bytes + M * 4

    s_ref, v_ref = neuron_reference(x, theta, spec, T)
    s_cpu, v_cpu = run_cpu(x, theta, spec, T)
    if not (torch.equal(s_ref, s_cpu) and torch.equal(v_ref, v_cpu)):
        raise SystemExit(f"{name}: fused kernel does not match the reference")

    src = torch.rand(T * M)
    dst = torch.empty_like(src)
    out = torch.empty_like(s_ref)
    fns = {"fused": (lambda: run_cpu(x, theta, spec, T), 1),
           "fused out=": (lambda: run_cpu(x, theta, spec, T, out=out), 1),
           "reference": (lambda: neuron_reference(x, theta, spec, T), 4),
           "copy_": (lambda: dst.copy_(src), 1)}
    med, best = time_ms(fns, repeat)
    nbytes = {"copy_": 2 * out_bytes}
    return [(name, what, med[what], best[what], nbytes.get(what, neuron_bytes) / med[what] / 1e6,
             med[what] / med["fused"], med[what] / med["copy_"]) for what in fns]


def run_sumpool_case(x: torch.Tensor, spec: NeuronSpec, T: int, k: int, repeat: int) -> list[tuple]:
    """Time neuron + k x k sum pool: fused / fused out= / fused neuron + avg_pool2d / torch
    composition; check all four agree exactly; return rows (impl, median ms, best ms, ratio to
    the fused one)."""
    theta = torch.tensor(1.0)
    N, C, H, W = x.shape if spec.input_kind == "static" else x.shape[1:]

    def unfused():
        s, v = run_cpu(x, theta, spec, T)
        p = F.avg_pool2d(s.reshape(T * N, C, H, W), k, k, divisor_override=1)
        return p.reshape(T, N, C, H // k, W // k), v

    p_ref, v_ref = pooled_reference(x, theta, spec, T, sumpool=k)
    out = torch.empty_like(p_ref)
    fns = {"fused sumpool": (lambda: run_cpu(x, theta, spec, T, sumpool=k), 1),
           "fused sumpool out=": (lambda: run_cpu(x, theta, spec, T, out=out, sumpool=k), 1),
           "fused + avg_pool2d": (unfused, 1),
           "fused, no pool": (lambda: run_cpu(x, theta, spec, T), 1),
           "torch composition": (lambda: pooled_reference(x, theta, spec, T, sumpool=k), 4)}
    for what, (fn, _) in fns.items():
        if what == "fused, no pool":
            continue  # not pooled: checked against the reference by the neuron cases
        p, v = fn()
        if not (torch.equal(p, p_ref) and torch.equal(v, v_ref)):
            raise SystemExit(f"sumpool: {what} does not match the torch composition")
    del p, v, p_ref, v_ref
    med, best = time_ms(fns, repeat)
    return [(what, med[what], best[what], med[what] / med["fused sumpool"]) for what in fns]


def main(argv: list[str] | None = None) -> None:
    """Run the cases and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as is)")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--block", type=int, default=0, help="neurons per block (0: the kernel's default)")
    ap.add_argument("--case", choices=("all", "neuron", "sumpool"), default="all",
                    help="neuron: the plain neuron cases; sumpool: the fused neuron + sum pool")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu.BLOCK = args.block
    info = kernel_info()
    if not info["available"]:
        raise SystemExit(f"fused CPU kernel unavailable: {info['error']}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, kernel block "
          f"{args.block or info['block']}, openmp {info['openmp']}")
    torch.manual_seed(0)
    if args.case in ("all", "neuron"):
        T = 128
        cases = [
            ("static [8,32,26,26] T=128", torch.rand(8, 32, 26, 26) * 0.5,
             NeuronSpec(kind="if", v_init=0.5, input_kind="static")),
            ("sequence [128,8,32,11,11]", torch.rand(T, 8, 32, 11, 11) * 0.5,
             NeuronSpec(kind="if", v_init=0.5, input_kind="sequence")),
        ]
        rows = []
        for name, x, spec in cases:
            rows += run_case(name, x, spec, T, args.repeat)
        print(f"{'case':<27} {'impl':<11} {'ms':>9} {'best ms':>9} {'GB/s':>7} {'t/fused':>8} "
              f"{'t/copy_':>8}")
        for name, what, t, best, gbs, r_fused, r_copy in rows:
            print(f"{name:<27} {what:<11} {t:9.3f} {best:9.3f} {gbs:7.2f} {r_fused:8.2f} "
                  f"{r_copy:8.2f}")
        print("ms: median; GB/s and ratios from the median. fused allocates its output like the "
              "reference;\nfused out= writes into a preallocated tensor, like copy_ does.")
    if args.case in ("all", "sumpool"):
        T, k = 32, 2
        x = torch.rand(100, 32, 26, 26) * 0.5
        spec = NeuronSpec(kind="if", v_init=0.5, input_kind="static")
        rows = run_sumpool_case(x, spec, T, k, max(3, args.repeat // 2))
        print(f"\nneuron + {k}x{k} sum pool, static [100,32,26,26] T={T} IF -> [T,100,32,13,13]")
        print(f"{'impl':<20} {'ms':>9} {'best ms':>9} {'t/fused':>8}")
        for what, t, best, ratio in rows:
            print(f"{what:<20} {t:9.3f} {best:9.3f} {ratio:8.2f}")
        print("ms: median, ratio from the median. fused sumpool allocates its output; out= writes "
              "into a preallocated one;\nfused + avg_pool2d materialises the spikes [T,100,32,26,26] "
              "and pools them; fused, no pool is its first half alone;\ntorch composition is pooled_reference.")


if __name__ == "__main__":
    main()
