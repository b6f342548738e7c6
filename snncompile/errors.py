"""The exceptions users catch.

Every error snncompile raises derives from ``SnnCompileError``. Messages follow one shape:
``<where>: node %7 relu (model.layer2.1.relu, resnet.py:54) <what was found> — <what to do>``.
"""
from __future__ import annotations

__all__ = [
    "SnnCompileError",
    "TraceError",
    "UnsupportedOpError",
    "VerifyError",
    "PassError",
    "CalibrationError",
    "ConfigError",
    "KernelError",
    "describe_node",
]


class SnnCompileError(Exception):
    """Base of every snncompile error."""


class TraceError(SnnCompileError):
    """The model could not be traced into the IR (control flow on data, unsupported values)."""


class UnsupportedOpError(SnnCompileError):
    """A pass met an op it cannot handle (opaque node, non-ReLU activation, ...)."""


class VerifyError(SnnCompileError):
    """The graph broke an IR invariant (SSA order, op schema, shapes)."""


class PassError(SnnCompileError):
    """A pass failed or left the graph invalid; the message names the pass."""


class CalibrationError(SnnCompileError):
    """Calibration data is missing, malformed or does not reach a node that needs statistics."""


class ConfigError(SnnCompileError, ValueError):
    """A bad argument or option value."""


class KernelError(SnnCompileError):
    """A neuron kernel got inputs it cannot run on (device, dtype, shape) or failed to build."""


def describe_node(node) -> str:
    """Return ``%id op (module.path, file.py:line)`` for an IR node, for error messages."""
    where = []
    src = node.meta.get("source") if hasattr(node, "meta") else None
    if src is not None:
        if src.module_path:
            where.append(src.module_path)
        if src.file:
            where.append(f"{src.short_file}:{src.line}")
    loc = f" ({', '.join(where)})" if where else ""
    return f"node %{node.id} {node.op}{loc}"


def warn_user(message: str, category: type = UserWarning) -> None:
    """``warnings.warn(message)`` attributed to the user's line: the first frame outside
    snncompile (its passes and frontends included), so the warning shows where they called us."""
    import sys
    import warnings
    f, level = sys._getframe(1), 2
    while f is not None and f.f_globals.get("__name__", "").startswith("snncompile"):
        f, level = f.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
