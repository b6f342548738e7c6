"""The three torchrun recipes (snncompile.recipes.distributed_*) run on 2 gloo ranks, small settings."""
import os
import subprocess
import sys
from pathlib import Path

import snncompile
from snncompile.models import get_model
from snncompile.models.data import mnist_split

ROOT = Path(__file__).resolve().parents[2]


def _torchrun(module: str, *args: str, timeout: float = 150) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", module, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")  # gloo on the CPU
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    try:
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(cmd)} did not finish in {timeout:.0f} s:\n{e.stdout}\n{e.stderr}") from None
    assert run.returncode == 0, f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stdout}\n{run.stderr[-4000:]}"
    return run.stdout


def test_compile_recipe(tmp_path):
    out = _torchrun("snncompile.recipes.distributed_compile", "--calibration", "200", "--T", "32",
                    "--out", str(tmp_path / "snn"))
    assert "on 2 ranks from 200 calibration digits" in out and "all ranks agree: True" in out, out
    assert snncompile.load(tmp_path / "snn").T == 32


def test_evaluate_recipe(tmp_path):
    calibration = mnist_split()[0][:200]
    snncompile.compile(get_model("mnist_cnn", pretrained=True), calibration, T=32).save(tmp_path / "snn")
    out = _torchrun("snncompile.recipes.distributed_evaluate", "--snn", str(tmp_path / "snn"), "--test", "101",
                    "--T", "1,8,32")
    assert "101 test digits on 2 ranks: T=1 " in out and "T=32 " in out, out
    assert float(out.split("T=32 ")[1].split("%")[0]) > 90, out


def test_train_recipe():
    out = _torchrun("snncompile.recipes.distributed_train", "--steps", "2", "--batch", "8", "--test", "51",
                    "--sync-bn")
    assert "step 2: loss " in out and "trained 2 steps on 2 ranks x 8" in out, out
