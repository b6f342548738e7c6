"""Hybrid: convert the trained MNIST CNN (snncompile.compile), then fine-tune the converted SNN
with surrogate gradients at T=4 (the converted weights are the start).

    python -m snncompile.recipes.finetune_hybrid        # ~1-2 min on 2 CPU cores

Prints the test accuracy at T=4 before and after a short fine-tune. The converted network keeps
its soft-reset IF neurons, thresholds and v_init; ``snncompile.to_trainable(snn)`` only gives
their spikes the ATan surrogate, so BPTT can adjust the weights to the few-step regime that
conversion handles worst.
"""
from __future__ import annotations

import argparse

import torch

import snncompile
from snncompile.losses import ce_rate_loss
from snncompile.models import get_model
from snncompile.models.data import mnist_split

from .snn_training import evaluate_snn, fit
from .train import augment

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m snncompile.recipes.finetune_hybrid", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--n-calib", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    x_train, y_train, x_test, y_test = mnist_split()
    model = get_model("mnist_cnn", pretrained=True).eval()
    snn = snncompile.compile(model, x_train[:args.n_calib], T=args.T)
    before = evaluate_snn(snn, x_test, y_test)
    tuned = snncompile.to_trainable(snn, T=args.T, surrogate="atan")
    res = fit(tuned, (x_train, y_train, x_test, y_test), epochs=args.epochs, lr=args.lr, loss_fn=ce_rate_loss,
              augment=augment, seed=args.seed, name=f"hybrid-T{args.T}")
    print(f"MNIST CNN converted at T={args.T}: {100 * before:.2f}% -> after a {args.epochs}-epoch surrogate-"
          f"gradient fine-tune: {100 * res['test_acc']:.2f}% (1,000 test digits; {res['seconds']:.0f} s)")
    return {"before": before, **res}


if __name__ == "__main__":
    main()
