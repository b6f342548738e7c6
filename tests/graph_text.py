"""Compare printed graphs with golden text in tests: ``plain(graph) == golden(expected)``."""
from __future__ import annotations

__all__ = ["plain", "golden"]


def plain(graph) -> str:
    """The printed graph without source locations and column padding: ``%1 = op(%0) attrs # [N,..]``."""
    lines = []
    for n in graph:
        body, _, tail = n.format().partition(" # ")
        lines.append(" ".join(body.split()) + " # " + tail.split()[-1])
    return "\n".join(lines)


def golden(text: str) -> str:
    """Expected text with its whitespace folded the way ``plain`` folds it."""
    return "\n".join(" ".join(line.split()) for line in text.strip().splitlines())
