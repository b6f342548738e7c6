"""Typed neuron parameters: one record per parameter, checked wherever a value comes in.

A :class:`Param` says what a neuron parameter is (its type, default, allowed values or range)
and whether it selects compiled code (``variant``: a string or bool whose every choice gets its
own kernel instance) or is a runtime number handed to the kernels. Families list their
parameters (snncompile/neurons/family.py); the IR verifier, ``NeuronSpec`` and the kernels all
read the same records, so a value is checked once, the same way, everywhere.
"""
from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["Param", "V_INIT", "V_RESET", "MAX_SPIKES", "reset_param", "parse_params"]


@dataclass(frozen=True)
class Param:
    """One neuron parameter.

    ``type`` is float, int, bool or str; ``choices`` the allowed values of a str parameter;
    ``low`` / ``high`` bound a float or an int (inclusive unless ``low_open`` / ``high_open``).
    ``variant`` marks a parameter that selects compiled code (str or bool); float and int ones
    are runtime numbers (an int reaches the kernels as an exact float, so it is kept below
    2**24). ``doc`` says what it means.
    """

    name: str
    type: type
    default: Any
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    variant: bool = False
    doc: str = ""

    def allowed(self) -> str:
        """What values are allowed, in words (for error messages)."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.type in (float, int):
            lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
            hi = "" if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
            return ("a finite number" if self.type is float else "an integer") + (f" {lo}" if lo else "") + \
                (" and" if lo and hi else "") + (f" {hi}" if hi else "")
        return f"a {self.type.__name__}"

    def check(self, value: Any, where: str = "") -> Any:
        """Return ``value`` as this parameter's type; ConfigError naming ``where``, the value and
        what is allowed when it does not fit."""
        prefix = f"{where}: " if where else ""
        bad = ConfigError(f"{prefix}neuron parameter {self.name}={value!r} is not allowed; "
                          f"{self.name} must be {self.allowed()}")
        if self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                try:
                    import torch
                    if isinstance(value, torch.Tensor) and value.numel() == 1:
                        value = float(value)
                    else:
                        raise bad
                except ImportError:  # pragma: no cover
                    raise bad from None
            value = float(value)
            if not math.isfinite(value):
                raise bad
            return self._in_range(value, bad)
        if self.type is int:
            if isinstance(value, bool):
                raise bad
            try:  # 2.0 is refused too: a count is written as an int
                value = operator.index(value)  # an int, or a numpy / torch integer
            except TypeError:
                raise bad from None
            return self._in_range(value, bad)
        if self.type is bool:
            if not isinstance(value, bool):
                raise bad
            return value
        if not isinstance(value, self.type):
            raise bad
        if self.choices and value not in self.choices:
            raise bad
        return value

    def _in_range(self, value, bad):
        if self.low is not None and (value < self.low or self.low_open and value == self.low):
            raise bad
        if self.high is not None and (value > self.high or self.high_open and value == self.high):
            raise bad
        return value


V_INIT = Param("v_init", float, 0.0,
               doc="initial membrane as a fraction of the threshold (0 or 0.5 for conversion)")
V_RESET = Param("v_reset", float, 0.0, doc="the membrane after a spike when reset='value'")

#: how many spikes a multi-spike family may emit in one step (its ``spikes="multi"`` needs it)
MAX_SPIKES = Param("max_spikes", int, 4, low=1, high=1 << 16,
                   doc="the most spikes one neuron emits in one step (a count 0..max_spikes)")


def reset_param(*choices: str) -> Param:
    """The ``reset`` parameter a family offers: 'subtract' (by the threshold) and/or 'value'."""
    return Param("reset", str, choices[0], choices=tuple(choices), variant=True,
                 doc="after a spike: 'subtract' the threshold (soft reset) or set v to v_reset ('value')")


def parse_params(params: tuple[Param, ...], text: str, where: str, fixed: dict | None = None) -> dict:
    """``"max_spikes=2,v_rest=0.1"`` (items split by ``,`` or ``;``; values read as Python
    literals, else as words) -> values of ``params``, each checked by its record. ``fixed`` maps
    names the caller sets itself to who sets them. ConfigError naming ``where``, the bad item,
    key or value, and the names that may be given."""
    fixed = fixed or {}
    settable = [p.name for p in params if p.name not in fixed]
    takes = ", ".join(settable) or "none"
    out = {}
    for item in (i.strip() for i in text.replace(";", ",").split(",")):
        if not item:
            continue
        key, eq, raw = (part.strip() for part in item.partition("="))
        if not eq or not key:
            raise ConfigError(f"{where}: cannot read {item!r}; write name=value items separated by commas, "
                              f"like max_spikes=2 (it takes: {takes})")
        if key in fixed:
            raise ConfigError(f"{where}: {key} is set by {fixed[key]}, not here")
        if key not in settable:
            raise ConfigError(f"{where}: no parameter {key!r}; it takes: {takes}")
        if key in out:
            raise ConfigError(f"{where}: {key} is given twice; give it once")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a word: a str parameter's choice
        out[key] = next(p for p in params if p.name == key).check(value, where)
    return out
