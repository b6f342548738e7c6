"""Typed neuron parameters: one record per parameter, checked wherever a value comes in.

A :class:`Param` says what a neuron parameter is (its type, default, allowed values or range)
and whether it selects compiled code (``variant``: a string or bool whose every choice gets its
own kernel instance) or is a runtime number handed to the kernels. Families list their
parameters (snncompile/neurons/family.py); the IR verifier, ``NeuronSpec`` and the kernels all
read the same records, so a value is checked once, the same way, everywhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["Param", "V_INIT", "V_RESET", "reset_param"]


@dataclass(frozen=True)
class Param:
    """One neuron parameter.

    ``type`` is float, bool or str; ``choices`` the allowed values of a str parameter; ``low`` /
    ``high`` bound a float (inclusive unless ``low_open`` / ``high_open``). ``variant`` marks a
    parameter that selects compiled code (str or bool). ``doc`` says what it means.
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
        if self.type is float:
            lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
            hi = "" if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
            return "a finite number" + (f" {lo}" if lo else "") + (" and" if lo and hi else "") + \
                (f" {hi}" if hi else "")
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
            if self.low is not None and (value < self.low or self.low_open and value == self.low):
                raise bad
            if self.high is not None and (value > self.high or self.high_open and value == self.high):
                raise bad
            return value
        if self.type is bool:
            if not isinstance(value, bool):
                raise bad
            return value
        if not isinstance(value, self.type):
            raise bad
        if self.choices and value not in self.choices:
            raise bad
        return value


V_INIT = Param("v_init", float, 0.0,
               doc="initial membrane as a fraction of the threshold (0 or 0.5 for conversion)")
V_RESET = Param("v_reset", float, 0.0, doc="the membrane after a spike when reset='value'")


def reset_param(*choices: str) -> Param:
    """The ``reset`` parameter a family offers: 'subtract' (by the threshold) and/or 'value'."""
    return Param("reset", str, choices[0], choices=tuple(choices), variant=True,
                 doc="after a spike: 'subtract' the threshold (soft reset) or set v to v_reset ('value')")
