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

import ast
import dataclasses
import difflib
import numbers
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TextIO

from .errors import ConfigError, PassError, SnnCompileError, VerifyError
from .ir import Graph

__all__ = ["PassContext", "register_pass", "get_pass", "PASSES", "Pipeline", "parse_pipeline", "format_pass", "is_lowering"]

PASSES: dict[str, type] = {}


@dataclass
class PassContext:
    """What passes share: options, calibration data, cached statistics, and notes for users."""

    calibration_data: Any = None
    T: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    device: Any = None


_STANDARD_MODULE = "snncompile.passes."


def register_pass(name: str, *, replace: bool = False) -> Callable[[type], type]:
    """Class decorator: make a frozen dataclass with ``__call__(graph, ctx)`` a named pass. A
    standard pass (``normalize``, ...) is replaced only with ``replace=True`` (ConfigError else:
    every pipeline naming it would run yours)."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", name):
        raise ConfigError(f"pass names are kebab-case (like 'fold-batchnorm'), got {name!r}")

    def wrap(cls: type) -> type:
        if not isinstance(cls, type):
            raise ConfigError(f"register_pass({name!r}) decorates a class with __call__(graph, ctx), not {cls!r}")
        if not cls.__module__.startswith(_STANDARD_MODULE):
            _load_standard_passes()  # so a user's pass can never be overwritten by the library loading later
        old = PASSES.get(name)
        if old is not None and not replace and old.__module__.startswith(_STANDARD_MODULE) and \
                (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ConfigError(f"register_pass: {name!r} is a standard pass ({old.__module__}.{old.__qualname__}); "
                              f"registering {cls.__qualname__} under that name would replace it in every pipeline "
                              f"— choose another name, or pass replace=True to replace it on purpose")
        if not dataclasses.is_dataclass(cls):
            cls = dataclass(frozen=True)(cls)
        cls.name = name
        PASSES[name] = cls
        return cls

    return wrap


def _load_standard_passes() -> None:
    import snncompile.passes  # noqa: F401  (registers the standard library)


def get_pass(name: str, **options) -> Any:
    """Instantiate the pass registered as ``name`` with ``options``; ConfigError if unknown."""
    _load_standard_passes()
    try:
        cls = PASSES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown pass {name!r}; registered: {', '.join(sorted(PASSES))}") from None
    _check_option_types(name, cls, options)
    try:
        return cls(**options)
    except TypeError as e:
        fields = [f.name for f in dataclasses.fields(cls)]
        raise ConfigError(f"pass {name!r}: bad options {options}: {e}; it takes {fields}") from None


_KINDS = {"float": numbers.Real, "int": numbers.Integral, "bool": bool, "str": str, "None": type(None)}
_EXAMPLE = {"float": "1.0", "int": "1", "bool": "True", "str": "name"}


def _check_option_types(name: str, cls: type, options: dict) -> None:
    """ConfigError for an option that does not fit its field's type (float, int, bool, str, or a
    union of them with None; others are not checked): ``p=True`` is no percentile."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in options.items():
        t = fields[key].type if key in fields else "?"
        kinds = [k.strip() for k in (t if isinstance(t, str) else getattr(t, "__name__", "?")).split("|")]
        if all(k in _KINDS for k in kinds) and not any(
                isinstance(value, _KINDS[k]) and (k == "bool" or not isinstance(value, bool)) for k in kinds):
            ex = fields[key].default if type(fields[key].default).__name__ == kinds[0] else _EXAMPLE.get(kinds[0])
            raise ConfigError(f"pass {name!r}: option {key}={value!r} is of type {type(value).__name__}, but {key} takes "
                              f"{' or '.join(kinds)} — write it like {key}={ex}")


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def _split_top(spec: str) -> list[str]:
    items, depth, cur = [], 0, ""
    for ch in spec:
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    return [i.strip() for i in items if i.strip()]


def parse_pipeline(spec: str) -> list:
    """``"a,b{k=v k2=v2}"`` -> pass instances, in order; ConfigError naming a bad item."""
    passes = []
    for item in _split_top(spec):
        m = re.fullmatch(r"([a-z][a-z0-9-]*)\s*(?:\{([^{}]*)\})?", item)
        if m is None:
            raise ConfigError(f"pipeline spec {spec!r}: cannot read {item!r}; write items like "
                              "'canonicalize' or 'normalize{mode=max p=99.9}'")
        opts = {}
        for kv in (m.group(2) or "").split():
            if "=" not in kv:
                raise ConfigError(f"pipeline spec {spec!r}: option {kv!r} needs the form key=value")
            k, v = kv.split("=", 1)
            if k in opts:
                raise ConfigError(f"pipeline spec {spec!r}: option {k!r} of {m.group(1)!r} is given twice "
                                  f"({k}={opts[k]!r} and {k}={_parse_value(v)!r}); give it once")
            opts[k] = _parse_value(v)
        passes.append(get_pass(m.group(1), **opts))
    if not passes:
        raise ConfigError("empty pipeline spec; give pass names separated by commas")
    return passes


def format_pass(p) -> str:
    """A pass as text: its name and the options that differ from their defaults."""
    opts = []
    for f in dataclasses.fields(p):
        v = getattr(p, f.name)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if v != default:
            opts.append(f"{f.name}={v!r}" if isinstance(v, str) and (" " in v or "," in v) else f"{f.name}={v}")
    return p.name + ("{" + " ".join(opts) + "}" if opts else "")


def is_lowering(p) -> bool:
    """True for a pass of the lowering stage (``lowering = True`` on the pass): it rewrites the
    graph for the runtime (hoisting, fusions) without changing what the SNN computes; printing,
    exporters and analyses read the stage before it (``Pipeline.before_lowering``)."""
    return bool(getattr(p, "lowering", False))


def _as_pass(p, where: str = "pipeline item"):
    """A pass instance from an instance, a name, or one spec item like ``"normalize{mode=max}"``."""
    if not isinstance(p, str):
        if isinstance(p, type) or not (isinstance(getattr(p, "name", None), str) and dataclasses.is_dataclass(p)):
            what = f"the class {p.__name__}, not an instance" if isinstance(p, type) else f"type {type(p).__name__}"
            raise ConfigError(f"{where} is {p!r} ({what}), not a pass — give a pass instance (get_pass('normalize', "
                              "mode='max')), a name ('canonicalize') or a spec item ('normalize{mode=max}')")
        return p
    passes = parse_pipeline(p)
    if len(passes) != 1:
        raise ConfigError(f"expected one pass, got {len(passes)} in {p!r}")
    return passes[0]


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
            snap = g.copy()
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
