"""End to end: a converted VGG-11-BN against its ANN, per neuron backend and precision.

    python benchmarks/end_to_end.py [--batch 256] [--T 8] [--device cuda] [--json out.json]

VGG-11-BN on 3x32x32 (random weights and calibration images: this measures speed, not accuracy),
converted with the default pipeline. In one run it times: the ANN at batch B and at batch T*B
(the same convolutions the SNN runs), and the SNN at T with the torch reference neurons and with
the CuPy kernels, in fp32 and under bf16/fp16 autocast; prints ms and ratios to the ANN at T*B.
On a machine without CUDA, ``--device cpu`` runs the same table (small batch advised).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import snncompile
from snncompile.models import get_model


def _timeit(fn, device, warmup: int = 2, repeat: int = 5) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--T", type=int, default=8)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("end_to_end.py: no CUDA device here; run it on a GPU machine or pass --device cpu")
    device = torch.device(a.device)
    torch.manual_seed(0)
    model = get_model("vgg11_bn").to(device).eval()
    x = torch.rand(a.batch, 3, 32, 32, device=device)
    calib = torch.rand(64, 3, 32, 32, device=device)
    xt = x.repeat(a.T, 1, 1, 1)
    rows = []
    with torch.no_grad():
        ann_b = _timeit(lambda: model(x), device)
        ann_tb = _timeit(lambda: model(xt), device)
        rows += [("ANN, batch B", "fp32", ann_b), ("ANN, batch T*B", "fp32", ann_tb)]
        backends = ["torch"] + (["cupy"] if device.type == "cuda" else ["cpu"])
        dtypes = [("fp32", None)] + ([("bf16", torch.bfloat16), ("fp16", torch.float16)] if device.type == "cuda" else [])
        for hoist in (False, True):
            for backend in backends:
                snn = snncompile.compile(model, calib, T=a.T, backend=backend, hoist=hoist)
                for name, dt in dtypes:
                    def run():
                        if dt is None:
                            return snn(x)
                        with torch.autocast(device.type, dtype=dt):
                            return snn(x)
                    label = f"SNN T={a.T}, {backend}" + (", hoisted" if hoist else "")
                    rows.append((label, name, _timeit(run, device)))
    print(f"VGG-11-BN 3x32x32, batch B={a.batch}, T={a.T}, device {device} "
          f"({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'})")
    print(f"{'what':<34}{'dtype':>6}{'ms':>10}{'x ANN(T*B)':>12}")
    for label, dt, ms in rows:
        print(f"{label:<34}{dt:>6}{ms:>10.2f}{ms / ann_tb:>12.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump([{"what": l, "dtype": d, "ms": m, "ratio_ann_tb": m / ann_tb} for l, d, m in rows], f, indent=2)


if __name__ == "__main__":
    main()
