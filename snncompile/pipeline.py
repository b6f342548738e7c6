"""The pass contract, the pass registry and the Pipeline with its instruments.

A pass is a small frozen dataclass registered under a kebab-case name; its fields are its
options; calling it as ``pass_(graph, ctx)`` returns the transformed graph. A Pipeline runs an
ordered list of passes on a copy of the input graph and, around every pass, calls instruments:
verify (always), timing, snapshots, printing after all or named passes
(``SNNCOMPILE_PRINT_AFTER=all``) and dumping ``NN-pass-name.txt`` files
(``SNNCOMPILE_DUMP_DIR=dir``). A pipeline is written and read back as text:
``"canonicalize,fold-batchnorm,normalize{mode=percentile p=99.9}"``.
"""
from __future__ import annotations

import difflib
import os
import sys
import time
from typing import Iterable, TextIO

from .errors import ConfigError, PassError, SnnCompileError, VerifyError
from .ir import Graph
from .pass_registry import (PASSES, PassContext, _as_pass, _load_standard_passes, format_pass, get_pass, is_lowering,
                            parse_pipeline, register_pass)

__all__ = ["PassContext", "register_pass", "get_pass", "PASSES", "Pipeline", "parse_pipeline", "format_pass", "is_lowering"]


class Pipeline:
    """An ordered list of passes with instruments; ``run(graph, ctx)`` returns the last graph.

    ``print_after``: "all", a pass name or a list of names (default: $SNNCOMPILE_PRINT_AFTER);
    ``dump_dir``: write ``NN-pass-name.txt`` per stage (default: $SNNCOMPILE_DUMP_DIR);
    ``snapshots``: keep a copy of the graph after every pass for ``stage()``/``diff()``.
    After ``run``, ``before_lowering`` is the graph as it was before the first lowering pass
    (hoist-static, fusions: see ``is_lowering``), the stage exporters and analyses read.
    """

    def __init__(self, passes: Iterable | str = (), *, print_after=None, dump_dir: str | None = None,
                 snapshots: bool = True, verify: bool = True, stream: TextIO | None = None):
        if not isinstance(passes, (str, Iterable)):
            raise ConfigError(f"Pipeline takes a spec string or a list of passes, got {passes!r}")
        self.passes = parse_pipeline(passes) if isinstance(passes, str) else \
            [_as_pass(p, f"Pipeline: item {i}") for i, p in enumerate(passes)]
        env_print = os.environ.get("SNNCOMPILE_PRINT_AFTER")
        pa = print_after if print_after is not None else env_print
        self._print_after_from_env = print_after is None and env_print is not None  # names checked by run()
        if not (pa is None or isinstance(pa, str) or isinstance(pa, Iterable) and all(isinstance(n, str) for n in pa)):
            raise ConfigError(f"print_after takes 'all', a pass name or a list of pass names, got {pa!r}")
        self.print_after = {n.strip() for n in pa.split(",")} if isinstance(pa, str) else set(pa or ())
        self.dump_dir = dump_dir if dump_dir is not None else os.environ.get("SNNCOMPILE_DUMP_DIR")
        self.snapshots = snapshots
        self.verify = verify
        self.stream = stream
        self.stages: list[tuple[str, Graph]] = []
        self.timings: list[tuple[str, float]] = []
        self.before_lowering: Graph | None = None

    # editing -------------------------------------------------------------------------------
    def _index(self, name: str) -> int:
        for i, p in enumerate(self.passes):
            if p.name == name:
                return i
        raise ConfigError(f"no pass named {name!r} in pipeline {self}")

    def insert_before(self, name: str, p) -> "Pipeline":
        """Insert pass ``p`` (instance, name or spec item) before the pass called ``name``."""
        self.passes.insert(self._index(name), _as_pass(p))
        return self

    def insert_after(self, name: str, p) -> "Pipeline":
        """Insert pass ``p`` (instance, name or spec item) after the pass called ``name``."""
        self.passes.insert(self._index(name) + 1, _as_pass(p))
        return self

    def remove(self, name: str) -> "Pipeline":
        """Drop the pass called ``name``."""
        del self.passes[self._index(name)]
        return self

    def replace(self, name: str, p) -> "Pipeline":
        """Put pass ``p`` in place of the pass called ``name``."""
        self.passes[self._index(name)] = _as_pass(p)
        return self

    def __str__(self) -> str:
        return ",".join(format_pass(p) for p in self.passes)

    def __repr__(self) -> str:
        return f"Pipeline({str(self)!r})"

    # running -------------------------------------------------------------------------------
    def run(self, graph: Graph, ctx: PassContext | None = None) -> Graph:
        """Run every pass on a copy of ``graph``; the input graph is never changed.

        Verifies after each pass and raises PassError naming the pass (and those before it)
        when a pass fails or leaves the graph invalid.
        """
        ctx = ctx or PassContext()
        self._check_instruments()
        for p in self.passes:  # pipeline-wide facts (the input encoding, ...) before any pass runs
            declare = getattr(p, "declare", None)
            if callable(declare):
                declare(ctx)
        g = graph.copy()
        self.stages, self.timings, self.before_lowering = [], [], None
        self._instrument("input", g, 0)
        ran: list[str] = []
        for k, p in enumerate(self.passes, 1):
            if self.before_lowering is None and is_lowering(p):
                self.before_lowering = g.copy()  # the SNN's meaning, before runtime-only rewrites
                self.before_lowering.name = "before-lowering"
            t0 = time.perf_counter()
            before = ", ".join(ran) or "none"
            try:
                out = p(g, ctx)
            except SnnCompileError as e:
                msg = str(e)
                if not msg.startswith(p.name):
                    e.args = (f"{p.name}: {msg}",) + e.args[1:]
                raise
            except Exception as e:
                raise PassError(f"pass {p.name!r} failed: {type(e).__name__}: {e} (passes run before: {before})") from e
            if not isinstance(out, Graph):
                raise PassError(f"pass {p.name!r} returned {type(out).__name__}, not a Graph; a pass returns the graph")
            g = out
            self.timings.append((p.name, time.perf_counter() - t0))
            if self.verify:
                try:
                    g.verify()
                except VerifyError as e:
                    raise PassError(f"pass {p.name!r} broke an IR invariant: {e} (passes run before: {before})") from e
            ran.append(p.name)
            self._instrument(p.name, g, k)
        if self.before_lowering is None:
            self.before_lowering = g.copy()
            self.before_lowering.name = "before-lowering"
        return g

    def _check_instruments(self) -> None:
        """ConfigError, before any pass runs, for a print_after name or a dump_dir that cannot be."""
        _load_standard_passes()
        known = {"all", "input"} | ({*PASSES} if self._print_after_from_env else {p.name for p in self.passes})
        unknown = sorted(n for n in self.print_after if n not in known)
        if unknown:
            near = {n: difflib.get_close_matches(n, sorted(known), n=1) for n in unknown}
            hint = "; ".join(f"did you mean {m[0]!r} for {n!r}?" for n, m in near.items() if m)
            src, what = ("$SNNCOMPILE_PRINT_AFTER", "a registered pass") if self._print_after_from_env else \
                ("print_after", "a stage of this pipeline")
            raise ConfigError(f"{src}: {', '.join(map(repr, unknown))} is not {what} "
                              f"({', '.join(['input'] + [p.name for p in self.passes])}, or 'all')"
                              + (f" — {hint}" if hint else " — use one of those names"))
        if self.dump_dir:
            try:
                d = os.fspath(self.dump_dir)
                why = "is a file, not a directory" if os.path.exists(d) and not os.path.isdir(d) else None
                os.makedirs(d, exist_ok=True) if why is None else None
                why = why or (None if os.access(d, os.W_OK | os.X_OK) else "is not writable")
            except (OSError, TypeError) as e:
                why = f"cannot be created ({getattr(e, 'strerror', None) or e})"
            if why:
                raise ConfigError(f"dump_dir {self.dump_dir!r} {why} — give a writable directory (created when "
                                  "missing) for the NN-pass-name.txt dumps")

    def _instrument(self, name: str, g: Graph, k: int) -> None:
        if self.snapshots:
            snap = g.copy(share_params=True)  # printed and diffed only (the SNN keeps it weightless)
            snap.name = name
            self.stages.append((name, snap))
        if "all" in self.print_after or name in self.print_after:
            out = self.stream or sys.stdout
            print(f"// ----- after {name} -----", file=out)
            print(g.format(), file=out)
        if self.dump_dir:
            os.makedirs(self.dump_dir, exist_ok=True)
            with open(os.path.join(self.dump_dir, f"{k:02d}-{name}.txt"), "w") as f:
                f.write(g.format() + "\n")

    # inspecting ----------------------------------------------------------------------------
    def stage(self, name: str) -> Graph:
        """The snapshot kept after the pass called ``name`` ("input" is the graph before any)."""
        for n, g in self.stages:
            if n == name:
                return g
        raise ConfigError(f"no stage {name!r}; stages: {', '.join(n for n, _ in self.stages) or 'none (run first, with snapshots=True)'}")

    def diff(self, a: str, b: str) -> str:
        """What changed between two stages, as a unified diff of their printed graphs."""
        return self.stage(a).diff(self.stage(b))

    def timing_table(self) -> str:
        """One line a pass: its name and milliseconds."""
        return "\n".join(f"{n:<24} {t * 1e3:8.2f} ms" for n, t in self.timings)
