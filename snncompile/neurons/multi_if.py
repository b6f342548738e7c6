"""The multi-spike IF family ("burst" neuron): integrate-and-fire that may fire several times a step.

``u = v + x``; ``s = clamp(floor(u / theta), 0, K)`` spikes (K = ``max_spikes``, default 4);
``v = u - s * theta`` (reset by subtraction only). A count, not a flag, goes out: the next
layer's weights multiply it, so a neuron passes on up to K thresholds' worth of charge a step
instead of one, and at few time steps less of it waits in the membrane. With ``max_spikes=1``
it is the ``if`` family bit for bit. Training takes the surrogate at the level nearest u
(snncompile/neurons/family.py); ``max_spikes`` reaches the kernels as an exact float.
"""
from __future__ import annotations

from .family import NeuronFamily, register_family
from .params import MAX_SPIKES, V_INIT, reset_param


def _charge(A, v, x, p):
    return A.add(v, x)


def _charge_grad(A, g, p):
    return g, g  # du/dx = du/dv = 1


MULTI_IF = register_family(NeuronFamily(
    "multi_if", (V_INIT, reset_param("subtract"), MAX_SPIKES), _charge, _charge_grad, spikes="multi",
    short="mif", doc="integrate-and-fire emitting up to max_spikes spikes a step (a count), reset by subtraction"))
