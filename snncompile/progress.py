"""Progress bars for long loops, on a terminal only.

``progress(iterable, desc=...)`` wraps an iterable in a ``tqdm`` bar on stderr when stderr is a
terminal and tqdm is installed; otherwise (pipes, CI, captured output, no tqdm) it returns the
iterable itself, so the loop runs exactly as without it and nothing is printed. The environment
variable ``SNNCOMPILE_PROGRESS`` forces the choice: ``0`` never shows a bar, ``1`` shows one even
when stderr is not a terminal (when tqdm is installed). tqdm is imported only when a bar is shown.
"""
from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

__all__ = ["progress", "progress_enabled"]

_T = TypeVar("_T")


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether a bar would be shown: ``enabled`` when given, else ``SNNCOMPILE_PROGRESS`` (``0``/``1``)
    when set, else whether stderr is a terminal."""
    if enabled is not None:
        return bool(enabled)
    env = os.environ.get("SNNCOMPILE_PROGRESS", "").strip().lower()
    if env in ("0", "no", "false", "off"):
        return False
    if env in ("1", "yes", "true", "on"):
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or odd stream
        return False


def progress(iterable: Iterable[_T], *, desc: str, total: int | None = None,
             enabled: bool | None = None, delay: float = 0.0) -> Iterable[_T]:
    """``iterable`` with a tqdm bar on stderr labelled ``desc`` (``total`` items, else its len()),
    or ``iterable`` itself, unchanged, when bars are off (see ``progress_enabled``: by default a
    bar only on a terminal) or tqdm is not installed. ``delay``: seconds before the bar appears
    (a quick loop shows none). The bar is cleared when the loop ends, so lines printed after the
    loop are not mixed with it."""
    if not progress_enabled(enabled):
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    options = {"delay": delay} if delay > 0 else {}
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False, dynamic_ncols=True, **options)
