"""Helpers and fixtures the kernel-cache tests share (tests/reliability/test_kernel_cache*.py)."""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest
import torch

from snncompile.kernels import cpu, cpu_build, cpu_library, cpu_train
from snncompile.neurons import NeuronSpec, neuron_reference

__all__ = ['pytestmark', 'REPO', 'FLAGS', 'PROBE', 'PLANT', 'IS_ROOT', 'OTHER_UID', '_record', '_sha', '_bind_probe', '_probe_path', '_load_probe', '_compile', '_overwrite', '_forge_record', '_private', '_spec', '_kernel_works', 'fresh', 'genuine', '_seed', '_seeded_private_dir', '_cache_warnings', '_refused', 'ctypes', 'hashlib', 'os', 'shutil', 'stat', 'subprocess', 'sys', 'tempfile', 'time', 'warnings', 'Path', 'pytest', 'torch', 'cpu', 'cpu_build', 'cpu_library', 'cpu_train', 'NeuronSpec', 'neuron_reference']

pytestmark = pytest.mark.skipif(cpu_build.find_compiler() is None, reason="no C compiler here")

REPO = Path(__file__).resolve().parents[2]
FLAGS = ((),)  # one plain build (no -march=native, no OpenMP): the inference kernel in ~4 s
PROBE = "int snn_probe(void) { return 42; }\n"
PLANT = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen(MARKER, "w");
    if (f) { fputs("foreign code ran\n", f); fclose(f); }
}
int snn_probe(void) { return -1; }
"""
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
OTHER_UID = 65534  # nobody


def _record(lib: Path) -> Path:
    return lib.with_name(lib.name + ".sha256")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bind_probe(lib):
    lib.snn_probe.restype = ctypes.c_int
    lib.snn_probe.argtypes = []
    return lib


def _probe_path() -> Path:
    return cpu_build.library_path("probe", PROBE, (), FLAGS)


def _load_probe(compiler=None):
    return cpu_build.load_or_build("probe", PROBE, _bind_probe, (), FLAGS, compiler=compiler)


def _compile(text: str, out: Path, marker: Path | None = None) -> Path:
    """An attacker's library: ``text`` built with MARKER set to ``marker``'s path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    defines = [f'-DMARKER="{marker}"'] if marker is not None else []
    subprocess.run([cpu_build.find_compiler(), "-shared", "-fPIC", *defines, "-x", "c", "-", "-o", str(out)],
                   input=text, text=True, check=True, capture_output=True)
    return out


def _overwrite(path: Path, data: bytes) -> None:
    """Put ``data`` under ``path`` as a new file: truncating the file in place would also break a
    copy this process has mapped (a damaged file on disk, not a loaded library changing)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def _forge_record(lib: Path) -> None:
    """What an attacker who can write the directory would do: a record that matches the plant."""
    _record(lib).write_text(f"{_sha(lib)}  {lib.name}\n")


def _private(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _spec():
    return NeuronSpec("lif", reset="value", input_kind="sequence", tau=3.7, v_reset=-0.125, v_init=0.5)


def _kernel_works() -> Path:
    """Run the fused inference kernel against the reference; return the library's path."""
    x = torch.rand(5, 3, 4)
    s, v = cpu.run_cpu(x, 0.5, _spec(), 5)
    info = cpu_library.kernel_info()
    assert info["available"], info["error"]
    s_ref, v_ref = neuron_reference(x, 0.5, _spec(), 5)
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref)
    return Path(info["path"])


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    """A process-fresh cache module (no warning given, no directory opened, no private directory
    yet, made under tmp_path), the inference kernel with the narrowed flags, umask 022."""
    monkeypatch.setattr(cpu_build, "_warned", set(), raising=False)
    monkeypatch.setattr(cpu_build, "_opened", set(), raising=False)
    monkeypatch.setattr(cpu_build, "_private", {"dir": None, "pid": None}, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(_private(tmp_path / "systmp")))
    monkeypatch.setattr(cpu_library, "_FLAG_SETS", FLAGS)
    monkeypatch.setattr(cpu_train, "_libs", {})
    monkeypatch.setattr(cpu_train, "_errors", {})
    old_umask = os.umask(0o022)
    cpu_library.reset_library_state()
    yield
    os.umask(old_umask)
    cpu_library.reset_library_state()


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    """The inference kernel as this user builds it (narrowed flags): the library path, its record
    beside it."""
    d = _private(tmp_path_factory.mktemp("genuine"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SNNCOMPILE_CACHE", str(d))
        mp.setattr(cpu_library, "_FLAG_SETS", FLAGS)
        cpu_library.reset_library_state()
        info = cpu_library.kernel_info()
        cpu_library.reset_library_state()
    assert info["available"], info["error"]
    return Path(info["path"])


def _seed(directory: Path, genuine: Path) -> Path:
    """Copy the genuine build (and its record, if any) into ``directory``; the library's path."""
    _private(directory)
    lib = directory / genuine.name
    shutil.copy2(genuine, lib)
    if _record(genuine).exists():
        shutil.copy2(_record(genuine), _record(lib))
    return lib


def _seeded_private_dir(monkeypatch, tmp_path, genuine) -> Path:
    """Make this process's private directory one that already holds the genuine build (so a refusal
    needs no compile); the directory."""
    d = tmp_path / "private"
    _seed(d, genuine)
    monkeypatch.setattr(cpu_build, "_private", {"dir": d, "pid": os.getpid()}, raising=False)
    return d


def _cache_warnings(rec, path: Path) -> list[str]:
    return [str(w.message) for w in rec if issubclass(w.category, RuntimeWarning) and str(path) in str(w.message)]


def _refused(bad: Path, why: str, marker: Path) -> Path:
    """Run the kernel; the plant's constructor must not have run, and one warning names ``bad`` and
    ``why``. The library's path."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        path = _kernel_works()
    assert not marker.exists(), "the planted library's constructor ran"
    msgs = _cache_warnings(rec, bad)
    assert len(msgs) == 1 and why in msgs[0], [str(w.message) for w in rec]
    return path
