"""A fully connected LIF network trained with snnTorch's fast-sigmoid surrogate.

    python -m snncompile.recipes.train_fc_lif           # ~15 s on 2 CPU cores

784 -> 256 -> 10, every layer a snnTorch-form LIF (beta 0.9) built from snncompile.layers with
the fast-sigmoid surrogate (slope 25), T=25 steps of the image as a constant current, and the
output layer spiking too: the class is the output neuron that spikes most, and the loss is
cross-entropy on the spike counts (snncompile.losses.ce_count_loss), as in snnTorch's tutorials.
Data: the 4,000/1,000 split of the 5,000 real MNIST digits, with the small affine augmentation
the ANN checkpoints use (without it the net overfits: 92.9% after 8 epochs, train loss 0.04).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn

import snncompile
from snncompile.layers import LIF
from snncompile.losses import ce_count_loss
from snncompile.models.data import mnist_split

from .snn_training import fit
from .train import augment

__all__ = ["build", "main"]


def build(hidden: int = 256, beta: float = 0.9, slope: float = 25.0) -> nn.Module:
    """Flatten -> Linear -> LIF -> Linear -> LIF (spiking output)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), LIF(beta=beta, surrogate="fast_sigmoid", alpha=slope),
                         nn.Linear(hidden, 10), LIF(beta=beta, surrogate="fast_sigmoid", alpha=slope))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m snncompile.recipes.train_fc_lif", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, default=25)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    snn = snncompile.to_trainable(build(args.hidden), T=args.T, example_input=torch.zeros(2, 1, 28, 28))
    res = fit(snn, mnist_split(), epochs=args.epochs, lr=args.lr, loss_fn=ce_count_loss,
              batch_size=args.batch_size, augment=None if args.no_augment else augment, seed=args.seed,
              name="fc-lif")
    print(f"FC 784-{args.hidden}-10 LIF, fast sigmoid, T={args.T}, spike-count readout: "
          f"test accuracy {100 * res['test_acc']:.2f}% on 1,000 digits ({res['seconds']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
