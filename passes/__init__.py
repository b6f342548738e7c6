"""The standard pass library: one pass per file, each registered under a kebab-case name."""
from __future__ import annotations

from . import canonicalize, fold_batchnorm  # noqa: F401  (registration)

__all__ = ["canonicalize", "fold_batchnorm"]
