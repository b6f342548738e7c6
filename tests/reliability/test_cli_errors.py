"""The command line's errors (issue 12, item 5): one line on stderr, exit 2 for a usage error
and 1 for a failure, the traceback only with --debug; an unknown demo, errors in the user's
model file, and an --out that cannot be written (found before the compile)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import snncompile.convert
from snncompile.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _err(capsys, argv, code):
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snncompile: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _file(tmp_path, text, name="model.py"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.fixture
def no_compile(monkeypatch):
    """Fail the test if a compile starts (the error must come before it)."""
    def boom(*a, **k):
        raise AssertionError("compile ran")
    monkeypatch.setattr(snncompile.convert, "compile", boom)


# ------------------------------------------------------------------------------------------
# usage errors: exit 2


def test_unknown_demo(capsys):
    line = _err(capsys, ["demo", "cifar_giant"], 2)
    assert "unknown demo 'cifar_giant'" in line and "mnist_cnn" in line and "vgg_mnist" in line


@pytest.mark.parametrize("argv, words", [
    (["compile", "mlp", "--T", "0"], "--T: 0 is not a positive number of time steps"),
    (["compile", "mlp", "--T", "eight"], "--T: 'eight' is not a whole number"),
    (["compile", "mlp", "--normalize", "mean"], "invalid choice: 'mean'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "required: cmd"),
    (["inspect"], "required: model"),
    (["compile", "mlp", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_argument_errors_are_one_line_and_exit_2(capsys, argv, words):
    line = _err(capsys, argv, 2)
    assert words in line and "--help" in line


def test_help_still_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "inspect" in capsys.readouterr().out


def test_unknown_model(capsys):
    line = _err(capsys, ["compile", "resnet9000"], 2)
    assert "unknown model 'resnet9000'" in line and "path/to/file.py:factory" in line


def test_model_file_missing_or_without_factory(capsys, tmp_path):
    line = _err(capsys, ["compile", str(tmp_path / "none.py") + ":make"], 2)
    assert "no file" in line
    path = _file(tmp_path, "import torch\n")
    line = _err(capsys, ["compile", path + ":make"], 2)
    assert "has no 'make'" in line
    line = _err(capsys, ["compile", path], 2)
    assert f"{path}:factory" in line
    path = _file(tmp_path, "def make():\n    return 42\n", "num.py")
    line = _err(capsys, ["compile", path + ":make"], 2)
    assert "make() returned a int, not a torch.nn.Module" in line


@pytest.mark.parametrize("out, words", [
    ("missing_folder/snn.safetensors", "does not exist"),
    ("a_file/snn.safetensors", "is a file, not a folder"),
    (".", "is a folder"),
])
def test_unwritable_out_is_found_before_the_compile(capsys, tmp_path, no_compile, out, words):
    (tmp_path / "a_file").write_text("x")
    target = str(tmp_path / out)
    line = _err(capsys, ["compile", "mlp", "--out", target], 2)
    assert "--out" in line and words in line


# ------------------------------------------------------------------------------------------
# failures: exit 1


@pytest.mark.parametrize("source, words", [
    ("def make():\n    return undefined_name\n", "calling make() raised NameError at line 2: name 'undefined_name'"),
    ("def make(:\n    pass\n", "loading it raised SyntaxError at line 1"),
    ("import no_such_package_xyz\n", "loading it raised ModuleNotFoundError at line 1"),
    ("def make():\n    raise RuntimeError('weights missing')\n", "RuntimeError at line 2: weights missing"),
    ("import sys\nsys.exit(3)\n", "SystemExit"),
])
def test_errors_in_the_users_model_file(capsys, tmp_path, source, words):
    path = _file(tmp_path, source)
    line = _err(capsys, ["compile", path + ":make"], 1)
    assert f"model file {path}" in line and words in line and "--debug" in line


def test_debug_shows_the_traceback(capsys, tmp_path):
    path = _file(tmp_path, "def make():\n    return undefined_name\n")
    assert main(["--debug", "compile", path + ":make"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "undefined_name" in err and err.strip().splitlines()[-1].startswith("snncompile: error:")
    assert main(["compile", path + ":make", "--debug"]) == 1  # after the command too
    assert "Traceback" in capsys.readouterr().err


def test_an_unexpected_error_is_one_line_exit_1(capsys, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("something\ninside broke")
    monkeypatch.setattr(snncompile.convert, "compile", broken)
    line = _err(capsys, ["compile", "mlp", "--T", "2"], 1)
    assert "RuntimeError: something | inside broke" in line and "--debug" in line


def test_a_bad_pass_option_is_a_usage_error(capsys):
    line = _err(capsys, ["inspect", "mlp", "--passes", "canonicalize,relu-to-if{threshold=-1}"], 2)
    assert "threshold" in line


def test_a_model_that_cannot_be_traced_is_a_failure(capsys, tmp_path):
    path = _file(tmp_path, "import torch\nINPUT_SHAPE = (4,)\nclass M(torch.nn.Module):\n"
                           "    def forward(self, x):\n        if x.sum() > 0:\n            return x\n"
                           "        return -x\ndef make():\n    return M()\n")
    line = _err(capsys, ["compile", path + ":make", "--T", "2"], 1)
    assert "data" in line or "control flow" in line or "trace" in line


def test_real_process_exit_codes(tmp_path):
    """The installed entry point, in a process of its own: exit 2 and one line, no traceback."""
    r = subprocess.run([sys.executable, "-m", "snncompile", "demo", "nope"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "unknown demo 'nope'" in r.stderr
    path = _file(tmp_path, "def make():\n    return 1 / 0\n")
    r = subprocess.run([sys.executable, "-m", "snncompile", "compile", path + ":make"], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "ZeroDivisionError at line 2" in r.stderr
