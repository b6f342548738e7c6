"""Starting a few gloo ranks on the CPU from a test, and the worker functions they run.

``launch(worker, tmp_path, *args)`` spawns ``world`` processes (torch.multiprocessing, spawn), each
joining one gloo group through a ``file://`` store under ``tmp_path`` (no port, no network), runs
``worker(rank, world, out_dir, *args)`` and returns what each rank saved with ``save(out_dir, rank,
obj)``. A rank that raises fails the test with its traceback; a run past ``timeout`` seconds is
killed and fails the test (never a hang, never a skip).
"""
from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def launch(worker, tmp_path: Path, *args, world: int = 2, timeout: float = 90.0) -> list:
    """Run ``worker`` on ``world`` gloo ranks; the objects the ranks saved, in rank order."""
    out = Path(tmp_path) / "ranks"
    out.mkdir(parents=True, exist_ok=True)
    ctx = mp.start_processes(_entry, args=(world, str(Path(tmp_path) / "store"), worker, str(out), args),
                             nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=0.5):
            if time.monotonic() > deadline:
                raise AssertionError(f"{world} gloo ranks running {worker.__name__} did not finish in {timeout:.0f} s "
                                     "(a collective waiting for a rank that never came?)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


def _entry(rank: int, world: int, store: str, worker, out: str, args: tuple) -> None:
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only: no network needed
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        worker(rank, world, out, *args)
    finally:
        dist.destroy_process_group()


def save(out: str, rank: int, obj) -> None:
    torch.save(obj, Path(out) / f"rank{rank}.pt")


def single_process():
    """A context in which snncompile sees no process group (the one-process reference in a rank)."""
    import contextlib

    import snncompile.distributed_stats as sd  # where calibration asks

    @contextlib.contextmanager
    def off():
        real = sd.is_distributed
        sd.is_distributed = lambda group=None: False
        try:
            yield
        finally:
            sd.is_distributed = real
    return off()


# ---- statistics -------------------------------------------------------------------------------------------------

def stats_batches(rank: int) -> dict[str, list[torch.Tensor]]:
    """Each rank's activations per layer: ``a`` ranks of very different maxima (coarsening),
    ``b`` empty on rank 1, ``c`` empty everywhere, ``d`` only zeros on rank 0 (its range shrinks)."""
    g = torch.Generator().manual_seed(100 + rank)
    scale = 0.3 if rank == 0 else 7.3
    a = [(torch.rand(5 + k, 4, 3, 3, generator=g) * scale - 0.05 * scale).relu() for k in range(3)]
    b = [torch.rand(6, 3, generator=g) * 2.5] if rank == 0 else []
    d = [torch.zeros(4, 2, 5)] if rank == 0 else [torch.rand(4, 2, 5, generator=g) * 0.2]
    return {"a": a, "b": b, "c": [], "d": d}


def stats_summary(st) -> dict:
    if st.num_channels is None:
        return {"empty": True, "count": st.count}
    return {"hist": st.histogram(), "zeros": st.zero_count(), "cmax": st.max(True), "max": st.max(),
            "count": st.count, "range": st.range, "p999": st.percentile(99.9, True), "p50": st.percentile(50.0),
            "p90": st.percentile(90.0, True)}


def stats_worker(rank: int, world: int, out: str) -> None:
    from snncompile.distributed import all_reduce_stats
    from snncompile.errors import CalibrationError
    from snncompile.stats import ActivationStats

    stats = {k: ActivationStats(bins=64) for k in "abcd"}
    for k, batches in stats_batches(rank).items():
        for x in batches:
            stats[k].update(x)
    before = {k: stats_summary(st) for k, st in stats.items()}
    all_reduce_stats(stats)
    odd = ActivationStats(bins=64)
    odd.update(torch.rand(3, 2 + rank))  # ranks disagree on the channel count: refused on every rank
    try:
        all_reduce_stats([odd])
        refused = ""
    except CalibrationError as e:
        refused = str(e)
    save(out, rank, {"before": before, "after": {k: stats_summary(st) for k, st in stats.items()},
                     "refused": refused})


def head_worker(rank: int, world: int, out: str) -> None:
    from snncompile.calibrate import calibration_head, iter_batches
    from snncompile.distributed import GatheredHead

    x = (1000 * rank + torch.arange(5 + 3 * rank, dtype=torch.float32)).reshape(-1, 1).repeat(1, 3)
    head = calibration_head(x)
    res = {"type": type(head).__name__, "all": [b.clone() for b in iter_batches(head, 4)],
           "cut": [b.clone() for b in GatheredHead(x, 3).batches(iter_batches, 2)],
           "pair": [tuple(t.clone() for t in b) for b in iter_batches(calibration_head((x, -x)), 4, n_inputs=2)]}
    stop = iter_batches(calibration_head(x), 2)  # a reader that stops early (as calibrate-bias does) moves no more
    res["first"] = next(stop).clone()
    stop.close()
    save(out, rank, res)


# ---- compile ----------------------------------------------------------------------------------------------------

def calibration_batches() -> list[torch.Tensor]:
    """Eight batches of 50 real training digits; rank r of 2 calibrates on batches 4r..4r+3."""
    from snncompile.models.data import mnist_split

    return list(mnist_split()[0][:400].split(50))


def compile_worker(rank: int, world: int, out: str) -> None:
    import snncompile
    from snncompile.models import get_model
    from snncompile.models.data import mnist_split

    model = get_model("mnist_cnn", pretrained=True)
    batches = calibration_batches()
    mine = batches[rank * 4:(rank + 1) * 4]
    x = mnist_split()[2][:64]
    res = {}
    for T in (8, 32):  # T=8: mse thresholds and calibrate-bias (compile's defaults at T <= 16); T=32: percentile
        snn = snncompile.compile(model, mine, T=T)
        res[T] = {"state": snn.state_dict(), "out": snn(x), "pipeline": str(snn.pipeline)}
        with single_process():
            ref = snncompile.compile(model, batches, T=T)
            res[T]["ref_state"], res[T]["ref_out"] = ref.state_dict(), ref(x)
            if T == 32:  # what each rank gets without the collectives
                res[T]["local_state"] = snncompile.compile(model, mine, T=T).state_dict()
    save(out, rank, res)


# ---- evaluate ---------------------------------------------------------------------------------------------------

def dyadic_snn():
    """A tiny SNN whose arithmetic is exact (weights and inputs multiples of 1/8, fixed scale 1): its
    output for a sample never depends on the batch the sample runs in."""
    import torch.nn as nn

    import snncompile

    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((p * 8).round() / 8)
    x = (torch.rand(23, 1, 4, 4, generator=torch.Generator().manual_seed(4)) * 8).floor() / 8
    snn = snncompile.compile(model.eval(), x, T=16, normalize="fixed", scale=1.0, calibrate="none")
    pred = model(x).argmax(1)
    y = torch.where(torch.arange(23) % 3 == 0, (pred + 1) % 4, pred)  # some wrong labels
    return snn, x, y


def evaluate_worker(rank: int, world: int, out: str) -> None:
    from torch.utils.data import TensorDataset

    from snncompile.distributed import evaluate

    snn, x, y = dyadic_snn()
    data, Ts = TensorDataset(x, y), [1, 2, 3, 5, 8, 16]
    res = {"dist": evaluate(snn, data, T_values=Ts, batch_size=4),
           "one": evaluate(snn, TensorDataset(x[:1], y[:1]), T_values=[16], batch_size=4)}  # rank 1: no real sample
    with single_process():
        res["ref"] = evaluate(snn, data, T_values=Ts, batch_size=4)
        res["ref_one"] = evaluate(snn, TensorDataset(x[:1], y[:1]), T_values=[16])
    save(out, rank, res)


# ---- DDP --------------------------------------------------------------------------------------------------------

def small_net(batch_norm: bool):
    import torch.nn as nn

    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3, padding=1)] + ([nn.BatchNorm2d(4)] if batch_norm else []) + \
        [nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)]
    return nn.Sequential(*layers)


