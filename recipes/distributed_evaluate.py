"""Sharded evaluation under torchrun: each rank runs its share of the test digits, and the counts
are summed, each digit counted once (``snncompile.distributed.evaluate``).

    torchrun --nproc_per_node=2 -m snncompile.recipes.distributed_evaluate [--snn DIR] [--test 1000] [--T 1,2,4,...]

``--snn`` is an SNN saved by ``distributed_compile --out DIR`` (or ``snn.save``); without it the
MNIST CNN is compiled as there (``--calibration`` digits, for the largest T). Rank 0 prints the
accuracy on the first ``--test`` test digits at every T of ``--T``, all from one run.
"""
from __future__ import annotations

import argparse

import torch.distributed as dist
from torch.utils.data import TensorDataset

import snncompile
from snncompile.distributed import evaluate
from snncompile.models.data import mnist_split
from snncompile.recipes.distributed_compile import compile_on_shards, join


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snn", default="", help="a saved SNN (default: compile the MNIST CNN)")
    ap.add_argument("--calibration", type=int, default=1000)
    ap.add_argument("--test", type=int, default=1000, help="test digits, sharded over the ranks")
    ap.add_argument("--T", default="1,2,4,8,16,32,64,128", help="steps to report, comma-separated")
    args = ap.parse_args(argv)
    Ts = [int(t) for t in args.T.split(",")]
    device = join()
    try:
        snn = snncompile.load(args.snn, device=device) if args.snn else \
            compile_on_shards(args.calibration, max(Ts), device)
        _, _, x, y = mnist_split()
        acc = evaluate(snn, TensorDataset(x[:args.test], y[:args.test]), T_values=Ts, batch_size=250)
        if dist.get_rank() == 0:
            print(f"{min(args.test, len(x))} test digits on {dist.get_world_size()} ranks: "
                  + "  ".join(f"T={t} {100 * a:.2f}%" for t, a in acc.items()))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
