"""Quantization-aware preparation (QCFS, snncompile.qcfs) of the trained MNIST CNN, then conversion
at T = L: the few-step regime where training-free conversion loses most.

    python -m snncompile.recipes.qcfs_mnist [--L 2] [--epochs 3] [--variant s1]   # ~2 min, 2 CPU cores

Prints, on the 1,000 test digits of ``mnist_split()``: the ANN's accuracy; the QCFS ANN's before and
after a short fine-tune on the 4,000 training digits, with its cost; and SNN accuracy at T = 1, 2,
4, 8 for the training-free conversion (``snncompile.compile``: its defaults compiled for each T
where compile chooses by T, and percentile normalization, 99.9 channel-wise, from one run) and for
the QCFS SNN (``compile_qcfs``: λ_SNN = each QCFS λ, v_init = 0.5, from one run of 8 steps).
``--variant`` takes another checkpoint of the architecture (``models/checkpoints/mnist_cnn_<v>.pt``)
when that file exists; ``--distill 0`` drops the distillation loss to the original model's outputs.

Measured (L=2, 3 epochs, shared 2-core CPU, fine-tune 23-148 s by load; SNN accuracy at T=2, %):

    checkpoint   ANN    p99.9 training-free   QCFS --distill 0   QCFS --distill 0.5 (default)
    mnist_cnn    98.0   71.4                  97.2               96.7
    mnist_cnn_s1 97.4   88.8                  95.6               96.3
    mnist_cnn_r2 97.0   93.1                  95.6               96.6
"""
from __future__ import annotations

import argparse
import inspect
import time

import torch

import snncompile
from snncompile import qcfs
from snncompile.models import checkpoint_path, get_model
from snncompile.models.data import mnist_split

from .train import augment, evaluate

__all__ = ["main", "snn_accuracies", "load_checkpoint"]

STEPS = (1, 2, 4, 8)


@torch.no_grad()
def snn_accuracies(snn, x: torch.Tensor, y: torch.Tensor, steps=STEPS) -> dict[int, float]:
    """Test accuracy (a fraction) of ``snn`` after each T in ``steps``, from one run of max(steps) steps
    (the readout after step T is the average over the first T steps, as a run of T steps gives)."""
    per_t = snn(x, T=max(steps), return_all_steps=True)
    return {T: (per_t[T - 1].argmax(1) == y).float().mean().item() for T in steps}


def load_checkpoint(name: str, variant: str | None) -> torch.nn.Module:
    """``get_model(name, pretrained=True)``, or its checkpoint ``variant`` when that file exists
    (SystemExit naming the training command otherwise)."""
    if variant is None:
        return get_model(name, pretrained=True)
    try:
        path = checkpoint_path(name, variant)
    except (TypeError, KeyError) as e:
        raise SystemExit(f"qcfs_mnist: this checkout has no checkpoint variant {variant!r} of {name} ({e})") from None
    if path is None or not path.is_file():
        raise SystemExit(f"qcfs_mnist: {path} does not exist; train it with "
                         f"`python -m snncompile.recipes.train {name} --variant {variant}`")
    return get_model(name, pretrained=True, variant=variant)


def _row(what: str, accs: dict[int, float]) -> str:
    return f"{what:36s}" + "".join(f"{100 * accs[T]:8.2f}" for T in sorted(accs))


def main(argv: list[str] | None = None) -> dict:
    """Run the recipe; return the figures it prints (accuracies as fractions, seconds)."""
    p = argparse.ArgumentParser(prog="python -m snncompile.recipes.qcfs_mnist", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mnist_cnn")
    p.add_argument("--variant", default=None, help="checkpoint variant (e.g. s1, r2), used if its file exists")
    p.add_argument("--L", type=int, default=2, help="QCFS levels; the SNN is meant to run T = L steps")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threshold-lr", type=float, default=2e-2, help="Adam learning rate of every λ")
    p.add_argument("--percentile", type=float, default=99.0, help="λ starts at this percentile of each ReLU")
    p.add_argument("--n-calib", type=int, default=1000)
    p.add_argument("--distill", type=float, default=0.5,
                   help="weight of a distillation loss to the original model's outputs (0: labels only)")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    x_train, y_train, x_test, y_test = mnist_split()
    calib = x_train[:args.n_calib]
    model = load_checkpoint(args.model, args.variant).eval()
    name = args.model + (f"_{args.variant}" if args.variant else "")
    ann = evaluate(model, x_test, y_test)
    steps = tuple(sorted(set(STEPS) | {args.L}))
    auto = "calibrate" in inspect.signature(snncompile.compile).parameters  # compile chooses per T by itself
    rows = {}
    if auto:  # its choice depends on T: one compile per T
        rows["training-free compile (defaults)"] = {
            T: snn_accuracies(snncompile.compile(model, calib, T=T), x_test, y_test, (T,))[T] for T in steps}
    classic = dict(normalize="percentile", calibrate="none") if auto else {}
    rows["training-free p99.9 channel-wise"] = snn_accuracies(
        snncompile.compile(model, calib, T=max(steps), **classic), x_test, y_test, steps)

    t0 = time.perf_counter()
    qmodel = qcfs.prepare_qcfs(model, calib, L=args.L, percentile=args.percentile)
    prep_s = time.perf_counter() - t0
    report = qcfs.finetune_qcfs(qmodel, x_train, y_train, epochs=args.epochs, lr=args.lr,
                                threshold_lr=args.threshold_lr, eval_data=(x_test, y_test),
                                augment=None if args.no_augment else augment, seed=args.seed, verbose=False,
                                teacher=model if args.distill > 0 else None, distill=args.distill)
    t0 = time.perf_counter()
    snn = qcfs.compile_qcfs(qmodel, calib)
    compile_s = time.perf_counter() - t0
    q_snn = rows[f"QCFS L={args.L}, compile_qcfs"] = snn_accuracies(snn, x_test, y_test, steps)

    print(f"{name}: ANN test accuracy {100 * ann:.2f}% on {len(x_test)} real MNIST digits; QCFS L={args.L}, "
          f"λ from the p{args.percentile:g} of {len(calib)} training digits")
    print(f"QCFS ANN: {100 * report.acc_before:.2f}% before the fine-tune, {100 * report.acc_after:.2f}% after "
          f"({report.epochs} epochs, {report.steps} steps on {len(x_train)} digits, {report.seconds:.1f} s; "
          f"prepare {prep_s:.1f} s, compile {compile_s:.1f} s)")
    print("λ per layer: " + ", ".join(f"{k} {v:.3f}" for k, v in report.thresholds.items()))
    print(f"{'SNN accuracy (%)':36s}" + "".join(f"{f'T={T}':>8s}" for T in steps))
    for what, accs in rows.items():
        print(_row(what, accs))
    print(f"at T={args.L}: QCFS SNN {100 * q_snn[args.L]:.2f}% vs ANN {100 * ann:.2f}% "
          f"(gap {100 * (ann - q_snn[args.L]):.2f} points)")
    return {"ann": ann, "rows": rows, "qcfs_ann_before": report.acc_before, "qcfs_ann": report.acc_after,
            "qcfs_snn": q_snn, "finetune_seconds": report.seconds, "epochs": report.epochs, "steps": report.steps,
            "thresholds": report.thresholds}


if __name__ == "__main__":
    main()
