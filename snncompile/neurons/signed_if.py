"""The signed IF family: integrate-and-fire that also fires -1.

``v <- v + x``; a spike of +1 when ``v >= theta`` and of -1 when ``v <= -theta``, each followed
by a reset by subtraction in its direction (``v <- v - s * theta``). A layer of these carries
negative currents and residual sums that a plain IF neuron would clip at zero.
"""
from __future__ import annotations

from .family import NeuronFamily, register_family
from .params import V_INIT, reset_param


def _charge(A, v, x, p):
    return A.add(v, x)


def _charge_grad(A, g, p):
    return g, g


SIGNED_IF = register_family(NeuronFamily(
    "signed_if", (V_INIT, reset_param("subtract")), _charge, _charge_grad, spikes="signed",
    short="sif", doc="integrate-and-fire with spikes of +1 and -1, reset by subtraction both ways"))
