"""Time per training step of the MNIST CNN trained directly at T=4, with each neuron backend.

    python benchmarks/train_step.py [--batch 64] [--T 4] [--steps 10] [--device cpu|cuda]

One run times, per step (forward over T steps, cross-entropy on the mean output, backward
through time, Adam step), best of ``--steps`` after two warm-up steps:
  * the SNN from ``snncompile.to_trainable(MnistCNN, T, neuron="lif", surrogate="atan")`` with
    each backend available on the device (CPU: torch reference, cpu; CUDA: torch, cupy);
  * the same ANN trained on T*batch images (every layer sees as many rows as in the SNN: the
    work of the convolutions, batch norm and pools alone) and on batch images.
The ratio SNN / ANN(T*batch) is what the neurons and their BPTT cost on top of the layers.
Note: on the CPU, training runs the neurons on the torch reference whatever the backend (the
fused C kernel has no backward), so the 'cpu' row shows that fallback, not a kernel.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import snncompile
from snncompile.losses import ce_rate_loss
from snncompile.models import get_model


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_steps(step, steps: int, device) -> float:
    for _ in range(2):
        step()
    best = float("inf")
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def snn_step_time(backend: str, x, y, T: int, steps: int, device) -> float:
    torch.manual_seed(0)
    snn = snncompile.to_trainable(get_model("mnist_cnn"), T=T, neuron="lif", surrogate="atan",
                                  backend=backend, device=device)
    opt = torch.optim.Adam(snn.parameters(), 1e-3)

    def step():
        loss = ce_rate_loss(snn.run_sequence(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return _time_steps(step, steps, device)


def ann_step_time(x, y, steps: int, device) -> float:
    torch.manual_seed(0)
    model = get_model("mnist_cnn").to(device).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return _time_steps(step, steps, device)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, generator=gen).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)
    xT = torch.rand(args.T * args.batch, 1, 28, 28, generator=gen).to(device)
    yT = torch.randint(0, 10, (args.T * args.batch,), generator=gen).to(device)
    backends = ["torch", "cpu"] if device.type == "cpu" else ["torch", "cupy"]
    ann_T = ann_step_time(xT, yT, args.steps, device)
    ann_1 = ann_step_time(x, y, args.steps, device)
    rows = {}
    for b in backends:
        try:
            rows[b] = snn_step_time(b, x, y, args.T, args.steps, device)
        except Exception as e:  # e.g. CuPy missing: say so and go on
            print(f"backend {b}: not available ({type(e).__name__}: {e})")
    print(f"MNIST CNN training step, batch {args.batch}, T={args.T}, on {device} "
          f"({torch.get_num_threads()} threads); best of {args.steps}:")
    print(f"  ANN, {args.T * args.batch} images (the layers' work at T*batch): {1000 * ann_T:8.1f} ms")
    print(f"  ANN, {args.batch} images:                                {1000 * ann_1:8.1f} ms")
    for b, t in rows.items():
        print(f"  SNN backend={b:6s}: {1000 * t:8.1f} ms   = {t / ann_T:5.2f}x the ANN at T*batch")
    return {"ann_T": ann_T, "ann_1": ann_1, **rows}


if __name__ == "__main__":
    main()
