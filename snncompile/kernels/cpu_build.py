"""Building the C kernels: compiler discovery, the kernel cache, verified loading, atomic builds.

Sources are compiled on first use with the system C compiler ($CC, sysconfig's CC, cc, gcc,
clang) into the kernel cache, ``$SNNCOMPILE_CACHE`` (else ``$XDG_CACHE_HOME/snncompile`` or
``~/.cache/snncompile``), under a name hashed from the source, the flags and the CPU (see the
callers).

The cache is trusted only as far as it is private. Its directory (created 0700) must be owned by
the current user and not writable by group or others, and so must each file in it that would be
loaded; a library may not be a symbolic link. Otherwise one RuntimeWarning names the path and the
reason, and the kernels are built in a fresh private directory for this process instead (a
``mkdtemp`` under the system temp dir, removed at exit). Each build records the sha256 of the
library's bytes in a sidecar, ``NAME.so.sha256`` (0600, in ``sha256sum`` format), and a cached
library is handed to ``ctypes.CDLL`` only when its bytes hash to that record: a planted, replaced,
truncated or damaged file is never loaded (the loader would run its constructors first, or die of
SIGBUS on a truncated one) but rebuilt. Builds are atomic: the library, then its sidecar, are
written under ``.tmp-*`` names and renamed into place; the source goes to the compiler on stdin,
so concurrent builds of one source write the same bytes. Our ``.tmp-*`` files older than an hour
(left by a killed build) are removed when a process first opens the cache.
"""
from __future__ import annotations

import atexit
import ctypes
import errno
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sysconfig
import tempfile
import threading
import time
import warnings
from pathlib import Path

from ..errors import KernelError

__all__ = ["BASE_FLAGS", "FLAG_SETS", "cache_dir", "find_compiler", "cpu_id", "build_library", "library_path",
           "kernel_source", "load_or_build", "record_path", "UnsafeCacheError"]

_HERE = Path(__file__).parent
LOOPS = _HERE / "cpu_neuron_loops.h"

# Exactness needs -ffp-contract=off (no fused multiply-add) and no -ffast-math;
# -fno-trapping-math only lets gcc if-convert (and so vectorise) the spike comparison.
BASE_FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-fno-fast-math", "-ffp-contract=off",
              "-fno-trapping-math")
# Tried in order until one builds and loads.
FLAG_SETS = (("-march=native", "-fopenmp"), ("-fopenmp",), ("-march=native",), ())

TMP_MAX_AGE_S = 3600.0  # a .tmp-* file older than this is a killed build's, not one in progress
_UID = os.geteuid() if hasattr(os, "geteuid") else None
_lock = threading.Lock()
_opened: set[str] = set()  # cache directories whose orphans this process has cleaned
_warned: set[str] = set()
_private: dict = {"dir": None, "pid": None}  # this process's fallback directory


class UnsafeCacheError(OSError):
    """A cache directory or file this user cannot trust (someone else's, writable by others, a link)."""

    def __init__(self, path: Path | str, why: str):
        super().__init__(f"{path}: {why}")
        self.path, self.why = Path(path), why


