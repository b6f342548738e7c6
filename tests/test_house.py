"""The house rules that keep the code base easy to extend (issue 11): no import circle among the
library's modules (imports inside functions count too), no source file over 350 lines, and the
neuron families named in one place only."""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# the installed package layout: passes/ is snncompile.passes, models/ snncompile.models, ...
PACKAGES = {"snncompile": ROOT / "snncompile", "snncompile.passes": ROOT / "passes",
            "snncompile.models": ROOT / "models", "snncompile.recipes": ROOT / "recipes"}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([pkg] + parts)
            if pkg == "snncompile" and parts and parts[0] in ("passes", "models", "recipes"):
                continue
            mods[name] = path
    return mods


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The library modules ``name`` imports anywhere in its source (a package import counts as
    its __init__; ``from pkg import mod`` as the module)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for b in ast.walk(tree) if isinstance(b, ast.If) and "TYPE_CHECKING" in ast.unparse(b.test)
                   for n in ast.walk(b)}  # annotations only: not imported at run time
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def test_no_import_circles():
    mods = _modules()
    known = set(mods)
    graph = {m: _imports(m, p, known) for m, p in mods.items()}
    # a package's __init__ re-exporting its own submodules is not a circle through them
    for m in graph:
        graph[m] = {t for t in graph[m] if not (t.startswith(m + ".") and mods[m].name == "__init__.py")}
    for m in graph:
        graph[m] = {t for t in graph[m] if not (m.startswith(t + ".") and mods[t].name == "__init__.py")}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _tracked_sources() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "*.py", "*.c", "*.h"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / f for f in out if (ROOT / f).exists()]


def test_no_source_file_over_350_lines():
    long = {str(p.relative_to(ROOT)): n for p in _tracked_sources()
            if (n := len(p.read_text().splitlines())) > 350}
    assert not long, f"files over 350 lines (split them by job): {long}"


def test_neuron_families_are_named_in_one_place():
    """No library code outside a family's own file spells a family's op: neurons are one op,
    ``neuron``, whose ``family`` attribute names the family."""
    offenders = []
    for p in _tracked_sources():
        rel = p.relative_to(ROOT)
        if rel.parts[0] not in ("snncompile", "passes") or p.suffix != ".py":
            continue
        text = p.read_text()
        for word in ("if_neuron", "lif_neuron", '"spikingjelly", "snntorch"'):
            if word in text and rel.parts[:2] != ("snncompile", "neurons"):
                offenders.append(f"{rel}: {word}")
    assert not offenders, offenders
