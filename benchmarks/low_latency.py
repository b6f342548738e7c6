"""Few time steps: SNN accuracy at T = 1 ... 32 for each training-free technique, alone and stacked,
on every checkpoint of the trained MNIST architectures; then the techniques that need training.

    python benchmarks/low_latency.py                 # the default run (see below), 2 CPU cores
    python benchmarks/low_latency.py --quick         # mnist_cnn only, T = 1, 2, 4, 8 (+ QCFS)
    python benchmarks/low_latency.py --models vgg_mnist --Ts 1,2,4,8,16,32 --techniques all --no-qcfs
    python benchmarks/low_latency.py --hybrid        # adds the hybrid (BPTT) fine-tune section

For each architecture and checkpoint (the shipped one and each variant of CHECKPOINT_VARIANTS
whose file exists): the ANN accuracy on the 1,000 test digits of ``mnist_split()`` and a table of
SNN accuracy, one SNN compiled per technique and T (calibration: the first 1,000 training digits,
unlabeled), with the compile seconds (mean over T); the spikes per neuron per step of the plain-IF
automatic row and of the multi-spike rows (counted in the same runs); the automatic pipeline at
each T for the first checkpoint. Then, per architecture over its checkpoints: the worst and the
mean accuracy, the largest gap to the ANN (ANN minus SNN) and the compile seconds. Techniques
(``--techniques``, keys of ``snncompile.low_latency.TECHNIQUES``): baseline (p99.9, the old
default), mse (thresholds for T), bias, potential (calibration), auto (compile's own choice: mse
+ bias at T <= 16, the baseline above), mse+both, multi2 and multi4 (opt-in multi-spike neurons).
Pipelines that are the same string are one SNN, compiled once (the baseline at every T).

Sections that NEED TRAINING (labels of the 4,000 training digits), reported apart: QCFS (on by
default, ``--no-qcfs``: ``snncompile.qcfs``, L = T, mnist_cnn, T = 1, 2, 4, 8) and hybrid
(``--hybrid``: ``snncompile.to_trainable`` of the converted SNN, a 2-epoch BPTT fine-tune, T = 2, 4).
Both run on the first selected mnist_cnn checkpoint (``--train-all-checkpoints``: on each).

The default run is lighter than everything (resnet20_mnist compiles in 7-25 s and runs ~1 s per
step on 1,000 digits on 2 busy cores; all of it would take over an hour): mnist_cnn with every
technique at T = 1 ... 32; vgg_mnist with every technique at T = 1 ... 8; resnet20_mnist with
baseline, auto and multi4 at T = 1 ... 8; QCFS on the shipped mnist_cnn. Measured: 31 minutes
under ``nice`` on 2 cores shared with other jobs (mnist_cnn 750 s, vgg_mnist 417 s, resnet20_mnist
486 s, QCFS ~180 s); about half on idle cores. ``--Ts`` and ``--techniques`` replace the defaults
for every architecture selected.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import torch

from snncompile.errors import ConfigError
from snncompile.low_latency import (ARCHITECTURES, CHECKPOINTS, TECHNIQUES, available_checkpoints,
                                    checkpoint_label, load_checkpoint, low_latency_report, parse_steps,
                                    parse_techniques, run_counting_spikes)

__all__ = ["main", "DEFAULTS", "qcfs_section", "hybrid_section"]

ALL = tuple(t.key for t in TECHNIQUES)
#: per architecture: (Ts, techniques) of the default run
DEFAULTS = {
    "mnist_cnn": ((1, 2, 4, 8, 16, 32), ALL),
    "vgg_mnist": ((1, 2, 4, 8), ALL),
    "resnet20_mnist": ((1, 2, 4, 8), ("baseline", "auto", "multi4")),
}
QCFS_TS = (1, 2, 4, 8)
HYBRID_TS = (2, 4)


def _p(*a) -> None:
    print(*a, flush=True)


def _block(label: str, Ts, rows: list) -> None:
    """One checkpoint's table: its label, a T header, then each ``(name, {T: value}[, fmt])`` row."""
    head = f"{'':<31}" + "".join(f"{'T=' + str(T):>8}" for T in Ts)
    _p(f"{label}\n{head}\n" + "-" * len(head))
    for row in rows:
        _p(_row(*row))


