"""The main job: convert a reference MNIST model and print its accuracy at every T.

``snncompile demo mnist`` loads the shipped checkpoint, measures the ANN on the 1,000 test
digits, converts it with three normalizations (max, 99.9th percentile layer-wise, 99.9th
percentile channel-wise: the default) and prints the SNN accuracy for T = 1 ... 128 from one
simulation each, with compile time and simulation throughput.

``snncompile demo mnist --low-latency`` (``run_low_latency_demo``) is the few-step report of the
MNIST CNN instead: its checkpoints (the shipped one and the variants whose file exists), the ANN
accuracy and the SNN accuracy at T = 1 ... 32 for the 99.9th-percentile baseline, thresholds for T
(mse), bias calibration, both (the automatic choice) and opt-in multi-spike neurons (K=4), one SNN
per T; then the worst and mean over checkpoints and the automatic pipeline at T=4 with its
compile time (``snncompile.low_latency`` has the tables; ``benchmarks/low_latency.py`` all of it).
"""
from __future__ import annotations

import time
from typing import TextIO

import torch

from .convert import compile as compile_snn
from .errors import ConfigError

__all__ = ["accuracy_by_T", "run_demo", "run_low_latency_demo", "DEMO_TS", "CONFIGS", "ALIASES", "DEMOS",
           "LOW_LATENCY_DEMOS"]

DEMO_TS = (1, 2, 4, 8, 16, 32, 64, 128)
CONFIGS = (
    ("max, layer-wise", dict(normalize="max", granularity="layer")),
    ("p99.9, layer-wise", dict(normalize="percentile", percentile=99.9, granularity="layer")),
    ("p99.9, channel-wise (default)", dict(normalize="percentile", percentile=99.9, granularity="channel")),
)
ALIASES = {"mnist": "mnist_cnn", "vgg": "vgg_mnist", "resnet": "resnet20_mnist", "resnet20": "resnet20_mnist"}
#: the models the demo runs: trained on MNIST, with a shipped checkpoint
DEMOS = ("mnist_cnn", "mlp", "vgg_mnist", "resnet20_mnist")
#: the models ``demo --low-latency`` runs (the others: ``python benchmarks/low_latency.py --models NAME``)
LOW_LATENCY_DEMOS = ("mnist_cnn",)


def _demo_key(name) -> str:
    key = ALIASES.get(name, name) if isinstance(name, str) else name
    if key not in DEMOS:
        raise ConfigError(f"unknown demo {name!r}; the demos are {', '.join(DEMOS)} (or the aliases "
                          f"{', '.join(ALIASES)})")
    return key


def accuracy_by_T(snn, x: torch.Tensor, y: torch.Tensor, Ts=DEMO_TS, *, batch_size: int | None = None,
                  desc: str = "simulating") -> tuple[dict[int, float], float]:
    """Accuracy (%) at every T in ``Ts`` from one run of max(Ts) steps, and the run's seconds.
    ``batch_size`` splits the inputs into runs of that many (the same accuracy; a progress bar
    labelled ``desc`` on a terminal, see ``snncompile.progress``); None: one run of all of them."""
    from .progress import progress

    step = max(1, len(x) if not batch_size else int(batch_size))
    starts = range(0, len(x), step)
    correct = {T: 0 for T in Ts}
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in progress(starts, desc=desc, total=len(starts)):
            seq = snn(x[s:s + step], T=max(Ts), return_all_steps=True)
            yb = y[s:s + step].to(seq.device)
            for T in Ts:
                correct[T] += int((seq[T - 1].argmax(-1) == yb).sum().item())
    secs = time.perf_counter() - t0
    return {T: 100.0 * correct[T] / max(len(y), 1) for T in Ts}, secs


