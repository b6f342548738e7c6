"""Attribute schemas: ``Attr`` says what values one attribute of an op may take (type, default,
choices, range); the verifier asks ``Attr.problem(value)`` for every attribute of every node."""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["REQUIRED", "Attr"]

REQUIRED = object()

_TYPE_NAMES = {int: ("an int", "ints"), float: ("a number", "numbers"), bool: ("a bool", "bools"),
               str: ("a string", "strings"), tuple: ("a tuple", "tuples"), dict: ("a dict", "dicts")}


def _is_type(v, t) -> bool:
    if t is None:
        return True
    if isinstance(t, tuple):
        return any(_is_type(v, e) for e in t)
    if t is bool:
        return isinstance(v, bool)
    if t is int:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)
    if t is float:
        return isinstance(v, numbers.Real) and not isinstance(v, bool)
    if t is tuple:
        return isinstance(v, (tuple, list))
    return isinstance(v, t)


def _type_name(t, plural: bool) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(e, plural) for e in t)
    if t in _TYPE_NAMES:
        return _TYPE_NAMES[t][plural]
    name = getattr(t, "__name__", str(t))
    return f"{name}s" if plural else f"a {name}"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return repr(v)


@dataclass(frozen=True)
class Attr:
    """The schema of one attribute: its type, default and the values it may take.

    ``type``: the Python type the value (or each element, see ``tuple_ok``) must have (``float``
    accepts ints; ``int`` and ``float`` refuse bools); None for any. ``choices``: the allowed
    values (an enum). ``low``/``high``: an inclusive range (``low_open``/``high_open`` make it
    exclusive). ``optional``: None is allowed too (always when the default is None).
    ``tuple_ok``: a tuple/list of such values (one per dim) is allowed too; ``tuple_only``: the
    value must be one. ``also``: further values allowed as they are (conv padding "same").
    ``check``: one more rule, ``value -> None`` when fine or the words for what is allowed.
    """

    type: Any = None
    default: Any = REQUIRED
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    tuple_ok: bool = False
    tuple_only: bool = False
    also: tuple = ()
    check: Callable[[Any], str | None] | None = None
    doc: str = ""

    @staticmethod
    def from_default(default: Any) -> "Attr":
        """The schema of an attribute given only by its default: the default's type is checked
        (none when the default is None or REQUIRED)."""
        if isinstance(default, Attr):
            return default
        if default is REQUIRED or default is None:
            return Attr(None, default)
        for t in (bool, int, float, str):
            if _is_type(default, t):
                return Attr(t, default)
        if isinstance(default, (tuple, list)):
            return Attr(tuple, default)
        return Attr(type(default), default)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> str:
        """What the attribute may be, in words: ``an int >= 1 or a tuple of them``."""
        if self.choices is not None:
            base = "one of " + ", ".join(_fmt(c) for c in self.choices)
            plural = "values from " + ", ".join(_fmt(c) for c in self.choices)
        else:
            rng = self._range_words()
            base = (_type_name(self.type, False) if self.type is not None else "any value") + rng
            plural = (_type_name(self.type, True) if self.type is not None else "values") + rng
        if self.tuple_only:
            words = f"a tuple of {plural}"
        elif self.tuple_ok:
            words = f"{base} or a tuple of them"
        else:
            words = base
        if self.also:
            words += " or " + " or ".join(_fmt(a) for a in self.also)
        if self.optional or self.default is None:
            words += " or None"
        return words

    def _range_words(self) -> str:
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return f" in {'(' if self.low_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if self.high_open else ']'}"
        if lo is not None:
            return f" {'>' if self.low_open else '>='} {_fmt(lo)}"
        if hi is not None:
            return f" {'<' if self.high_open else '<='} {_fmt(hi)}"
        return ""

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else the words for what is (``describe()``)."""
        if value is None and (self.optional or self.default is None):
            return None
        try:
            if any(value == a and type(value) is type(a) for a in self.also):
                return None
        except Exception:
            pass
        if self.tuple_only or self.tuple_ok and isinstance(value, (tuple, list)):
            if not isinstance(value, (tuple, list)) or not value and not self.tuple_only:
                return self.describe()
            ok = all(self._one_ok(v) for v in value)
        else:
            ok = self._one_ok(value)
        if ok and self.check is not None:
            return self.check(value)
        return None if ok else self.describe()

    def _one_ok(self, v) -> bool:
        if self.choices is not None:
            try:
                return any(v == c and _is_type(v, type(c)) for c in self.choices)
            except Exception:
                return False
        if not _is_type(v, self.type):
            return False
        if self.low is not None and not (v > self.low if self.low_open else v >= self.low):
            return False
        if self.high is not None and not (v < self.high if self.high_open else v <= self.high):
            return False
        return True