def _row(label: str, vals: dict, fmt: str = "{:>8.2f}") -> str:
    return f"{label:<31}" + "".join(fmt.format(v) if v is not None else f"{'-':>8}" for v in vals.values())


def qcfs_section(data, variants, Ts=QCFS_TS, *, n_calib: int = 1000, epochs: int = 3, auto_rows=None) -> dict:
    """QCFS (quantization-aware fine-tune) of the mnist_cnn checkpoints ``variants`` at L = T for each
    T: prepare_qcfs (λ from the p99 of the calibration digits), finetune_qcfs (``epochs`` on the
    4,000 labeled training digits; Adam 2e-3, λ 2e-2, augmentation, distillation 0.5 to the
    original), compile_qcfs; prints the SNN accuracy at T = L, the QCFS ANN's and the fine-tune
    seconds (``auto_rows[label]``: the training-free auto row beside it). Returns them per checkpoint."""
    from snncompile import qcfs
    from snncompile.recipes.train import augment

    x_tr, y_tr, x_te, y_te = data
    calib, res = x_tr[:n_calib], {}
    _p(f"\nQCFS (quantization-aware fine-tune, L=T) -- NEEDS TRAINING: {epochs} epochs on the {len(x_tr)} labeled "
       f"training digits for each T; the SNN runs T = L steps (compile_qcfs)")
    for variant in variants:
        label, model = checkpoint_label("mnist_cnn", variant), load_checkpoint("mnist_cnn", variant)
        snn_acc, ann_acc, secs = {}, {}, {}
        for T in Ts:
            torch.manual_seed(0)
            qmodel = qcfs.prepare_qcfs(model, calib, L=T, percentile=99.0)
            rep = qcfs.finetune_qcfs(qmodel, x_tr, y_tr, epochs=epochs, lr=2e-3, threshold_lr=2e-2, augment=augment,
                                     teacher=model, distill=0.5, eval_data=(x_te, y_te), seed=0, verbose=False)
            snn_acc[T] = run_counting_spikes(qcfs.compile_qcfs(qmodel, calib), x_te, y_te, T)[0]
            ann_acc[T], secs[T] = 100 * rep.acc_after, rep.seconds
        auto = [("auto, training-free (%)", {T: auto_rows[label].get(T) for T in Ts})] \
            if auto_rows and label in auto_rows else []
        _block(label, Ts, [("QCFS SNN at T=L (%)", snn_acc), ("QCFS ANN after fine-tune (%)", ann_acc), *auto,
                           ("fine-tune seconds", secs, "{:>8.1f}")])
        res[label] = {"snn": snn_acc, "ann": ann_acc, "finetune_s": secs}
    return res


