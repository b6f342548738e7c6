"""Train the MNIST CNN directly as an SNN: IF or LIF neurons with the ATan surrogate, T=4.

    python -m snncompile.recipes.train_cnn_direct [--neuron if|lif]    # ~5 min on 2 idle CPU cores

The ANN definition (snncompile.models.MnistCNN, untrained) goes through
``snncompile.to_trainable``: each ReLU becomes a neuron, batch norm stays (over T folded into the
batch), the image is a constant input current every step, the last layer's output is averaged
over T, and cross-entropy on that mean is minimised by BPTT. Data: the 4,000/1,000 split of the
5,000 real MNIST digits (snncompile.models.data), with the small affine augmentation the ANN
checkpoints were trained with.
"""
from __future__ import annotations

import argparse

import torch

import snncompile
from snncompile.losses import ce_rate_loss
from snncompile.models import get_model
from snncompile.models.data import mnist_split

from .snn_training import fit
from .train import augment

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m snncompile.recipes.train_cnn_direct", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--neuron", choices=("if", "lif"), default="if")
    p.add_argument("--surrogate", default="atan")
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--backend", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--n-train", type=int, default=None, help="use only the first N training digits")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    x_train, y_train, x_test, y_test = mnist_split()
    if args.n_train:
        x_train, y_train = x_train[:args.n_train], y_train[:args.n_train]
    snn = snncompile.to_trainable(get_model("mnist_cnn"), T=args.T, neuron=args.neuron, surrogate=args.surrogate,
                                  backend=args.backend)
    res = fit(snn, (x_train, y_train, x_test, y_test), epochs=args.epochs, lr=args.lr, loss_fn=ce_rate_loss,
              batch_size=args.batch_size, augment=None if args.no_augment else augment, seed=args.seed,
              name=f"cnn-{args.neuron}-{args.surrogate}-T{args.T}")
    print(f"MNIST CNN, {args.neuron.upper()} + {args.surrogate}, T={args.T}, trained directly: "
          f"test accuracy {100 * res['test_acc']:.2f}% on {len(x_test)} digits "
          f"({res['seconds']:.0f} s, {1000 * res['s_per_step']:.0f} ms/step)")
    return res


if __name__ == "__main__":
    main()
