"""The CPU kernel cache loads nothing this user did not build (issue 12, "Security").

Attacks and faults, each against the real cache code: a library planted under the expected name
(its constructor would write a marker file), in our own directory or in a shared, foreign-owned or
group/world-writable one, with a forged hash record where the attacker could write one; a
symlinked library; a truncated library (SIGBUS before), a garbage, empty, altered or replaced one;
orphaned temporary files of killed builds; a cache directory that cannot be created. What must hold:
the marker never appears, an untrusted directory or file gets one RuntimeWarning naming it and why
and the kernels are built in a private directory instead, a damaged file is rebuilt (atomically,
with its record) and the kernel works.
"""
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


# --- the directory ----------------------------------------------------------------------------------

def test_a_new_cache_directory_is_private_and_every_build_has_a_record(monkeypatch, tmp_path):
    cache = tmp_path / "home" / "cache" / "snncompile"
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(cache))
    lib, path = _load_probe()
    assert lib.snn_probe() == 42 and path == _probe_path() and path.parent == cache
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, "the library is private too"
    rec = _record(path)
    assert rec.read_text().split()[0] == _sha(path)
    assert stat.S_IMODE(rec.stat().st_mode) == 0o600 and rec.stat().st_uid == os.geteuid()
    assert not [p.name for p in cache.iterdir() if p.name.startswith(".tmp-")]


def test_a_build_under_umask_002_is_not_group_writable_and_is_reused(monkeypatch, tmp_path):
    """The linker creates its output by the umask; a group-writable build must not be refused
    (nor rebuilt) on the next load."""
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(tmp_path / "cache"))
    os.umask(0o002)
    _, path = _load_probe()
    assert stat.S_IMODE(path.stat().st_mode) & 0o022 == 0
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o022 == 0
    before = path.stat().st_ino
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lib, again = _load_probe(compiler=lambda: None)  # no compiler: it must come from the cache
    assert lib.snn_probe() == 42 and again == path and path.stat().st_ino == before


def test_an_existing_cache_of_ours_that_others_cannot_write_is_used_silently(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    os.chmod(cache, 0o755)  # an older snncompile's ~/.cache/snncompile
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(cache))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, path = _load_probe()
        lib, _ = _load_probe(compiler=lambda: None)
    assert path.parent == cache and lib.snn_probe() == 42


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777, 0o702])
def test_a_cache_others_can_write_is_refused_with_one_warning(monkeypatch, tmp_path, mode):
    """A shared (group/world-writable, sticky or not) cache: a planted library with a forged record
    there is never loaded; one warning names the directory and why; the builds go to one private
    directory (0700, ours, under the system temp dir) for the whole process."""
    cache = tmp_path / "shared"
    cache.mkdir()
    os.chmod(cache, mode)
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(cache))
    marker = tmp_path / "marker"
    plant = _compile(PLANT, _probe_path(), marker)
    _forge_record(plant)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        lib, path = _load_probe()
        lib2, path2 = cpu_build.load_or_build("probe2", PROBE, _bind_probe, (), FLAGS)
        _load_probe(compiler=lambda: None)
    assert not marker.exists(), "the planted library's constructor ran"
    assert lib.snn_probe() == 42 and lib2.snn_probe() == 42
    msgs = _cache_warnings(rec, cache)
    assert len(msgs) == 1, msgs
    assert "writable by" in msgs[0] and f"{mode & 0o7777:04o}" in msgs[0]
    private = path.parent
    assert path2.parent == private and private != cache
    assert private.parent == Path(tempfile.gettempdir())
    assert stat.S_IMODE(private.stat().st_mode) == 0o700 and private.stat().st_uid == os.geteuid()
    assert sorted(p.name for p in cache.iterdir()) == sorted([plant.name, _record(plant).name]), \
        "nothing is written to an untrusted directory"


@pytest.mark.skipif(not IS_ROOT, reason="giving a directory to another user needs root")
def test_a_cache_owned_by_another_user_is_refused(monkeypatch, tmp_path, genuine):
    cache = tmp_path / "theirs"
    cache.mkdir(mode=0o755)
    marker = tmp_path / "marker"
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(cache))
    plant = _compile(PLANT, cpu_library._library_path(), marker)
    _forge_record(plant)
    for p in (cache, plant, _record(plant)):
        os.chown(p, OTHER_UID, OTHER_UID)
    private = _seeded_private_dir(monkeypatch, tmp_path, genuine)
    assert _refused(cache, f"owned by uid {OTHER_UID}", marker).parent == private


def test_a_cache_directory_that_cannot_be_created_falls_back_to_a_private_one(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SNNCOMPILE_CACHE", str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="cannot be created"):
        lib, path = _load_probe()
    assert lib.snn_probe() == 42 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700


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
