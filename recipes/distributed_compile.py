"""Calibrated compile under torchrun: each rank calibrates on its own shard, and every rank gets
the SNN one process would compile from all the shards (see snncompile.distributed).

    torchrun --nproc_per_node=2 -m snncompile.recipes.distributed_compile [--calibration 1000] [--T 32] [--out DIR]

Rank r takes the r-th contiguous slice of the first ``--calibration`` training digits of
``mnist_split()``, compiles the trained MNIST CNN for ``--T`` steps and reports a digest of the
SNN's state; rank 0 prints it with whether all ranks agree, and saves the SNN to ``--out`` when
given (``snncompile.load`` reads it). NCCL with one GPU a rank when CUDA is there, else gloo.
"""
from __future__ import annotations

import argparse
import hashlib
import os

import torch
import torch.distributed as dist

import snncompile
from snncompile.models import get_model
from snncompile.models.data import mnist_split


def join() -> torch.device:
    """Join torchrun's process group; the device of this rank (its GPU, or the CPU for gloo)."""
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
        return torch.device("cuda", torch.cuda.current_device())
    dist.init_process_group("gloo")
    return torch.device("cpu")


def compile_on_shards(digits: int, T: int, device: torch.device):
    """The MNIST CNN compiled for T steps, this rank calibrating on its slice of ``digits`` digits."""
    shard = mnist_split()[0][:digits].tensor_split(dist.get_world_size())[dist.get_rank()]
    return snncompile.compile(get_model("mnist_cnn", pretrained=True).to(device), shard.to(device), T=T)


def digest(snn) -> str:
    """A short hash of every tensor of the SNN's state, in key order."""
    h = hashlib.sha256()
    for k, v in snn.state_dict().items():
        h.update(k.encode() + v.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", type=int, default=1000, help="training digits, split over the ranks")
    ap.add_argument("--T", type=int, default=32)
    ap.add_argument("--out", default="", help="save the SNN here (rank 0)")
    args = ap.parse_args(argv)
    device = join()
    try:
        snn = compile_on_shards(args.calibration, args.T, device)
        every = [None] * dist.get_world_size()
        dist.all_gather_object(every, digest(snn))
        if dist.get_rank() == 0:
            print(f"mnist_cnn compiled for T={args.T} on {len(every)} ranks from {args.calibration} calibration "
                  f"digits: state {every[0]}, all ranks agree: {len(set(every)) == 1}")
            if args.out:
                snn.save(args.out)
                print(f"saved to {args.out}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
