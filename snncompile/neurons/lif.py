"""The LIF family: leaky integrate-and-fire in SpikingJelly's or snnTorch's form.

    spikingjelly: v <- v + (x - (v - v_rest)) / tau
    snntorch:     v <- beta * v + x
"""
from __future__ import annotations

from .family import NeuronFamily, register_family
from .params import V_INIT, V_RESET, Param, reset_param

FORM = Param("form", str, "spikingjelly", choices=("spikingjelly", "snntorch"), variant=True,
             doc="spikingjelly: leak toward v_rest with time constant tau; snntorch: decay by beta")
TAU = Param("tau", float, 2.0, low=0.0, low_open=True, doc="membrane time constant in steps (spikingjelly form)")
BETA = Param("beta", float, 0.9, low=0.0, high=1.0, doc="membrane decay per step (snntorch form)")
V_REST = Param("v_rest", float, 0.0, doc="resting potential (spikingjelly form)")


def _charge(A, v, x, p):
    if p.form == "snntorch":
        return A.add(A.mul(p.beta, v), x)
    return A.add(v, A.div(A.sub(x, A.sub(v, p.v_rest)), p.tau))


def _charge_grad(A, g, p):
    if p.form == "snntorch":
        return g, A.mul(p.beta, g)
    return A.div(g, p.tau), A.sub(g, A.div(g, p.tau))


def _leak(p):
    return ("beta", False) if p.form == "snntorch" else ("tau", True)


LIF = register_family(NeuronFamily(
    "lif", (V_INIT, reset_param("subtract", "value"), V_RESET, FORM, TAU, BETA, V_REST), _charge, _charge_grad,
    leak=_leak, short="lif", doc="leaky integrate-and-fire (SpikingJelly tau form or snnTorch beta form)"))