def cache_dir() -> Path:
    """Return the configured kernel cache directory (``$SNNCOMPILE_CACHE`` wins); where builds
    go when it passes the checks (see the module docstring)."""
    env = os.environ.get("SNNCOMPILE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "snncompile"


def _check_owner_mode(st: os.stat_result, path: Path, what: str) -> None:
    if _UID is None:  # not POSIX: no owners, and st_mode does not describe the ACLs
        return
    if st.st_uid != _UID:
        raise UnsafeCacheError(path, f"{what} is owned by uid {st.st_uid}, not by you (uid {_UID})")
    if st.st_mode & 0o022:
        who = " and ".join(n for bit, n in ((0o020, "group"), (0o002, "others")) if st.st_mode & bit)
        raise UnsafeCacheError(path, f"{what} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})")


def _check_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise UnsafeCacheError(path, f"the directory cannot be created ({e.strerror or e})") from None
    st = os.stat(path)  # a symlinked directory is judged by the directory it names
    _check_owner_mode(st, path, "the directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UnsafeCacheError(path, "the directory is not writable by you")


def _clean_orphans(directory: Path) -> None:
    """Remove our ``.tmp-*`` regular files older than TMP_MAX_AGE_S (a killed build's)."""
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(".tmp-"):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if (stat.S_ISREG(st.st_mode) and (_UID is None or st.st_uid == _UID)
                    and now - st.st_mtime > TMP_MAX_AGE_S):
                os.unlink(entry.path)
        except OSError:
            pass


def _remove_private(directory: Path, pid: int) -> None:
    if os.getpid() == pid:  # not from a forked child: the parent may still use it
        shutil.rmtree(directory, ignore_errors=True)


def _private_dir() -> Path:
    """A directory of this process's own (0700, made by mkdtemp), reused until exit."""
    with _lock:
        d = _private["dir"]
        if d is None or _private["pid"] != os.getpid() or not d.is_dir():
            d = Path(tempfile.mkdtemp(prefix="snncompile-kernels-"))
            _private.update(dir=d, pid=os.getpid())
            atexit.register(_remove_private, d, os.getpid())
        return d


def _refuse(e: UnsafeCacheError) -> Path:
    """Warn (once per path and reason) that ``e.path`` is not used; return the private directory."""
    private = _private_dir()
    key = f"{e.path}\0{e.why}"
    with _lock:
        first = key not in _warned
        _warned.add(key)
    if first:
        warnings.warn(
            f"snncompile: not using the kernel cache at {e.path}: {e.why}. Building the CPU kernels in "
            f"the private directory {private} for this process instead (slower start). The cache must be "
            "yours, not writable by group or others, and hold no symbolic links: fix that, or set "
            "SNNCOMPILE_CACHE to a private directory.", RuntimeWarning, stacklevel=4)
    return private


def _open_cache() -> Path:
    """The directory to build in: the configured cache when it passes the checks (its orphans
    cleaned on first use in this process), else the private directory, with a warning."""
    directory = cache_dir()
    try:
        _check_dir(directory)
    except UnsafeCacheError as e:
        return _refuse(e)
    with _lock:
        first = str(directory) not in _opened
        _opened.add(str(directory))
    if first:
        _clean_orphans(directory)
    return directory


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
                 flag_sets: tuple[tuple[str, ...], ...] = FLAG_SETS, directory: Path | None = None) -> Path:
    """Where the build of ``text`` with these defines and flags, for this CPU, lives in
    ``directory`` (default: the configured cache, ``cache_dir()``)."""
    h = hashlib.sha256()
    h.update(text.encode())
    h.update(repr((BASE_FLAGS, flag_sets, defines)).encode())
    h.update(cpu_id().encode())
    return (cache_dir() if directory is None else directory) / f"{stem}-{h.hexdigest()[:20]}.so"


def record_path(library: Path) -> Path:
    """The sidecar holding the sha256 of ``library``'s bytes, written when it was built."""
    return library.with_name(library.name + ".sha256")


def _read_own(path: Path, what: str) -> bytes | None:
    """The bytes of ``path`` (None when it does not exist), refusing anything but a regular file
    of ours that group and others cannot write (checked on the open file: no race with a swap)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP or os.path.islink(path):
            raise UnsafeCacheError(path, f"{what} is a symbolic link") from None
        raise UnsafeCacheError(path, f"{what} cannot be read ({e.strerror or e})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeCacheError(path, f"{what} is not a regular file")
        _check_owner_mode(st, path, what)
        return f.read()


def _load_verified(target: Path, bind) -> ctypes.CDLL | None:
    """The cached library at ``target`` if its bytes hash to the record made when this user built
    it; None (build it) when it is missing, has no record or does not match. Nothing unverified
    reaches ``ctypes.CDLL``. UnsafeCacheError for a file that is not ours alone."""
    data = _read_own(target, "the library")
    if data is None:
        return None
    record = _read_own(record_path(target), "the library's hash record")
    expected = (record or b"").split(maxsplit=1)[:1]
    if expected != [hashlib.sha256(data).hexdigest().encode()]:
        return None  # planted, replaced, truncated, damaged, or from before records: rebuild it
    try:
        return bind(ctypes.CDLL(str(target)))
    except (OSError, AttributeError):
        return None


def load_or_build(stem: str, text: str, bind, defines: tuple[str, ...] = (),
                  flag_sets: tuple[tuple[str, ...], ...] = FLAG_SETS, compiler=None) -> tuple[ctypes.CDLL, Path]:
    """The library built from ``text`` (from the cache once verified, or compiled now); ``(lib, path)``.
    An untrusted cache directory or file is warned about and a private directory used instead.
    KernelError when there is no compiler or the build fails; OSError for an unusable cache."""
    target = library_path(stem, text, defines, flag_sets, _open_cache())
    try:
        lib = _load_verified(target, bind)
    except UnsafeCacheError as e:
        target = library_path(stem, text, defines, flag_sets, _refuse(e))
        lib = _load_verified(target, bind)
    if lib is not None:
        return lib, target
    cc = (compiler or find_compiler)()
    if cc is None:
        raise KernelError("no C compiler found: install gcc or clang, or set CC")
    return build_library(cc, target, text, bind, defines, flag_sets), target


def _publish(tmp: str, target: Path) -> None:
    """Rename the built ``tmp`` to ``target``, then its hash record beside it (both atomic)."""
    with open(tmp, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    fd, rec = tempfile.mkstemp(prefix=f".tmp-{target.stem}-", suffix=".sha256", dir=target.parent)  # 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{digest}  {target.name}\n")
        os.replace(tmp, target)  # atomic: readers see the old file or the whole new one
        os.replace(rec, record_path(target))
    finally:
        if os.path.exists(rec):
            os.unlink(rec)


def build_library(cc: str, target: Path, source: str, bind, defines: tuple[str, ...] = (),
                  flag_sets: tuple[tuple[str, ...], ...] = FLAG_SETS) -> ctypes.CDLL:
    """Compile the C source text ``source`` (with ``-D`` ``defines``) into ``target`` atomically,
    with its hash record, trying each of ``flag_sets`` on top of ``BASE_FLAGS`` until one builds
    and loads; return the library passed through ``bind`` (which sets ctypes signatures). Raise
    KernelError with the compiler's messages when none does."""
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise KernelError(f"cannot create the kernel cache directory {target.parent} ({e}); "
                          "set SNNCOMPILE_CACHE to a writable directory") from None
    errors = []
    for extra in flag_sets:
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{target.stem}-", suffix=".so", dir=target.parent)
        os.close(fd)
        # The source on stdin: no temporary name in the library, so every build of it is the same bytes.
        cmd = [cc, *BASE_FLAGS, *extra, *(f"-D{d}" for d in defines), "-x", "c", "-", "-o", tmp, "-lm"]
        try:
            proc = subprocess.run(cmd, input=source, capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                errors.append(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-400:]}")
                continue
            os.chmod(tmp, 0o700)  # the linker's mode follows the umask (group-writable under 002)
            lib = bind(ctypes.CDLL(tmp))
            _publish(tmp, target)
            return lib
        except (OSError, subprocess.SubprocessError, AttributeError) as e:
            errors.append(f"`{' '.join(cmd)}`: {e}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise KernelError(f"building the CPU neuron kernel failed ({target.stem}; check the compiler works, or set "
                      "CC to another one): " + " | ".join(errors)[-1500:])