def hybrid_section(data, variants, Ts=HYBRID_TS, *, n_calib: int = 1000, epochs: int = 2) -> dict:
    """Hybrid fine-tune (recipes/finetune_hybrid): the mnist_cnn checkpoints ``variants`` compiled at T
    (the automatic choice), ``snncompile.to_trainable(snn, T=T)`` (ATan surrogate), ``epochs`` of BPTT
    (Adam 2e-4, rate cross-entropy, augmentation) on the 4,000 labeled training digits; prints the
    accuracy before and after and the seconds."""
    import snncompile
    from snncompile.losses import ce_rate_loss
    from snncompile.recipes.snn_training import evaluate_snn, fit
    from snncompile.recipes.train import augment

    x_tr, y_tr, x_te, y_te = data
    res = {}
    _p(f"\nhybrid fine-tune -- NEEDS TRAINING: the converted SNN (auto) at T, {epochs} epochs of BPTT with "
       f"surrogate gradients on the {len(x_tr)} labeled training digits")
    for variant in variants:
        label, model = checkpoint_label("mnist_cnn", variant), load_checkpoint("mnist_cnn", variant)
        before, after, secs = {}, {}, {}
        for T in Ts:
            torch.manual_seed(0)
            snn = snncompile.compile(model, x_tr[:n_calib], T=T)
            before[T] = 100 * evaluate_snn(snn, x_te, y_te)
            tuned = snncompile.to_trainable(snn, T=T, surrogate="atan")
            r = fit(tuned, (x_tr, y_tr, x_te, y_te), epochs=epochs, lr=2e-4, loss_fn=ce_rate_loss, augment=augment,
                    seed=0, name=f"hybrid-T{T}", verbose=False)
            after[T], secs[T] = 100 * r["test_acc"], r["seconds"]
        _block(label, Ts, [("converted, before (%)", before), ("after the fine-tune (%)", after),
                           ("fine-tune seconds", secs, "{:>8.1f}")])
        res[label] = {"before": before, "after": after, "finetune_s": secs}
    return res


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python benchmarks/low_latency.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(ARCHITECTURES), help="comma-separated architectures")
    ap.add_argument("--checkpoints", default=",".join(CHECKPOINTS),
                    help="comma-separated: shipped and variant names (those whose file exists run)")
    ap.add_argument("--Ts", default=None, help="time steps, e.g. 1,2,4,8 (default: per architecture, see above)")
    ap.add_argument("--techniques", default=None, help=f"comma-separated of {', '.join(ALL)} or 'all' "
                    "(default: per architecture)")
    ap.add_argument("--quick", action="store_true", help="mnist_cnn only at T = 1, 2, 4, 8")
    ap.add_argument("--no-qcfs", action="store_true", help="skip the QCFS section (it trains: ~1 min a T)")
    ap.add_argument("--hybrid", action="store_true", help="add the hybrid BPTT fine-tune (slow: ~1-2 min a T)")
    ap.add_argument("--train-all-checkpoints", action="store_true",
                    help="QCFS and hybrid on every selected mnist_cnn checkpoint, not only the first")
    ap.add_argument("--n-calib", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=None, help="the first N test digits (default all 1,000)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    return ap


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (``argv``: its command line); return the figures it printed."""
    a = _parser().parse_args(argv)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    if a.quick:
        models = ["mnist_cnn"]
    if bad := [m for m in models if m not in ARCHITECTURES]:
        raise ConfigError(f"--models: {', '.join(bad)} not among {', '.join(ARCHITECTURES)}")
    checkpoints = [c.strip() for c in a.checkpoints.split(",") if c.strip()]
    Ts = parse_steps(a.Ts) if a.Ts else ((1, 2, 4, 8) if a.quick else None)
    techniques = parse_techniques(a.techniques) if a.techniques else None
    torch.set_num_threads(a.threads)
    from snncompile.models.data import mnist_split

    data = mnist_split()
    if a.n_test is not None:
        data = (data[0], data[1], data[2][:a.n_test], data[3][:a.n_test])
    _p(f"few time steps: {', '.join(models)}; {len(data[2])} test digits, calibration: the first {a.n_calib} "
       f"training digits (unlabeled); {torch.get_num_threads()} threads, backend {a.backend}")
    t_start, results = time.perf_counter(), {}
    for name in models:
        t0 = time.perf_counter()
        model_Ts, model_tech = DEFAULTS[name]
        results[name] = low_latency_report(name, checkpoints=checkpoints, Ts=Ts or model_Ts,
                                           techniques=techniques or model_tech, n_calib=a.n_calib, backend=a.backend,
                                           data=data)
        _p(f"({name}: {time.perf_counter() - t0:.0f} s)")
    cnn = available_checkpoints("mnist_cnn", checkpoints) if (not a.no_qcfs or a.hybrid) else []
    train_on = cnn if a.train_all_checkpoints else cnn[:1]
    auto = {lab: {T: c.acc for T, c in t["auto"].items()} for lab, t in
            zip(results.get("mnist_cnn", {}).get("checkpoints", []), results.get("mnist_cnn", {}).get("tables", []))
            if "auto" in t}
    if not a.no_qcfs:
        if importlib.util.find_spec("snncompile.qcfs") is None:
            _p("\n(QCFS section skipped: this checkout has no snncompile.qcfs)")
        else:
            results["qcfs"] = qcfs_section(data, train_on, n_calib=a.n_calib, auto_rows=auto)
    if a.hybrid:
        results["hybrid"] = hybrid_section(data, train_on, n_calib=a.n_calib)
    _p(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return results


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:
        sys.exit(f"low_latency: error: {e}")
