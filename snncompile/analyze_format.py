"""The energy constants of ``snncompile.analyze`` and the printed and markdown tables of an Analysis."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from .errors import ConfigError

__all__ = ["EnergyConstants", "HOROWITZ_2014", "resolve_constants", "format_table", "format_markdown",
           "shown_steps", "si"]

HOROWITZ_2014 = ("45 nm CMOS, 32-bit float: add 0.9 pJ (an accumulate), multiply 3.7 pJ + add 0.9 pJ = 4.6 pJ (a "
                 "multiply-accumulate); M. Horowitz, \"Computing's energy problem (and what we can do about it)\", "
                 "ISSCC 2014, the values SNN energy estimates use (e.g. Rathi & Roy; Kundu et al.)")


@dataclass(frozen=True)
class EnergyConstants:
    """Energy per operation in picojoules: ``e_ac_pj`` per accumulate (an SNN's synaptic
    operation), ``e_mac_pj`` per multiply-accumulate; ``source`` says where they come from.
    The default is Horowitz, ISSCC 2014, 45 nm, 32-bit float: 0.9 pJ and 3.7 + 0.9 = 4.6 pJ."""
    e_ac_pj: float = 0.9
    e_mac_pj: float = 4.6
    source: str = HOROWITZ_2014

    def __post_init__(self):
        for k in ("e_ac_pj", "e_mac_pj"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"energy constant {k} must be a finite number >= 0 (picojoules), got {v!r}")


def resolve_constants(energy) -> EnergyConstants:
    """``energy`` as EnergyConstants: None (the default), an EnergyConstants, or a dict with
    ``e_ac_pj``, ``e_mac_pj`` and ``source`` (any may be left out). ConfigError otherwise."""
    if energy is None:
        return EnergyConstants()
    if isinstance(energy, EnergyConstants):
        return energy
    if isinstance(energy, Mapping):
        unknown = set(energy) - {"e_ac_pj", "e_mac_pj", "source"}
        if unknown:
            raise ConfigError(f"energy: unknown keys {sorted(unknown)}; give e_ac_pj, e_mac_pj (picojoules) and source")
        given = dict(energy)
        if "source" not in given:
            given["source"] = "given by the user"
        return EnergyConstants(**given)
    raise ConfigError(f"energy must be EnergyConstants or a dict {{'e_ac_pj', 'e_mac_pj', 'source'}}, got "
                      f"{type(energy).__name__}")


def si(v: float | None, unit: str = "") -> str:
    """``1234567`` -> ``1.23M``: three significant digits with a k/M/G/T suffix; "-" for None."""
    if v is None:
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}{unit}"
    return f"{v:.3g}{unit}" if v != int(v) else f"{int(v)}{unit}"


def _nj(pj: float) -> str:
    return f"{pj / 1000:,.2f}" if pj >= 10 else f"{pj / 1000:.4f}"


def shown_steps(T: int) -> list[int]:
    """The steps an accuracy line shows: powers of two up to T, and T."""
    out = [t for t in (1 << k for k in range(20)) if t < T]
    return out + [T]


def _rows(a) -> list[list[str]]:
    rows = []
    for r in list(a.layers) + [a.total]:
        if r.neurons is not None and r.name != "total":
            rows.append([r.name, r.op, "", f"{r.neurons:,}", f"{r.rate:.4f}", "", "", "", "", ""])
            continue
        macs = si(r.macs) + (" (once)" if r.hoisted else "")
        rate = "" if r.rate is None or r.name != "total" else f"{r.rate:.4f}"
        neurons = f"{r.neurons:,}" if r.name == "total" and r.neurons else ""
        rows.append([r.name, r.op, r.input, neurons, rate, si(r.synops), macs, si(r.ann_macs), _nj(r.energy_pj),
                     _nj(r.ann_energy_pj)])
    return rows


HEAD = ["layer", "op", "input", "neurons", "rate", "synops", "MACs (SNN)", "MACs (ANN)", "energy SNN (nJ)",
        "energy ANN (nJ)"]


def _notes(a) -> list[str]:
    t = a.total
    ratio = f"{t.energy_pj / t.ann_energy_pj:.3f}" if t.ann_energy_pj else "-"
    hoisted = [r for r in a.layers if r.hoisted]
    stepped = [r.name for r in a.layers if r.input == "analog" and not r.hoisted]
    macs = []
    if hoisted:
        macs.append(f"{', '.join(r.name for r in hoisted)} run once in all (hoisted by hoist-static: its input is "
                    f"static; if not hoisted {', '.join(si(r.macs_per_step) for r in hoisted)} every step)")
    if stepped:
        macs.append(f"{', '.join(stepped)} every step")
    notes = [
        f"per sample, averaged over {a.samples} samples; T = {a.T} steps; neuron backend {a.backend}",
        f"latency: {a.T} steps + {a.warmup_steps} warm-up steps = {a.latency_steps} steps (the readout "
        f"({a.readout_mode}) counts every step from the first{': snncompile spends no warm-up steps' if not a.warmup_steps else ''})",
        "rate: spikes per neuron per step, counting values (a burst of k spikes counts k; a signed spike 1)",
        "synops: accumulates the spikes trigger: every event reaching a weighted layer (spike counts routed through "
        "pools and layout ops) times the fan-out of its input element (exact for stride, padding, dilation, groups)",
        "MACs (SNN): layers fed analog values (the direct-encoded input, another layer's currents) multiply: "
        + ("; ".join(macs) if macs else "none here, every weighted layer reads spikes"),
        f"energy: {a.constants.e_ac_pj:g} pJ per accumulate, {a.constants.e_mac_pj:g} pJ per multiply-accumulate "
        f"({a.constants.source}); bias adds, membrane updates and memory traffic are not counted",
        f"SNN / ANN energy: {ratio} ({_nj(t.energy_pj)} nJ against {_nj(t.ann_energy_pj)} nJ per sample)",
    ]
    if a.accuracy is not None:
        shown = shown_steps(a.T)
        what = "accuracy" if a.label_source == "labels" else f"agreement with {a.label_source}"
        notes.append(f"{what} after t steps (one run): " + ", ".join(f"t={s}: {100 * a.accuracy[s]:.2f}%"
                                                                     for s in shown)
                     + (f"; ANN {100 * a.ann_accuracy:.2f}%" if a.ann_accuracy is not None else ""))
    return notes


def format_table(a) -> str:
    """The Analysis as aligned text: one row per counted layer, the total, then the notes."""
    rows = [HEAD] + _rows(a)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEAD))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if k == 0 or k == len(rows) - 2:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines + [""] + _notes(a))


def format_markdown(a) -> str:
    """The Analysis as a GitHub markdown table, then the notes as a list."""
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "|".join("---" if i < 3 else "---:" for i in range(len(HEAD))) + "|"]
    for r in _rows(a):
        cells = [c if c else " " for c in r]
        if r[0] == "total":
            cells = [f"**{c}**" if c.strip() else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + [f"- {n}" for n in _notes(a)])
