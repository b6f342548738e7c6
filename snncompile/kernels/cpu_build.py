"""Building the C kernels: compiler discovery, the kernel cache, atomic builds.

Sources are compiled on first use with the system C compiler ($CC, sysconfig's CC, cc, gcc,
clang) into ``$SNNCOMPILE_CACHE`` (else ``$XDG_CACHE_HOME/snncompile`` or
``~/.cache/snncompile``) under a name hashed from the source, the flags and the CPU (see the
callers), written to a temporary name and renamed so concurrent processes do not clash.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

from ..errors import KernelError

__all__ = ["BASE_FLAGS", "FLAG_SETS", "cache_dir", "find_compiler", "cpu_id", "build_library", "library_path",
           "kernel_source", "load_or_build"]

_HERE = Path(__file__).parent
LOOPS = _HERE / "cpu_neuron_loops.h"

# Exactness needs -ffp-contract=off (no fused multiply-add) and no -ffast-math;
# -fno-trapping-math only lets gcc if-convert (and so vectorise) the spike comparison.
BASE_FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-fno-fast-math", "-ffp-contract=off",
              "-fno-trapping-math")
# Tried in order until one builds and loads.
FLAG_SETS = (("-march=native", "-fopenmp"), ("-fopenmp",), ("-march=native",), ())


def cache_dir() -> Path:
    """Return the directory compiled kernels are cached in (``$SNNCOMPILE_CACHE`` wins)."""
    env = os.environ.get("SNNCOMPILE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "snncompile"


def find_compiler() -> str | None:
    """Return the path of a C compiler (``$CC``, sysconfig's CC, cc, gcc, clang) or None."""
    candidates = []
    for spec in (os.environ.get("CC"), sysconfig.get_config_var("CC")):
        if spec:
            try:
                candidates.append(shlex.split(spec)[0])
            except (ValueError, IndexError):
                pass
    candidates += ["cc", "gcc", "clang"]
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    return None


def cpu_id() -> str:
    """What -march=native depends on: the machine and the first CPU's model and feature flags."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            first = f.read().split("\n\n")[0].splitlines()
    except OSError:
        first = []
    keep = [ln.strip() for ln in first if ln.startswith(("flags", "Features", "model name"))]
    return "|".join([platform.machine(), *keep])


def kernel_source(source: Path, train: bool) -> str:
    """The whole translation unit of a kernel: the code generated from the neuron families, the
    shared loops (cpu_neuron_loops.h), then ``source``."""
    from .cpu_source import render_families
    return render_families(train) + LOOPS.read_text() + f"#line 1 \"{source.name}\"\n" + source.read_text()


def library_path(stem: str, text: str, defines: tuple[str, ...] = (),
                 flag_sets: tuple[tuple[str, ...], ...] = FLAG_SETS) -> Path:
    """Where the build of ``text`` with these defines and flags, for this CPU, lives in the cache."""
    h = hashlib.sha256()
    h.update(text.encode())
    h.update(repr((BASE_FLAGS, flag_sets, defines)).encode())
    h.update(cpu_id().encode())
    return cache_dir() / f"{stem}-{h.hexdigest()[:20]}.so"


def load_or_build(stem: str, text: str, bind, defines: tuple[str, ...] = (),
                  flag_sets: tuple[tuple[str, ...], ...] = FLAG_SETS, compiler=None) -> tuple[ctypes.CDLL, Path]:
    """The library built from ``text`` (from the cache, or compiled now); ``(lib, path)``.
    KernelError when there is no compiler or the build fails; OSError for an unusable cache."""
    target = library_path(stem, text, defines, flag_sets)
    if target.exists():
        try:
            return bind(ctypes.CDLL(str(target))), target
        except (OSError, AttributeError):
            pass  # damaged or foreign file: rebuild it
    cc = (compiler or find_compiler)()
    if cc is None:
        raise KernelError("no C compiler found: install gcc or clang, or set CC")
    return build_library(cc, target, text, bind, defines, flag_sets), target


def build_library(cc: str, target: Path, source: str, bind, defines: tuple[str, ...] = (),
                  flag_sets: tuple[tuple[str, ...], ...] = FLAG_SETS) -> ctypes.CDLL:
    """Compile the C source text ``source`` (with ``-D`` ``defines``) into ``target`` atomically,
    trying each of ``flag_sets`` on top of ``BASE_FLAGS`` until one builds and loads; return the
    library passed through ``bind`` (which sets ctypes signatures). Raise KernelError with the
    compiler's messages when none does."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KernelError(f"cannot create the kernel cache directory {target.parent} ({e}); "
                          "set SNNCOMPILE_CACHE to a writable directory") from None
    errors = []
    fd, src = tempfile.mkstemp(prefix=f".tmp-{target.stem}-", suffix=".c", dir=target.parent)
    with os.fdopen(fd, "w") as f:
        f.write(source)
    try:
        for extra in flag_sets:
            fd, tmp = tempfile.mkstemp(prefix=f".tmp-{target.stem}-", suffix=".so", dir=target.parent)
            os.close(fd)
            cmd = [cc, *BASE_FLAGS, *extra, *(f"-D{d}" for d in defines), src, "-o", tmp, "-lm"]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
                if proc.returncode != 0:
                    errors.append(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-400:]}")
                    continue
                lib = bind(ctypes.CDLL(tmp))
                os.chmod(tmp, 0o755)
                os.replace(tmp, target)  # atomic: readers see the old file or the whole new one
                return lib
            except (OSError, subprocess.SubprocessError, AttributeError) as e:
                errors.append(f"`{' '.join(cmd)}`: {e}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    finally:
        os.unlink(src)
    raise KernelError(f"building the CPU neuron kernel failed ({target.stem}; check the compiler works, or set "
                      "CC to another one): " + " | ".join(errors)[-1500:])
