"""Sequential MNIST: each image fed column by column (28 steps of 28 inputs), answer read at the
last step only, so the network has to carry what it saw in its state.

    python -m snncompile.recipes.train_seq_mnist          # all three variants, ~2 min on 2 CPU cores

Three variants of one LIF network (28 -> 128 -> 10, snnTorch-form LIF, beta 0.8, fast-sigmoid
surrogate), built from snncompile.layers:

* ``plain``:    Linear(28, 128) -> LIF -> Linear(128, 10)
* ``feedback``: Linear(28, 128) -> LinearRecurrent(128, LIF) -> Linear(128, 10)
* ``synapse``:  Linear(28, 128) -> SynapseFilter(tau=8, learnable) -> LIF -> Linear(128, 10)

The readout is the output layer at step 28 (``readout="last"``): the plain net's only memory is
its membrane's leak; the others add a recurrent path or a slow synaptic current.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn

import snncompile
from snncompile.layers import LIF, LinearRecurrent, SynapseFilter
from snncompile.models.data import mnist_split

from .snn_training import fit

__all__ = ["build", "columns", "main", "VARIANTS"]

VARIANTS = ("plain", "feedback", "synapse")


def build(variant: str, hidden: int = 128, beta: float = 0.8) -> nn.Module:
    """The ANN-side definition of one variant (stateful layers from snncompile.layers)."""
    neuron = LIF(beta=beta, surrogate="fast_sigmoid")
    if variant == "plain":
        core = [neuron]
    elif variant == "feedback":
        core = [LinearRecurrent(hidden, neuron)]
    elif variant == "synapse":
        core = [SynapseFilter(tau=8.0, learnable=True), neuron]
    else:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return nn.Sequential(nn.Linear(28, hidden), *core, nn.Linear(hidden, 10))


def columns(x: torch.Tensor) -> torch.Tensor:
    """[N, 1, 28, 28] images -> [28, N, 28]: step t is column t (top to bottom)."""
    return x[:, 0].permute(2, 0, 1).contiguous()


def _last_step_ce(seq: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(seq[-1], y)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m snncompile.recipes.train_seq_mnist", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    data = mnist_split()
    results = {}
    for variant in args.variants.split(","):
        torch.manual_seed(args.seed)
        snn = snncompile.to_trainable(build(variant), T=28, encoding="sequence", readout="last",
                                      example_input=torch.zeros(2, 28))
        results[variant] = fit(snn, data, epochs=args.epochs, lr=args.lr, loss_fn=_last_step_ce,
                               batch_size=args.batch_size, to_input=columns, seed=args.seed,
                               name=f"seq-mnist-{variant}")
    print("sequential MNIST (28 steps x 28 inputs, last-step readout), test accuracy on 1,000 digits:")
    for variant, res in results.items():
        print(f"  {variant:9s} {100 * res['test_acc']:6.2f}%   ({res['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
