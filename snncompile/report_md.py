"""The summary.md of ``snncompile.report.write_report``: every table and how it was measured."""
from __future__ import annotations

import platform

import torch

from .analyze_format import si
from .low_latency import technique

__all__ = ["summary_markdown", "accuracy_markdown"]


def accuracy_markdown(table, keys, Ts, ann: float | None) -> list[str]:
    """The accuracy table (%) as markdown lines: one row per technique, a column per T, then the ANN."""
    lines = ["| technique | compile options | " + " | ".join(f"T={T}" for T in Ts) + " |",
             "|---|---|" + "---:|" * len(Ts)]
    for k in keys:
        opts = ", ".join(f"{o}={v!r}" for o, v in technique(k).options.items()) or "(defaults)"
        lines.append(f"| {technique(k).short} | {opts} | " + " | ".join(f"{100 * table[k][T]:.2f}" for T in Ts) + " |")
    if ann is not None:
        lines.append("| ANN | | " + " | ".join(f"{100 * ann:.2f}" for _ in Ts) + " |")
    return lines


def summary_markdown(inputs, a, table, keys, Ts, aT, snn, secs, backend, layer) -> str:
    """The report's summary: what was measured on what, the accuracy table, the Analysis tables,
    the energy constants with their citation, the timings and links to the pictures."""
    t = a.total
    lead = technique(keys[0]).short
    L = [f"# snncompile report: {inputs.name}", ""]
    L += ["## How it was measured", "",
          f"- model: {inputs.described.get('model', inputs.name)}",
          f"- calibration: {inputs.described['calib']}",
          f"- test data: {inputs.described['data']}",
          f"- time steps: T = {', '.join(map(str, Ts))}; one SNN compiled per technique and T (SNNs whose pipeline "
          "is the same are compiled once), its accuracy after t steps read from one run",
          f"- analysed: the '{lead}' SNN at T = {aT} ({a.samples} samples), pipeline `{snn.pipeline}`",
          f"- neuron backend: {a.backend} (asked: {backend}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.machine()}",
          f"- time taken: {secs['total']:.1f} s in all (compiling {secs['compile']:.1f} s, accuracy runs "
          f"{secs['run']:.1f} s, analysis {secs['analyze']:.1f} s, pictures {secs['plots']:.1f} s)", ""]
    if a.label_source == "labels":
        L += ["## Accuracy (%) at T steps", ""]
    else:
        L += ["## Agreement with the ANN (%) at T steps", "",
              "No labels were given: each number is the share of inputs where the SNN predicts the ANN's class.", ""]
    L += accuracy_markdown(table, keys, Ts, a.ann_accuracy) + ["", "![accuracy vs T](accuracy_vs_T.png)", ""]
    L += [f"## Per layer: '{lead}' at T = {aT}", "",
          "Per sample, over the whole run of T steps. Weighted layers show the operations they do; neuron layers "
          "their firing rate (spikes per neuron per step).", "", a.to_markdown(), ""]
    ratio = t.energy_pj / t.ann_energy_pj if t.ann_energy_pj else float("nan")
    L += ["## Totals", "",
          "| quantity | SNN | ANN |", "|---|---:|---:|",
          f"| synaptic operations (accumulates) per sample | {si(t.synops)} | 0 |",
          f"| multiply-accumulates per sample | {si(t.macs)} | {si(t.ann_macs)} |",
          f"| energy per sample (nJ) | {t.energy_pj / 1000:,.2f} | {t.ann_energy_pj / 1000:,.2f} |",
          f"| energy SNN / ANN | {ratio:.3f} | 1 |",
          f"| latency (time steps) | {a.latency_steps} (T = {a.T}, {a.warmup_steps} warm-up) | 1 pass |"]
    if t.rate is not None:
        L.append(f"| spikes per neuron per step (all layers) | {t.rate:.4f} | |")
    if a.accuracy is not None:
        ann = f"{100 * a.ann_accuracy:.2f}%" if a.ann_accuracy is not None else "-"
        what = "accuracy" if a.label_source == "labels" else "agreement with the ANN"
        L.append(f"| {what} at T = {aT} | {100 * a.accuracy[aT]:.2f}% | {ann} |")
    L.append("")
    L += ["## Energy constants", "",
          f"- {a.constants.e_ac_pj:g} pJ per accumulate (a synaptic operation), {a.constants.e_mac_pj:g} pJ per "
          "multiply-accumulate",
          f"- source: {a.constants.source}",
          "- counted: accumulates of weighted layers fed by spikes, multiply-accumulates of layers fed analog values "
          "(the first layer, once when hoisted); not counted: bias adds, membrane updates, memory traffic", ""]
    L += ["## Pictures", "",
          "![firing rates](firing_rates.png)", "",
          f"![ANN vs SNN activations, {layer}](activation_scatter.png)", "",
          f"![spike raster, {layer}](raster.png)", "",
          "![operations per layer](synops.png)", ""]
    return "\n".join(L)
