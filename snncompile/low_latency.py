"""Few-time-step accuracy tables: each training-free technique alone and stacked, one SNN per T.

Shared by ``snncompile demo mnist --low-latency`` and ``benchmarks/low_latency.py``. For a trained
model, its checkpoints (the shipped one and the variants of ``CHECKPOINT_VARIANTS`` whose file
exists), calibration inputs (unlabeled) and test digits, ``technique_table`` compiles one SNN per
technique and T (the thresholds and calibrations are chosen for T), runs it T steps on the test
digits and records the accuracy, the mean spikes per neuron per step of that same run and the
compile seconds. Two cells whose conversion pipelines are the same string (``pipeline_spec``)
are one SNN, compiled once: the 99.9th-percentile baseline does not depend on T, and the
automatic choice at T > FEW_STEPS is that baseline.

    from snncompile.low_latency import low_latency_report
    low_latency_report("mnist_cnn", Ts=(1, 2, 4), techniques=("baseline", "auto"))
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, TextIO

import torch

from .convert import compile as compile_snn
from .convert import conversion_pipeline
from .errors import ConfigError

__all__ = ["Technique", "Cell", "TECHNIQUES", "DEMO_TECHNIQUES", "LOW_LATENCY_TS", "ARCHITECTURES", "CHECKPOINTS",
           "technique", "parse_techniques", "parse_steps", "available_checkpoints", "checkpoint_label",
           "load_checkpoint", "pipeline_spec", "ann_accuracy", "run_counting_spikes", "technique_table",
           "summarize", "format_accuracy_table", "format_spike_table", "low_latency_report"]


@dataclass(frozen=True)
class Technique:
    """A row of the tables: ``key`` (command lines), ``label`` (the benchmark's), ``short`` (the
    demo's) and the ``options`` given to ``snncompile.compile``."""
    key: str
    label: str
    short: str
    options: dict = field(default_factory=dict)


TECHNIQUES: tuple[Technique, ...] = (
    Technique("baseline", "baseline p99.9 (old default)", "baseline p99.9",
              dict(normalize="percentile", calibrate="none")),
    Technique("mse", "thresholds for T (mse)", "mse", dict(normalize="mse", calibrate="none")),
    Technique("bias", "bias calibration", "bias", dict(normalize="percentile", calibrate="bias")),
    Technique("potential", "potential calibration", "potential", dict(normalize="percentile", calibrate="potential")),
    Technique("auto", "mse + bias (auto default)", "mse + bias (auto)", {}),
    Technique("mse+both", "mse + both", "mse + both", dict(normalize="mse", calibrate="both")),
    Technique("multi2", "multi K=2 (opt-in)", "multi K=2 (opt-in)", dict(max_spikes=2)),
    Technique("multi4", "multi K=4 (opt-in)", "multi K=4 (opt-in)", dict(max_spikes=4)),
)
#: the rows of ``snncompile demo mnist --low-latency``
DEMO_TECHNIQUES = ("baseline", "mse", "bias", "auto", "multi4")
LOW_LATENCY_TS = (1, 2, 4, 8, 16, 32)
ARCHITECTURES = ("mnist_cnn", "vgg_mnist", "resnet20_mnist")
#: checkpoint names on command lines: the shipped one, then the variants
CHECKPOINTS = ("shipped", "s1", "r2")
_BY_KEY = {t.key: t for t in TECHNIQUES}


def technique(key: str) -> Technique:
    """The Technique named ``key`` (ConfigError listing the keys otherwise)."""
    if key not in _BY_KEY:
        raise ConfigError(f"unknown technique {key!r}; choose from {', '.join(_BY_KEY)}")
    return _BY_KEY[key]


def parse_techniques(text: str | Iterable[str]) -> tuple[str, ...]:
    """Technique keys from ``"baseline,auto"`` (or a list), each checked; "all" is every one."""
    keys = [k.strip() for k in (text.split(",") if isinstance(text, str) else text) if k.strip()]
    if keys == ["all"]:
        return tuple(_BY_KEY)
    if not keys:
        raise ConfigError(f"no technique given; choose from {', '.join(_BY_KEY)} (comma-separated) or 'all'")
    return tuple(technique(k).key for k in keys)


def parse_steps(text: str | Iterable[int]) -> tuple[int, ...]:
    """Numbers of time steps from ``"1,2,4"`` (or a list): positive ints, sorted, each once."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        Ts = sorted({int(str(t).strip()) for t in items if str(t).strip()})
    except ValueError:
        raise ConfigError(f"time steps must be whole numbers separated by commas (e.g. 1,2,4,8), "
                          f"got {text!r}") from None
    if not Ts or Ts[0] < 1:
        raise ConfigError(f"give positive numbers of time steps separated by commas (e.g. 1,2,4,8), got {text!r}")
    return tuple(Ts)


def checkpoint_label(name: str, variant: str | None) -> str:
    """``mnist_cnn`` for the shipped checkpoint, ``mnist_cnn_s1`` for a variant."""
    return name if variant is None else f"{name}_{variant}"


def available_checkpoints(name: str, which: Iterable[str] = CHECKPOINTS) -> list[str | None]:
    """The checkpoints of ``name`` among ``which`` ("shipped" and variant names) whose file exists,
    as variants (None: the shipped one), in the order given. ConfigError for a name that is neither
    "shipped" nor one of the model's ``CHECKPOINT_VARIANTS``, or when none of them exists."""
    from snncompile.models import CHECKPOINT_VARIANTS, checkpoint_path

    known = ("shipped",) + tuple(CHECKPOINT_VARIANTS.get(name, ()))
    found = []
    for w in which:
        if w not in known:
            raise ConfigError(f"{name} has no checkpoint {w!r}; its checkpoints: {', '.join(known)}")
        variant = None if w == "shipped" else w
        path = checkpoint_path(name, variant)
        if path is not None and path.is_file():
            found.append(variant)
    if not found:
        raise ConfigError(f"none of the checkpoints {', '.join(which)} of {name} exists; train one with "
                          f"`python -m snncompile.recipes.train {name}`")
    return found


def load_checkpoint(name: str, variant: str | None = None) -> torch.nn.Module:
    """The trained model ``name`` (its ``variant`` checkpoint when given) in eval mode."""
    from snncompile.models import get_model

    return get_model(name, pretrained=True, variant=variant).eval()


def pipeline_spec(options: dict, T: int) -> str:
    """The conversion pipeline ``compile(model, data, T=T, **options)`` runs, as its string (the
    passes that choose for T carry it): equal strings are the same SNN."""
    return str(conversion_pipeline(mode=options.get("normalize", "auto"), calibrate=options.get("calibrate", "auto"),
                                   T=T, max_spikes=options.get("max_spikes", 1)))


@torch.no_grad()
def ann_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy (%) of the ANN on ``(x, y)``."""
    pred = torch.cat([model(xb).argmax(-1) for xb in x.split(batch_size)])
    return 100.0 * (pred == y).float().mean().item()


def run_counting_spikes(snn, x: torch.Tensor, y: torch.Tensor, T: int) -> tuple[float, float, float]:
    """Run ``snn`` T steps on ``x``: ``(accuracy %, spikes per neuron per step, seconds)``. The spikes
    are every neuron layer's counts (by value: a burst of k is k spikes) over its neuron-steps, in
    this run; a multi-spike neuron can exceed 1 per step."""
    ns = list(snn.neurons().values())
    for m in ns:
        m.record_rates = True
    try:
        t0 = time.perf_counter()
        with torch.no_grad():
            out = snn(x, T=T)
        secs = time.perf_counter() - t0
        spikes = sum(m.spike_count for m in ns) / max(sum(m.neuron_steps for m in ns), 1)
    finally:
        for m in ns:
            m.record_rates = False
    return 100.0 * (out.argmax(-1) == y).float().mean().item(), spikes, secs


@dataclass
class Cell:
    """One SNN at one T: accuracy (%), spikes per neuron per step, the seconds its compile took
    (``reused``: compiled for an earlier cell with the same pipeline), the pipeline, the run's seconds."""
    acc: float
    spikes: float
    compile_s: float
    pipeline: str
    sim_s: float
    reused: bool = False


def technique_table(model: torch.nn.Module, calibration: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                    Ts: Iterable[int] = LOW_LATENCY_TS, techniques: Iterable[str] = tuple(_BY_KEY), *,
                    backend: str = "auto", progress: Callable[[str, int, Cell], None] | None = None,
                    ) -> dict[str, dict[int, Cell]]:
    """``{technique key: {T: Cell}}``: for every technique and T, the SNN compiled for T from the
    unlabeled ``calibration`` inputs with the technique's options, run T steps on ``(x, y)``. SNNs
    with the same pipeline string are compiled once (see the module). ``progress(key, T, cell)`` is
    called after each cell."""
    Ts, keys = parse_steps(Ts), parse_techniques(techniques)
    compiled: dict[str, tuple[object, float]] = {}
    table: dict[str, dict[int, Cell]] = {}
    for key in keys:
        opts = technique(key).options
        table[key] = {}
        for T in Ts:
            spec = pipeline_spec(opts, T)  # reused only where the SNN compiled for it ran that very pipeline
            reused = spec in compiled and str(compiled[spec][0].pipeline) == spec
            if not reused:
                torch.manual_seed(0)
                t0 = time.perf_counter()
                snn = compile_snn(model, calibration, T=T, backend=backend, **opts)
                compiled[spec] = (snn, time.perf_counter() - t0)
            snn, compile_s = compiled[spec]
            acc, spikes, sim_s = run_counting_spikes(snn, x, y, T)
            cell = table[key][T] = Cell(acc, spikes, compile_s, str(snn.pipeline), sim_s, reused)
            if progress is not None:
                progress(key, T, cell)
    return table


def summarize(tables: list[dict[str, dict[int, Cell]]], anns: list[float]) -> dict[str, dict[str, dict[int, float]]]:
    """Over checkpoints (one table and ANN accuracy each): ``{key: {"worst", "mean", "gap": {T: value}}}``,
    the lowest and the mean SNN accuracy and the largest ANN-minus-SNN gap (points) among them, and
    ``"compile"``: ``{0: mean compile seconds over T and checkpoints}``."""
    out = {}
    for key in tables[0]:
        Ts = list(tables[0][key])
        accs = {T: [t[key][T].acc for t in tables] for T in Ts}
        out[key] = {"worst": {T: min(a) for T, a in accs.items()},
                    "mean": {T: sum(a) / len(a) for T, a in accs.items()},
                    "gap": {T: max(ann - t[key][T].acc for ann, t in zip(anns, tables)) for T in Ts},
                    "compile": {0: sum(t[key][T].compile_s for t in tables for T in Ts) / (len(Ts) * len(tables))}}
    return out


def _label(key: str, short: bool) -> str:
    t = technique(key)
    return t.short if short else t.label


def format_accuracy_table(title: str, rows: dict[str, dict[int, float]], *, compile_s: dict[str, float] | None = None,
                          short: bool = False, fmt: str = "{:>8.2f}") -> list[str]:
    """Lines of a table: one row a technique (``rows[key][T]``), a column a T, then ``compile_s[key]``."""
    Ts = list(next(iter(rows.values())))
    head = f"{title:<31}" + "".join(f"{'T=' + str(T):>8}" for T in Ts) + ("   compile" if compile_s else "")
    lines = [head, "-" * len(head)]
    for key, vals in rows.items():
        c = f"{compile_s[key]:>9.2f}s" if compile_s else ""
        lines.append(f"{_label(key, short):<31}" + "".join(fmt.format(vals[T]) for T in Ts) + c)
    return lines


def format_spike_table(table: dict[str, dict[int, Cell]], *, short: bool = False) -> list[str]:
    """The spikes per neuron per step of the plain-IF automatic row and the multi-spike rows."""
    keys = [k for k in table if k == "auto" or k.startswith("multi")]
    if not any(k.startswith("multi") for k in keys):
        return []
    rows = {k: {T: c.spikes for T, c in table[k].items()} for k in keys}
    return format_accuracy_table("spikes / neuron / step", rows, short=short, fmt="{:>8.3f}")


def low_latency_report(name: str = "mnist_cnn", *, checkpoints: Iterable[str] = CHECKPOINTS,
                       Ts: Iterable[int] = LOW_LATENCY_TS, techniques: Iterable[str] = tuple(_BY_KEY),
                       n_calib: int = 1000, n_test: int | None = None, backend: str = "auto", short: bool = False,
                       pipelines_at: Iterable[int] | None = None, out: TextIO | None = None, data=None) -> dict:
    """Print (and return) the few-step report of one architecture: for each checkpoint (those of
    ``checkpoints`` whose file exists) the ANN accuracy and ``technique_table`` (accuracy and compile
    seconds, spikes per neuron per step of the automatic and multi-spike rows; the automatic pipeline
    at every T for the first checkpoint), then the worst and mean over checkpoints, the worst gap to
    the ANN and the compile seconds. ``pipelines_at``: the Ts whose automatic pipeline is printed
    (default every T; ``()`` none). Calibration: the first ``n_calib`` training digits of
    ``mnist_split()`` (unlabeled); test: its 1,000 test digits (the first ``n_test``); ``data``
    replaces ``mnist_split()``. ``short`` uses the demo's row labels. Returns ``{"model", "checkpoints",
    "anns", "tables", "summary"}``."""
    p = lambda *a: print(*a, file=out, flush=True)  # noqa: E731
    Ts, keys = parse_steps(Ts), parse_techniques(techniques)
    variants = available_checkpoints(name, checkpoints)
    if data is None:
        from snncompile.models.data import mnist_split
        data = mnist_split()
    x_tr, _, x_te, y_te = data
    x_te, y_te = (x_te, y_te) if n_test is None else (x_te[:n_test], y_te[:n_test])
    calib = x_tr[:n_calib]
    anns, tables, labels = [], [], []
    for i, variant in enumerate(variants):
        label = checkpoint_label(name, variant)
        model = load_checkpoint(name, variant)
        ann = ann_accuracy(model, x_te, y_te)
        p(f"\n{label}: ANN test accuracy {ann:.2f}% on {len(y_te)} real MNIST digits; SNN accuracy (%) at T steps, "
          f"one SNN per T (calibration: the first {len(calib)} training digits, unlabeled)")
        table = technique_table(model, calib, x_te, y_te, Ts, keys, backend=backend)
        comp = {k: sum(c.compile_s for c in row.values()) / len(row) for k, row in table.items()}
        p("\n".join(format_accuracy_table(label, {k: {T: c.acc for T, c in row.items()} for k, row in table.items()},
                                          compile_s=comp, short=short)))
        if spikes := format_spike_table(table, short=short):
            p("\n".join(spikes))
        shown = [T for T in (Ts if pipelines_at is None else pipelines_at) if T in table.get("auto", {})]
        if i == 0 and shown:
            p("the automatic choice (compile with no normalize/calibrate options), per T:")
            for T, c in ((T, table["auto"][T]) for T in shown):
                p(f"  T={T:<3} {c.pipeline}  ({c.compile_s:.2f} s{', the baseline SNN' if c.reused else ''})")
        anns.append(ann), tables.append(table), labels.append(label)
    summary = summarize(tables, anns)
    comp = {k: s["compile"][0] for k, s in summary.items()}
    p(f"\n{name} over {len(tables)} checkpoint(s) ({', '.join(labels)}; ANN "
      f"{' / '.join(f'{a:.2f}' for a in anns)}%)")
    for what, title in (("worst", "worst checkpoint (%)"), ("mean", "mean over checkpoints (%)"),
                        ("gap", "gap to ANN, worst (points)")):
        p("\n".join(format_accuracy_table(title, {k: s[what] for k, s in summary.items()},
                                          compile_s=comp if what == "worst" else None, short=short)))
    p(f"(compile: seconds per SNN, mean over T and checkpoints, {len(calib)} calibration digits, "
      f"{torch.get_num_threads()} threads; a reused SNN counts its one compile)")
    return {"model": name, "checkpoints": labels, "anns": anns, "tables": tables, "summary": summary}
