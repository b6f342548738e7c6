"""Deterministic CPU training of the MNIST registry models.

Usage: ``python -m snncompile.recipes.train NAME [--epochs E]`` with NAME one
of ``mnist_cnn``, ``vgg_mnist``, ``resnet20_mnist``, ``mlp``.  Trains on the
4,000 training digits of :func:`mnist_split`, prints per-epoch train loss and
test accuracy, and saves a float32 state_dict to ``models/checkpoints/NAME.pt``.

Same seed, same thread count, same torch build -> same checkpoint: the data
order and the augmentation both come from seeded generators, and
deterministic algorithms are enforced.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from snncompile.models import CHECKPOINT_DIR, get_model
from snncompile.models.data import mnist_split

__all__ = ["TrainConfig", "DEFAULTS", "VARIANTS", "config_for", "augment", "evaluate", "train", "main"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one run (SGD+Nesterov, linear warmup then cosine decay)."""

    epochs: int
    lr: float
    batch_size: int = 64
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    augment: bool = True
    seed: int = 0


DEFAULTS: dict[str, TrainConfig] = {
    "mnist_cnn": TrainConfig(epochs=20, lr=0.05),
    "vgg_mnist": TrainConfig(epochs=8, lr=0.05),
    "resnet20_mnist": TrainConfig(epochs=8, lr=0.05),
    "mlp": TrainConfig(epochs=20, lr=0.05),
}


#: the other checkpoints of each architecture (``snncompile.models.CHECKPOINT_VARIANTS``):
#: "s1" is the default recipe with another seed; "r2" another recipe (no augmentation, a larger
#: batch and learning rate, no weight decay on anything, half the warm-up) with a third seed.
VARIANTS: dict[str, dict] = {
    "s1": dict(seed=1),
    "r2": dict(seed=2, augment=False, batch_size=128, lr=0.1, weight_decay=1e-4, warmup_epochs=0.5),
}


def config_for(name: str, variant: str | None = None) -> TrainConfig:
    """The TrainConfig that trains ``name``'s checkpoint, or its ``variant`` (a key of VARIANTS)."""
    base = DEFAULTS[name]
    return base if variant is None else TrainConfig(**{**base.__dict__, **VARIANTS[variant]})


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Return ``x`` [N,1,H,W] under a random small affine warp drawn from ``gen``.

    Rotation within +-10 degrees, scale 0.9-1.1, shift within +-2 pixels;
    zeros fill the border.  Deterministic given the generator state.
    """
    n, _, h, w = x.shape
    u = torch.rand((n, 4), generator=gen) * 2 - 1
    angle = u[:, 0] * math.radians(10)
    scale = 1 + 0.1 * u[:, 1]
    # affine_grid works in [-1, 1] coordinates: 2 px is 4/size of that range.
    tx, ty = u[:, 2] * (4.0 / w), u[:, 3] * (4.0 / h)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Return top-1 accuracy of ``model`` (put in eval mode) on ``(x, y)`` as a fraction."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
    return correct / len(x)


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def train(name: str, cfg: TrainConfig, out: Path | None = None, verbose: bool = True) -> tuple[nn.Module, float]:
    """Train registry model ``name`` with ``cfg``; return ``(model in eval mode, test accuracy)``.

    Saves the float32 state_dict to ``out`` when given.  Sets the global
    torch seed, thread count (2) and deterministic-algorithm mode.
    """
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)
    model = get_model(name).train()
    x_train, y_train, x_test, y_test = mnist_split()

    # BN parameters and biases are excluded from weight decay: decaying BN
    # scales only fights the normalisation and slows convergence.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
    )
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    order_gen = torch.Generator().manual_seed(cfg.seed)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)

    step, acc, t0 = 0, 0.0, time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=order_gen)
        running, seen = 0.0, 0
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if cfg.augment:
                xb = augment(xb, aug_gen)
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, warmup, cfg.lr)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item() * len(idx)
            seen += len(idx)
            step += 1
        acc = evaluate(model, x_test, y_test)
        if verbose:
            print(f"[{name}] epoch {epoch + 1:3d}/{cfg.epochs}  "
                  f"train loss {running / seen:.4f}  test acc {100 * acc:6.2f}%  "
                  f"({time.perf_counter() - t0:6.1f} s)", flush=True)
    model.eval()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(torch.float32).clone() if v.is_floating_point() else v.clone()
                 for k, v in model.state_dict().items()}
        torch.save(state, out)
    return model, acc


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m snncompile.recipes.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(DEFAULTS))
    parser.add_argument("--epochs", type=int, help="override the default epoch count")
    parser.add_argument("--lr", type=float, help="override the peak learning rate")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--variant", choices=sorted(VARIANTS),
                        help="train the checkpoint variant (another seed or recipe) -> NAME_VARIANT.pt")
    parser.add_argument("--out", type=Path, help="checkpoint path (default models/checkpoints/NAME.pt)")
    args = parser.parse_args(argv)

    base = config_for(args.name, args.variant)
    overrides = {k: v for k, v in {
        "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
    }.items() if v is not None}
    if args.no_augment:
        overrides["augment"] = False
    cfg = TrainConfig(**{**base.__dict__, **overrides})
    stem = args.name if args.variant is None else f"{args.name}_{args.variant}"
    out = args.out if args.out is not None else CHECKPOINT_DIR / f"{stem}.pt"

    print(f"[{args.name}] {cfg}", flush=True)
    t0 = time.perf_counter()
    _, acc = train(args.name, cfg, out)
    print(f"[{args.name}] final test acc {100 * acc:.2f}%  wall {time.perf_counter() - t0:.1f} s  "
          f"-> {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
