"""The kernel cache's files and builds: planted, replaced, foreign, writable, symlinked, damaged and
truncated libraries are never loaded (rebuilt instead); builds are atomic; stale temporaries go."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from kernel_cache_cases import *  # noqa: F401,F403  (helpers, and the fixtures fresh and genuine)


# --- the files --------------------------------------------------------------------------------------

def test_a_planted_library_in_our_own_cache_never_runs_and_is_rebuilt(monkeypatch, tmp_path):
    """The old "damaged file: rebuild" path dlopen-ed the file first, so its constructor ran."""
    cache = _private(tmp_path / "cache")
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(cache))
    marker = tmp_path / "marker"
    target = _compile(PLANT, cpu_library._library_path(), marker)
    path = _kernel_works()
    assert not marker.exists(), "the planted library's constructor ran"
    assert path == target and _record(path).read_text().split()[0] == _sha(path)


def test_a_library_replaced_after_its_build_never_runs_and_is_rebuilt(monkeypatch, tmp_path, genuine):
    """A genuine build and its record, then the library swapped for another: the record no longer
    matches, so it is not loaded but rebuilt."""
    cache = tmp_path / "cache"
    target = _seed(cache, genuine)
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(cache))
    marker = tmp_path / "marker"
    _compile(PLANT, tmp_path / "plant.so", marker)
    os.replace(tmp_path / "plant.so", target)
    path = _kernel_works()
    assert not marker.exists(), "the replaced library's constructor ran"
    assert path == target and _sha(path) == _record(path).read_text().split()[0]


@pytest.mark.skipif(not IS_ROOT, reason="giving a file to another user needs root")
def test_a_library_owned_by_another_user_is_refused(monkeypatch, tmp_path, genuine):
    cache = _private(tmp_path / "cache")
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(cache))
    marker = tmp_path / "marker"
    plant = _compile(PLANT, cpu_library._library_path(), marker)
    _forge_record(plant)
    os.chown(plant, OTHER_UID, OTHER_UID)
    private = _seeded_private_dir(monkeypatch, tmp_path, genuine)
    assert _refused(plant, f"owned by uid {OTHER_UID}", marker).parent == private


@pytest.mark.parametrize("what", ["library", "record"])
def test_a_group_writable_library_or_record_is_refused(monkeypatch, tmp_path, genuine, what):
    cache = tmp_path / "cache"
    lib = _seed(cache, genuine)
    marker = tmp_path / "marker"
    _compile(PLANT, tmp_path / "plant.so", marker)
    os.replace(tmp_path / "plant.so", lib)
    _forge_record(lib)  # a matching record: only the mode gives the file away
    bad = lib if what == "library" else _record(lib)
    os.chmod(bad, 0o666)
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(cache))
    private = _seeded_private_dir(monkeypatch, tmp_path, genuine)
    assert _refused(bad, "writable by group and others (mode 0666)", marker).parent == private


def test_a_symlinked_library_is_refused(monkeypatch, tmp_path, genuine):
    cache = _private(tmp_path / "cache")
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(cache))
    marker = tmp_path / "marker"
    elsewhere = _compile(PLANT, tmp_path / "elsewhere" / "plant.so", marker)
    target = cpu_library._library_path()
    target.symlink_to(elsewhere)
    _record(target).write_text(f"{_sha(elsewhere)}  {target.name}\n")
    private = _seeded_private_dir(monkeypatch, tmp_path, genuine)
    assert _refused(target, "is a symbolic link", marker).parent == private
    assert target.is_symlink(), "the link is left alone, not followed or written through"


def test_a_planted_training_library_never_runs(monkeypatch, tmp_path):
    """The training kernels (one library per surrogate) load through the same checks: a plant under
    cpu_neuron_train's name is not loaded even when no compiler can rebuild it."""
    cache = _private(tmp_path / "cache")
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(cache))
    marker = tmp_path / "marker"
    target = cpu_build.library_path("cpu_neuron_train", cpu_build.kernel_source(cpu_train.TRAIN_SOURCE, train=True),
                                    (cpu_train._define("atan"),))
    _compile(PLANT, target, marker)
    monkeypatch.setattr(cpu_build, "find_compiler", lambda: None)
    assert cpu_train.train_library("atan") is None
    assert not marker.exists(), "the planted training library's constructor ran"
    assert "no C compiler" in cpu_train.train_library_error("atan")


def _altered(data: bytes) -> bytes:
    """The probe with its constant changed (mov $42,%eax -> mov $43,%eax on x86), else its last byte."""
    i = data.find(b"\xb8\x2a\x00\x00\x00")
    i = i + 1 if i >= 0 else len(data) - 1
    return data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]


