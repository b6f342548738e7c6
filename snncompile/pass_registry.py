"""The pass registry and pipeline specs: ``register_pass``/``get_pass`` (options checked against a
pass's declared fields), ``PassContext``, and the spec text a Pipeline reads and prints
(``parse_pipeline``, ``format_pass``)."""
from __future__ import annotations

import ast
import dataclasses
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConfigError

__all__ = ["PassContext", "register_pass", "get_pass", "PASSES", "parse_pipeline", "format_pass", "is_lowering"]

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