def run_demo(name: str = "mnist", *, n_calib: int = 1000, Ts=DEMO_TS, backend: str = "auto",
             out: TextIO | None = None, configs=CONFIGS, calib: torch.Tensor | None = None,
             data: tuple[torch.Tensor, torch.Tensor] | None = None, batch_size: int | None = None) -> dict:
    """Print (and return) the ANN accuracy and the SNN accuracy table for a reference model.
    ``calib`` (inputs, all used) replaces the first ``n_calib`` training digits and ``data``
    (inputs, integer labels) the 1,000 test digits: the user's own data (``--calib``/``--data``).
    ``batch_size`` simulates that many inputs at a time (default: 250 with a progress bar on a
    terminal, else all at once)."""
    from snncompile.models import get_model

    from .progress import progress_enabled

    name = _demo_key(name)
    torch.manual_seed(0)
    if calib is None or data is None:
        from snncompile.models.data import mnist_split
        x_tr, y_tr, x_te, y_te = mnist_split()
    if calib is not None:
        x_tr, calib_what = calib, f"{len(calib)} given inputs"
    else:
        x_tr, calib_what = x_tr[:n_calib], f"{min(n_calib, len(x_tr))} training digits"
    if data is not None:
        (x_te, y_te), test_what = data, "given inputs"
    else:
        test_what = "real MNIST digits"
    if batch_size is None and progress_enabled():
        batch_size = 250
    model = get_model(name, pretrained=True)
    with torch.no_grad():
        ann = 100.0 * (model(x_te).argmax(-1) == y_te).float().mean().item()
    p = lambda *a: print(*a, file=out, flush=True)  # noqa: E731
    p(f"{name}: ANN test accuracy {ann:.2f}% on {len(y_te)} {test_what} "
      f"(calibration: {calib_what})")
    header = f"{'normalization':<32}" + "".join(f"{'T=' + str(T):>8}" for T in Ts) + f"{'compile':>10}{'sim':>9}"
    p(header)
    p("-" * len(header))
    result = {"model": name, "ann": ann, "rows": []}
    for label, opts in configs:
        t0 = time.perf_counter()
        snn = compile_snn(model, x_tr, T=max(Ts), backend=backend, **opts)
        compile_s = time.perf_counter() - t0
        acc, sim_s = accuracy_by_T(snn, x_te, y_te, Ts, batch_size=batch_size, desc=f"simulating ({label})")
        p(f"{label:<32}" + "".join(f"{acc[T]:>8.2f}" for T in Ts) + f"{compile_s:>9.2f}s{sim_s:>8.2f}s")
        result["rows"].append({"normalization": label, "acc": acc, "compile_s": compile_s, "sim_s": sim_s,
                               "backend": snn.backend})
    last = result["rows"][-1]
    steps = len(y_te) * max(Ts)
    p(f"simulation: {len(y_te)} digits x T={max(Ts)} in {last['sim_s']:.2f}s = "
      f"{steps / last['sim_s']:,.0f} image-steps/s (backend {last['backend']}, {torch.get_num_threads()} threads)")
    return result


def run_low_latency_demo(name: str = "mnist", *, n_calib: int = 1000, Ts=None, backend: str = "auto",
                         out: TextIO | None = None, at_T: int = 4, **report) -> dict:
    """Print (and return) the few-step report of the MNIST CNN: ``snncompile.low_latency.low_latency_report``
    with the demo's rows (``DEMO_TECHNIQUES``) at T = 1 ... 32 on its checkpoints, then the automatic
    pipeline at ``at_T`` and its compile time on each checkpoint. Other keyword arguments go to the
    report (``checkpoints``, ``techniques``, ``n_test``...). ConfigError for a model other than
    ``LOW_LATENCY_DEMOS`` (the benchmark runs those)."""
    from .low_latency import DEMO_TECHNIQUES, LOW_LATENCY_TS, low_latency_report

    key = _demo_key(name)
    if key not in LOW_LATENCY_DEMOS:
        raise ConfigError(f"demo --low-latency runs the MNIST CNN ('snncompile demo mnist --low-latency'); for {key} "
                          f"run 'python benchmarks/low_latency.py --models {key}'")
    Ts = LOW_LATENCY_TS if Ts is None else Ts
    report.setdefault("techniques", DEMO_TECHNIQUES)
    p = lambda *a: print(*a, file=out, flush=True)  # noqa: E731
    p(f"few time steps: SNN accuracy of {key} for each training-free technique, one SNN per T (compile "
      "with no normalize/calibrate options is 'mse + bias (auto)' at T <= 16, the baseline above)")
    result = low_latency_report(key, Ts=Ts, n_calib=n_calib, backend=backend, short=True, out=out,
                                pipelines_at=(), **report)
    first = result["tables"][0].get("auto", {}).get(at_T)
    if first is not None:
        secs = [t["auto"][at_T].compile_s for t in result["tables"]]
        p(f"automatic pipeline at T={at_T}: {first.pipeline}")
        p(f"its compile time: {' / '.join(f'{s:.2f}' for s in secs)} s ({', '.join(result['checkpoints'])}; "
          f"{n_calib} calibration digits, {torch.get_num_threads()} threads)")
        result["auto_pipeline"], result["auto_compile_s"] = first.pipeline, secs
    return result
