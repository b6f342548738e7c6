"""The CPU inference kernel library: built on first use, loaded once, its state and failures.

The source is the code generated from the neuron families plus cpu_neuron_loops.h and
cpu_neuron.c (``cpu_build.kernel_source``), compiled by the system C compiler into the kernel
cache under a name hashed from that text, the flags and the CPU, so any change (a new family
included) rebuilds it. A cached build is loaded only once verified as this user's own (a private
directory, the sha256 recorded at build time: ``cpu_build``); anything else is rebuilt, or built
in a private directory with a warning. Without a compiler (and no cached build) or when the build
fails, ``load_library`` returns None and keeps the reason; ``warn_fallback`` says it once.
"""
from __future__ import annotations

import ctypes
import threading
import warnings
from pathlib import Path

from ..errors import KernelError
from ..neurons import registry_version
from .cpu_build import FLAG_SETS, find_compiler, kernel_source, library_path, load_or_build

__all__ = ["load_library", "kernel_info", "cpu_kernel_available", "reset_library_state", "warn_fallback",
           "library_source"]

_SOURCE = Path(__file__).with_name("cpu_neuron.c")
_FLAG_SETS = FLAG_SETS  # tests narrow this to force a build failure
_lock = threading.Lock()
_state: dict = {"lib": None, "error": None, "warned": False, "path": None, "version": None}


def reset_library_state() -> None:
    """Forget the loaded library, a recorded build failure and the warning (for tests)."""
    with _lock:
        _state.update(lib=None, error=None, warned=False, path=None, version=None)


def library_source() -> str:
    """The full C text of the inference kernel (what is compiled)."""
    return kernel_source(_SOURCE, train=False)


def _library_path() -> Path:
    return library_path("cpu_neuron", library_source(), (), _FLAG_SETS)


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, f32, ptr, c_int = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int
    lib.snn_neuron_f32.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, c_int, c_int, f32, ptr, i64,
                                   c_int]
    lib.snn_neuron_f32.restype = c_int
    lib.snn_neuron_sumpool_f32.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, c_int, c_int,
                                           f32, ptr, i64, c_int]
    lib.snn_neuron_sumpool_f32.restype = c_int
    lib.snn_block_size.restype = c_int
    lib.snn_has_openmp.restype = c_int
    lib.snn_n_variants.restype = c_int
    return lib


def load_library() -> ctypes.CDLL | None:
    """Return the compiled kernel (building it on first use), or None if it cannot be built.

    The reason for a failure is kept (see ``kernel_info``) and reported once by ``warn_fallback``.
    """
    with _lock:
        if _state["version"] != registry_version():  # a family was registered: build with it
            _state.update(lib=None, error=None, version=registry_version())
        if _state["lib"] is not None or _state["error"] is not None:
            return _state["lib"]
        try:
            lib, path = load_or_build("cpu_neuron", library_source(), _bind, (), _FLAG_SETS,
                                      compiler=lambda: find_compiler())
            _state["lib"], _state["path"] = lib, path
        except KernelError as e:
            _state["error"] = str(e)
        except OSError as e:  # an unwritable cache directory, a missing source file ...
            _state["error"] = (f"{e}; check that SNNCOMPILE_CACHE is writable and that "
                               "snncompile/kernels/cpu_neuron.c is installed")
        return _state["lib"]


def cpu_kernel_available() -> bool:
    """True when the fused kernel is loaded or can be built here (builds it on first call)."""
    return load_library() is not None


def kernel_info() -> dict:
    """Describe the kernel: ``available``, ``path``, ``block``, ``openmp``, ``variants`` and ``error``."""
    lib = load_library()
    if lib is None:
        return {"available": False, "path": None, "block": None, "openmp": False, "variants": 0,
                "error": _state["error"]}
    return {"available": True, "path": str(_state["path"]), "block": lib.snn_block_size(),
            "openmp": bool(lib.snn_has_openmp()), "variants": lib.snn_n_variants(), "error": None}


def warn_fallback() -> None:
    """Warn once that the kernel is unavailable and the torch reference runs instead."""
    with _lock:
        if _state["warned"]:
            return
        _state["warned"] = True
    warnings.warn(
        f"snncompile: the fused CPU neuron kernel is unavailable ({_state['error']}); running the "
        "slower torch reference instead. Fix the cause, or pick backend='torch' to silence this.",
        RuntimeWarning, stacklevel=4)