def _grads(module) -> dict:
    return {k: p.grad.detach().clone() for k, p in module.named_parameters() if p.grad is not None}


def ddp_worker(rank: int, world: int, out: str) -> None:
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    import snncompile
    from snncompile.distributed import SequenceOutput, sync_batchnorm
    from snncompile.losses import ce_rate_loss

    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(8, 1, 8, 8, generator=g) * 2, torch.randint(0, 10, (8,), generator=g)
    half = slice(rank * 4, rank * 4 + 4)
    example = x[:2]
    res = {}
    for case in ("plain", "sync_bn", "local_bn"):
        model = small_net(batch_norm=case != "plain")
        snn = snncompile.to_trainable(model, T=4, example_input=example)
        ref = snncompile.to_trainable(model, T=4, example_input=example)
        if case == "sync_bn":
            sync_batchnorm(snn)
        net = DDP(snn) if case == "plain" else DDP(SequenceOutput(snn))
        opt, ref_opt = torch.optim.SGD(snn.parameters(), lr=0.5), torch.optim.SGD(ref.parameters(), lr=0.5)
        steps = []
        for step in range(2):  # two steps: DDP's second iteration checks that every parameter got a gradient
            opt.zero_grad()
            ref_opt.zero_grad()
            loss = F.cross_entropy(net(x[half]), y[half]) if case == "plain" else ce_rate_loss(net(x[half]), y[half])
            loss.backward()
            ref_loss = F.cross_entropy(ref(x), y) if case == "plain" else ce_rate_loss(ref.run_sequence(x), y)
            ref_loss.backward()
            steps.append({"grads": _grads(snn), "ref_grads": _grads(ref)})
            opt.step()
            ref_opt.step()
        res[case] = {"steps": steps, "state": {k: v.clone() for k, v in snn.state_dict().items()},
                     "ref_state": ref.state_dict()}
    save(out, rank, res)
