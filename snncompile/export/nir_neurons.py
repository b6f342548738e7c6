"""Our neuron families in NIR's terms, both ways: the one place where the two sets of equations meet.

NIR 1.0 writes neurons in continuous time; snncompile writes and reads them with forward Euler
steps of ``dt`` (``graph.metadata["dt"]``, 1 by default):

    I:    v <- v + dt*r*x                          LI:  v <- v + dt*(v_leak - v + r*x)/tau
    IF:   v <- v + dt*r*x,  fire v > v_threshold, then v <- v_reset
    LIF:  v <- v + dt*(v_leak - v + r*x)/tau,  fire v > v_threshold, then v <- v_reset

NIR's neurons start at 0 and fire when ``v > v_threshold``; ours start at ``v0 = v_init*theta``
and fire when ``v >= theta``. So the exported state is ``w = v - v0`` (exact for every affine
neuron: the threshold, v_reset and v_leak move by -v0), and the threshold written is the largest
float32 below ``theta - v0`` (then ``w > it`` exactly when ``w >= theta - v0`` in float32).

Reset by subtraction has no NIR neuron: it is written as an integrator (``I``, or ``LI`` for a
leaky neuron) whose output goes to a ``Threshold``, whose spikes come back through a ``Scale`` of
``reset_scale`` into the integrator one step later — the spike of step t lowers the membrane
before the current of step t+1 arrives, as in our equations. ``form="if"`` writes the plain
IF/LIF instead (reset to a membrane of 0), which changes the neuron.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UnsupportedOpError

__all__ = ["NirNeuron", "below", "above", "neuron_to_nir", "NEURON_FAMILIES"]

F32 = np.float32
NEURON_FAMILIES = ("if", "lif")  # binary-spike families with an exact NIR form


def below(x) -> np.ndarray:
    """The largest float32 below each value: NIR's strict ``v > below(t)`` is our ``v >= t``."""
    return np.nextafter(np.asarray(x, F32), F32(-np.inf))


def above(x) -> np.ndarray:
    """The smallest float32 above each value (the inverse of ``below``)."""
    return np.nextafter(np.asarray(x, F32), F32(np.inf))


