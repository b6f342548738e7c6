"""DDP training of a spiking network under torchrun: surrogate gradients, BPTT, gradients
averaged over the ranks by ``torch.nn.parallel.DistributedDataParallel``.

    torchrun --nproc_per_node=2 -m snncompile.recipes.distributed_train [--steps 200] [--batch 32] [--T 4] [--sync-bn]

The MNIST CNN's definition (untrained, seed 0) becomes a LIF SNN (``snncompile.to_trainable``);
each rank trains on its ``DistributedSampler`` share of the 4,000 training digits, ``--batch`` a
rank a step, with Adam on ``ce_rate_loss``. Batch norm takes each rank's own batch statistics
unless ``--sync-bn`` (``snncompile.distributed.sync_batchnorm``: the statistics of all ranks'
batches). Rank 0 prints the mean loss over the ranks, then the test accuracy (sharded evaluation).
"""
from __future__ import annotations

import argparse

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import snncompile
from snncompile.distributed import SequenceOutput, evaluate, sync_batchnorm
from snncompile.losses import ce_rate_loss
from snncompile.models import get_model
from snncompile.models.data import mnist_split
from snncompile.recipes.distributed_compile import join


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32, help="samples a rank a step")
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--sync-bn", action="store_true", help="batch norm over all ranks' batches")
    args = ap.parse_args(argv)
    device = join()
    try:
        x_train, y_train, x_test, y_test = mnist_split()
        torch.manual_seed(0)  # the same start on every rank (DDP also broadcasts rank 0's)
        snn = snncompile.to_trainable(get_model("mnist_cnn").to(device), T=args.T, example_input=x_train[:2].to(device))
        if args.sync_bn:
            sync_batchnorm(snn)
        net = DDP(SequenceOutput(snn))  # forward = run_sequence: [T, N, classes], what the losses take
        opt = torch.optim.Adam(net.parameters(), lr=args.lr)
        data = TensorDataset(x_train, y_train)
        sampler = DistributedSampler(data, shuffle=True, seed=0, drop_last=True)
        step, epoch = 0, 0
        while step < args.steps:
            sampler.set_epoch(epoch)
            for x, y in DataLoader(data, batch_size=args.batch, sampler=sampler, drop_last=True):
                loss = ce_rate_loss(net(x.to(device)), y.to(device))
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if step % 50 == 0 or step == args.steps:
                    mean = loss.detach().clone()
                    dist.all_reduce(mean)
                    if dist.get_rank() == 0:
                        print(f"step {step}: loss {float(mean) / dist.get_world_size():.4f}", flush=True)
                if step == args.steps:
                    break
            epoch += 1
        acc = evaluate(snn.eval(), TensorDataset(x_test[:args.test], y_test[:args.test]), T_values=[args.T])
        if dist.get_rank() == 0:
            print(f"trained {step} steps on {dist.get_world_size()} ranks x {args.batch}: test accuracy "
                  f"{100 * acc[args.T]:.2f}% at T={args.T}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
