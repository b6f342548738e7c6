"""The IF family: integrate-and-fire, ``v <- v + x``; soft reset (by subtraction) or to a value."""
from __future__ import annotations

from .family import NeuronFamily, register_family
from .params import V_INIT, V_RESET, reset_param


def _charge(A, v, x, p):
    return A.add(v, x)


def _charge_grad(A, g, p):
    return g, g  # du/dx = du/dv = 1


IF = register_family(NeuronFamily(
    "if", (V_INIT, reset_param("subtract", "value"), V_RESET), _charge, _charge_grad, short="if",
    doc="integrate-and-fire: v <- v + x"))