@dataclass
class NirNeuron:
    """One neuron layer in NIR's parameters (float32 arrays of the layer's per-sample shape).
    ``kind`` is "IF" or "LIF" (plain nodes) or "I" / "LI" (the integrator of a reset-by-subtraction
    composition, whose ``Scale`` feedback weight is ``reset_scale``)."""

    kind: str
    r: np.ndarray
    v_threshold: np.ndarray
    v_reset: np.ndarray | None = None
    reset_scale: np.ndarray | None = None
    tau: np.ndarray | None = None
    v_leak: np.ndarray | None = None

    def arrays(self) -> dict:
        """The arrays that are set, by NIR field name (``reset_scale`` is the Scale's)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}


def _per_sample(theta: torch.Tensor, shape: tuple) -> np.ndarray:
    """A scalar or per-channel threshold as a float32 array of the per-sample ``shape``."""
    th = theta.detach().cpu().to(torch.float32).numpy()
    if th.size == 1:
        return np.full(shape, th.reshape(()), F32)
    return np.broadcast_to(th.reshape((-1,) + (1,) * (len(shape) - 1)), shape).astype(F32)


def neuron_to_nir(node, theta: torch.Tensor, shape: tuple, dt: float, form: str) -> NirNeuron:
    """The NIR form of neuron ``node`` (attrs: family and its parameters) with threshold ``theta``
    over per-sample ``shape``, for steps of ``dt``. ``form`` "subtract" keeps reset by subtraction
    (integrator + threshold + feedback); "if" writes plain IF/LIF nodes. UnsupportedOpError naming
    the node for a family NIR cannot express (multi-spike, signed)."""
    a = node.attrs
    family = a.get("family")
    if family not in NEURON_FAMILIES:
        raise UnsupportedOpError(
            f"export_nir: {node.describe()} is a {family!r} neuron; NIR 1.0 has binary-spike neurons only "
            f"(snncompile exports the {' and '.join(NEURON_FAMILIES)} families) — compile with max_spikes=1 and "
            "without signed neurons to export")
    th = _per_sample(theta, shape)
    v0 = F32(a.get("v_init", 0.0)) * th
    dt32 = F32(dt)
    one = np.ones(shape, F32)
    if family == "if":
        tau = v_leak = None
        r = one / dt32
        gain, keep = F32(1), F32(1)  # dt*r*c is the reset: c = -theta; nothing decays
    elif a.get("form", "spikingjelly") == "snntorch":
        beta = F32(a.get("beta", 0.9))
        tau = one * (dt32 / (F32(1) - beta))
        r = tau / dt32
        v_leak = -v0
        gain, keep = F32(1), beta  # the feedback lands through dt*r/tau = 1 and must undo one decay
    else:
        tau_steps = F32(a.get("tau", 2.0))
        tau = one * (tau_steps * dt32)
        r = one
        v_leak = F32(a.get("v_rest", 0.0)) - v0
        gain, keep = F32(1) / tau_steps, F32(1) - F32(1) / tau_steps
    v_threshold = below(th - v0)
    subtract = a.get("reset", "subtract") == "subtract"
    if subtract and form == "subtract":
        return NirNeuron("I" if tau is None else "LI", r, v_threshold, reset_scale=(-th * keep / gain).astype(F32),
                         tau=tau, v_leak=v_leak)
    # the plain form resets the membrane to 0 (-v0 in the exported frame): the part above theta is lost
    v_reset = (F32(0.0 if subtract else a.get("v_reset", 0.0)) - v0).astype(F32)
    return NirNeuron("IF" if tau is None else "LIF", r, v_threshold, v_reset=np.asarray(v_reset, F32) * one,
                     tau=tau, v_leak=v_leak)


def neuron_record(node, theta: torch.Tensor, ir_id: int) -> str:
    """Our neuron as JSON for NIR metadata (family, its parameters, the threshold's values, and
    ``ir_node``: the id of the IR node it was, as printed), so ``from_nir`` restores it exactly when
    the graph's numbers still agree with it."""
    keep = {k: v for k, v in node.attrs.items() if isinstance(v, (str, int, float, bool)) or v is None}
    th = theta.detach().cpu().to(torch.float32).reshape(-1).tolist()
    return json.dumps({"op": "neuron", "ir_node": ir_id, "attrs": keep, "threshold": th,
                       "threshold_shape": list(theta.shape)})


# ---- NIR -> ours ----------------------------------------------------------------------------
def per_channel(arr, what: str, where: str) -> torch.Tensor:
    """A per-sample array as our scalar (all equal) or per-channel (equal within each channel, dim
    0) tensor; UnsupportedOpError naming ``where`` when it varies inside a channel."""
    a = np.asarray(arr, F32)
    flat = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)
    if np.all(a == a.reshape(-1)[0]):
        return torch.tensor(float(a.reshape(-1)[0]), dtype=torch.float32)
    if a.ndim > 1 and np.all(flat == flat[:, :1]):
        return torch.from_numpy(flat[:, 0].copy())
    if a.ndim == 1:
        return torch.from_numpy(a.copy())
    raise UnsupportedOpError(f"from_nir: {where} has a {what} that varies within a channel; snncompile's neurons take "
                             "one value per channel")


def uniform(arr, what: str, where: str) -> float:
    """The one value of ``arr``; UnsupportedOpError naming ``where`` when its values differ."""
    a = np.asarray(arr, np.float64).reshape(-1)
    if a.size and np.all(a == a[0]):
        return float(a[0])
    raise UnsupportedOpError(f"from_nir: {where} has a {what} that differs between neurons; snncompile's neurons "
                             f"take one {what} per layer")


