"""The training loop the direct-training scripts share: Adam, cosine decay, BPTT over T steps.

Works on any SpikingModule from ``snncompile.to_trainable``: each batch runs all T steps, the
loss (snncompile.losses) takes the output sequence ``[T, N, C]``, and ``backward()`` goes back
through time. ``to_input`` turns a batch of images into what the SNN reads (e.g. columns as a
sequence).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

from snncompile.runtime import SpikingModule

__all__ = ["fit", "evaluate_snn"]


@torch.no_grad()
def evaluate_snn(snn: SpikingModule, x: torch.Tensor, y: torch.Tensor, batch_size: int = 250,
                 to_input: Callable = lambda x: x) -> float:
    """Top-1 accuracy (fraction) of ``snn(x)`` (mean or last readout) in eval mode."""
    snn.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        out = snn(to_input(x[i:i + batch_size]))
        correct += (out.argmax(1) == y[i:i + batch_size]).sum().item()
    return correct / len(x)


def fit(snn: SpikingModule, data: tuple, *, epochs: int, lr: float, loss_fn: Callable, batch_size: int = 64,
        weight_decay: float = 0.0, augment: Callable | None = None, to_input: Callable = lambda x: x,
        seed: int = 0, name: str = "snn", verbose: bool = True, eval_every: int = 1) -> dict:
    """Train ``snn`` on ``data = (x_train, y_train, x_test, y_test)``; returns a summary dict
    (final test accuracy, per-epoch losses and accuracies, seconds per step and in all)."""
    x_train, y_train, x_test, y_test = data
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(snn.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    losses, accs, t0, steps = [], [], time.perf_counter(), 0
    acc = float("nan")
    for epoch in range(epochs):
        snn.train()
        perm = torch.randperm(len(x_train), generator=gen)
        running, seen = 0.0, 0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if augment is not None:
                xb = augment(xb, gen)
            loss = loss_fn(snn.run_sequence(to_input(xb)), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * len(idx)
            seen += len(idx)
            steps += 1
        losses.append(running / seen)
        if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
            acc = evaluate_snn(snn, x_test, y_test, to_input=to_input)
            accs.append(acc)
        if verbose:
            print(f"[{name}] epoch {epoch + 1:3d}/{epochs}  train loss {losses[-1]:.4f}  "
                  f"test acc {100 * acc:6.2f}%  ({time.perf_counter() - t0:6.1f} s)", flush=True)
    seconds = time.perf_counter() - t0
    return {"test_acc": acc, "losses": losses, "accs": accs, "seconds": seconds,
            "s_per_step": seconds / max(steps, 1)}
