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

import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from kernel_cache_cases import *  # noqa: F401,F403  (helpers, and the fixtures fresh and genuine)


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