class _Proxy:
    """Just enough of an IR node for ``neuron_to_nir`` (re-exporting a metadata record)."""

    def __init__(self, attrs):
        self.attrs = attrs

    def describe(self) -> str:
        return f"neuron {self.attrs.get('family')!r}"


def restore_record(record: str | None, graph_arrays: dict, shape: tuple, dt: float, subtract: bool):
    """``(attrs, threshold)`` from snncompile's metadata ``record`` when re-exporting it gives exactly
    ``graph_arrays`` (and its reset is the one the graph has); None otherwise (edited or foreign)."""
    if not record:
        return None
    try:
        rec = json.loads(record)
        attrs = dict(rec["attrs"])
        theta = torch.tensor(rec["threshold"], dtype=torch.float32).reshape(rec["threshold_shape"])
        if (attrs.get("reset", "subtract") == "subtract") != subtract or rec.get("op") != "neuron":
            return None
        mine = neuron_to_nir(_Proxy(attrs), theta, shape, dt, "subtract" if subtract else "if").arrays()
    except (ValueError, KeyError, TypeError, UnsupportedOpError):
        return None
    same = set(mine) == set(graph_arrays) and all(np.array_equal(np.asarray(graph_arrays[k], F32), v)
                                                  for k, v in mine.items())
    return (attrs, theta) if same else None


def neuron_from_nir(kind: str, p: dict, dt: float, where: str) -> tuple[dict, torch.Tensor, np.ndarray | None]:
    """Our neuron for NIR parameters ``p`` (field name -> array; ``reset_scale`` for a subtraction
    loop, whose integrator is ``kind`` "I"): ``(attrs, threshold, input scale or None)``. The input
    scale multiplies the current first (NIR's ``dt*r`` or ``r``); None when it is all ones."""
    if kind == "IF":
        attrs = {"family": "if", "v_init": 0.0, "reset": "value", "v_reset": uniform(p["v_reset"], "v_reset", where)}
        gain = F32(dt) * np.asarray(p["r"], F32)
    elif kind == "LIF":
        attrs = {"family": "lif", "form": "spikingjelly", "tau": uniform(p["tau"], "tau", where) / dt,
                 "v_rest": uniform(p["v_leak"], "v_leak", where), "v_init": 0.0, "reset": "value",
                 "v_reset": uniform(p["v_reset"], "v_reset", where)}
        gain = np.asarray(p["r"], F32)
    elif kind == "I":  # integrator + threshold + Scale feedback: reset by subtraction
        gain = F32(dt) * np.asarray(p["r"], F32)
        theta = per_channel(-gain * np.asarray(p["reset_scale"], F32), "reset", where)
        th = _per_sample(theta, np.shape(p["v_threshold"]))
        v_init = uniform((th - above(p["v_threshold"])) / th, "starting potential", where)
        if v_init != 0.0:
            # our IF fires at the threshold it subtracts; another threshold is a start offset, exact
            # in real arithmetic only (float32 rounds a small offset away once |v| is large)
            warnings.warn(f"from_nir: {where} fires above {float(np.min(p['v_threshold'])):g} but resets by "
                          f"{float(np.min(th)):g}; read as an IF neuron starting at v_init={v_init:g} (the same in "
                          "real arithmetic; in float32 a spike at an exact tie can move)", stacklevel=5)
        attrs = {"family": "if", "v_init": v_init, "reset": "subtract"}
        return attrs, theta, None if np.all(gain == 1) else gain
    else:
        raise UnsupportedOpError(f"from_nir: {where} is a {kind} loop without snncompile's metadata; only I + "
                                 "Threshold + Scale loops (IF reset by subtraction) are read from other tools")
    theta = per_channel(above(p["v_threshold"]), "threshold", where)
    return attrs, theta, None if np.all(gain == 1) else gain