@pytest.mark.parametrize("damage", ["garbage", "empty", "altered", "another build"])
def test_a_damaged_library_is_rebuilt_never_loaded(monkeypatch, tmp_path, damage):
    """A file under the library's name that is not this user's build, record kept: it is never
    loaded (an altered one would load and answer wrongly) and is atomically rebuilt."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(cache))
    _, path = _load_probe()
    good = path.read_bytes()
    bad = {"garbage": os.urandom(len(good)), "empty": b"", "altered": _altered(good),
           "another build": _compile(PROBE.replace("42", "7"), tmp_path / "other.so").read_bytes()}[damage]
    _overwrite(path, bad)
    lib, again = _load_probe()
    assert again == path and lib.snn_probe() == 42
    assert _sha(path) == _record(path).read_text().split()[0] == hashlib.sha256(good).hexdigest()


_TRUNCATED_RUN = """
import sys, torch
from pathlib import Path
from snncompile.kernels import cpu, cpu_library
from snncompile.neurons import NeuronSpec, neuron_reference
cpu_library._FLAG_SETS = ((),)
spec = NeuronSpec("if", input_kind="sequence")
x = torch.rand(4, 3, 5)
s, v = cpu.run_cpu(x, 0.5, spec, 4)
info = cpu_library.kernel_info()
assert info["available"], info["error"]
s_ref, v_ref = neuron_reference(x, 0.5, spec, 4)
assert torch.equal(s, s_ref) and torch.equal(v, v_ref)
assert Path(info["path"]) == Path(sys.argv[1]), info["path"]
print("kernel ok")
"""


def _run(code: str, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SNNCOMPILE_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=str(REPO))


def test_a_truncated_real_library_is_rebuilt_not_a_crash(tmp_path, genuine):
    """Half of the real inference kernel, its record kept (a full disk, a killed copy): before,
    dlopen mapped past the end of the file and every later run died of SIGBUS. Run in a fresh
    process so a crash fails this test rather than pytest."""
    cache = tmp_path / "cache"
    lib = _seed(cache, genuine)
    data = genuine.read_bytes()
    _overwrite(lib, data[:len(data) // 2])
    proc = _run(_TRUNCATED_RUN, cache, str(lib))
    assert proc.returncode == 0, f"exit {proc.returncode} (-7 is SIGBUS): {proc.stderr[-2000:]}"
    assert "kernel ok" in proc.stdout
    assert lib.read_bytes() == data, "rebuilt in place"


_TRUNCATED_PROBE = """
import ctypes, sys
from pathlib import Path
from snncompile.kernels import cpu_build
def bind(lib):
    lib.snn_probe.restype = ctypes.c_int
    return lib
src, flags = sys.argv[1], ((),)
path = cpu_build.library_path("probe", src, (), flags)
good = path.read_bytes()
for n in (4096, len(good) // 2, len(good) - 1, 64):
    path.unlink()  # a new file: truncating in place would break the copy this process has mapped
    path.write_bytes(good[:n])
    lib, again = cpu_build.load_or_build("probe", src, bind, (), flags)
    assert again == path and lib.snn_probe() == 42 and path.read_bytes() == good, n
print("probe ok")
"""


def test_truncated_libraries_are_rebuilt_not_a_crash(monkeypatch, tmp_path):
    """The probe library cut at its headers, its middle, one byte short and inside the ELF header."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(cache))
    _load_probe()
    proc = _run(_TRUNCATED_PROBE, cache, PROBE)
    assert proc.returncode == 0, f"exit {proc.returncode} (-7 is SIGBUS): {proc.stderr[-2000:]}"
    assert "probe ok" in proc.stdout


# --- builds -----------------------------------------------------------------------------------------

def test_the_library_and_its_record_are_published_atomically(monkeypatch, tmp_path):
    """Both files appear only by rename from a temporary in the cache, the library first (so a
    reader never pairs a new record with an old library); no temporary is left behind."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(cache))
    renames = []
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        renames.append((Path(src), Path(dst)))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(cpu_build.os, "replace", replace)
    _, path = _load_probe()
    assert [d for _, d in renames] == [path, _record(path)]
    assert all(s.parent == cache and s.name.startswith(".tmp-") for s, _ in renames)
    assert not [p.name for p in cache.iterdir() if p.name.startswith(".tmp-")]


def test_orphaned_temporary_files_are_cleaned_when_the_cache_is_opened(monkeypatch, tmp_path):
    cache = _private(tmp_path / "cache")
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(cache))
    old, fresh = cache / ".tmp-cpu_neuron-abc-x1.so", cache / ".tmp-cpu_neuron-abc-x2.c"
    other = cache / "notes.txt"
    link = cache / ".tmp-link"
    for p in (old, fresh, other):
        p.write_bytes(b"\x7fELF partial")
    link.symlink_to(other)
    two_hours_ago = time.time() - 7200
    for p in (old, other):
        os.utime(p, (two_hours_ago, two_hours_ago))
    os.utime(link, (two_hours_ago, two_hours_ago), follow_symlinks=False)
    _load_probe()
    assert not old.exists(), "a killed build's temporary is removed"
    assert fresh.exists(), "a build in progress elsewhere is left alone"
    assert other.exists() and link.is_symlink(), "only our .tmp-* regular files are touched"
