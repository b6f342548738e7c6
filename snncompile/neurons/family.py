"""Neuron families: the registry, and fire / reset written once for every family.

A family is one file in this package: a :class:`NeuronFamily` record with its typed parameters
(params.py) and its charge written once against an algebra (algebra.py). From that record come
the torch reference (reference.py), the C kernels (kernels/cpu_source.py) and the CUDA kernels
(kernels/cuda_source.py). A step of every family is::

    u = charge(v, x)                 the family's own
    h = u - theta                    the surrogate's argument (and what training saves)
    s = fire(u)                      binary: [h >= 0];  signed: [h >= 0] - [u + theta <= 0];
                                     multi: clamp(floor(u / theta), 0, K), K = max_spikes
    v = u - s * theta                reset 'subtract' (by the threshold, both ways when signed)
    v = s * v_reset + (1 - s) * u    reset 'value' (binary families only)

A multi-spike ("burst") family emits a count of 0..K spikes a step; it saves ``h = u/theta - 1``
(its sign bit is the spike, like everyone's h, and ``h + 1`` gives back the exact quotient, so
the backward reads the forward's count). Its surrogate gradient is the one of the *nearest
level*: ``ds/du = surrogate(u - k*theta)`` with ``k = clamp(floor(u/theta + 1/2), 1, K)`` the
level closest to u (so at K = 1 it is the binary one), and ``ds/dtheta = -k * surrogate(...)``.

Register your own with :func:`register_family`; :func:`neuron_families` lists them.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError
from .params import Param

__all__ = ["unregister_family", "registry_version", "family_of_node", "NeuronFamily", "register_family", "get_family", "neuron_families", "FAMILIES", "fire", "reset", "bptt_step",
           "SPIKE_KINDS"]

#: spike values a family emits: binary {0, 1}, signed {-1, 0, +1}, multi {0, 1, ..., max_spikes}
SPIKE_KINDS = ("binary", "signed", "multi")


@dataclass(frozen=True)
class NeuronFamily:
    """One neuron family.

    ``params``: every parameter (common ones such as ``v_init`` and ``reset`` included), in the
    order the kernels receive the float ones. ``charge(A, v, x, p) -> u`` and
    ``charge_grad(A, g, p) -> (dL/dx, dL/dv_prev)`` from ``g = dL/du``, written against an
    algebra ``A``. ``spikes``: "binary", "signed" or "multi" (a count of up to the int
    parameter ``max_spikes`` a step; params.MAX_SPIKES is one). ``leak(p) -> (param name,
    reciprocal)`` names the parameter a learnable leak replaces (``1/tau``: reciprocal True), None for a
    family without a leak. ``short`` prefixes kernel names.
    """

    name: str
    params: tuple[Param, ...]
    charge: Callable
    charge_grad: Callable
    spikes: str = "binary"
    leak: Callable | None = None
    short: str = ""
    doc: str = ""

    def __post_init__(self):
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ConfigError(f"neuron family {self.name!r} lists a parameter twice: {names}")
        if self.spikes not in SPIKE_KINDS:
            raise ConfigError(f"neuron family {self.name!r}: spikes must be one of {SPIKE_KINDS}")
        if "reset" not in names or "v_init" not in names:
            raise ConfigError(f"neuron family {self.name!r} needs the common parameters v_init and reset")
        if self.spikes in ("signed", "multi") and self.param("reset").choices != ("subtract",):
            raise ConfigError(f"neuron family {self.name!r}: a {self.spikes} family resets by subtraction only "
                              "(give it reset_param('subtract'))")
        if self.spikes == "multi" and ("max_spikes" not in names or self.param("max_spikes").type is not int):
            raise ConfigError(f"neuron family {self.name!r}: a multi-spike family needs the int parameter "
                              "max_spikes (add snncompile.neurons.params.MAX_SPIKES to its params)")
        for p in self.params:
            if p.variant and not (p.type is bool or p.choices):
                raise ConfigError(f"neuron family {self.name!r}: variant parameter {p.name} needs choices")

    def param(self, name: str) -> Param:
        """The parameter record ``name``; ConfigError naming the family's parameters."""
        for p in self.params:
            if p.name == name:
                return p
        raise ConfigError(f"neuron family {self.name!r} has no parameter {name!r}; it takes "
                          + ", ".join(p.name for p in self.params))

    @property
    def float_params(self) -> tuple[Param, ...]:
        """The runtime numbers, in kernel argument order: the float parameters and the int ones
        (which the kernels receive as exact floats)."""
        return tuple(p for p in self.params if p.type in (float, int))

    @property
    def variant_params(self) -> tuple[Param, ...]:
        """The parameters that select compiled code."""
        return tuple(p for p in self.params if p.variant)

    def defaults(self) -> dict:
        """Every parameter's default value."""
        return {p.name: p.default for p in self.params}

    def check(self, values: dict, where: str = "") -> dict:
        """All parameters (defaults filled in) checked and typed; ConfigError for an unknown
        name or a bad value, naming ``where``."""
        out = self.defaults()
        for k, v in values.items():
            out[k] = self.param(k).check(v, where)
        return out

    def variants(self) -> list[dict]:
        """Every combination of the variant parameters' choices (one compiled instance each)."""
        vps = self.variant_params
        choices = [(False, True) if p.type is bool else p.choices for p in vps]
        return [dict(zip((p.name for p in vps), combo)) for combo in itertools.product(*choices)]


FAMILIES: dict[str, NeuronFamily] = {}
_STANDARD: set[str] = set()  # the families snncompile ships (registered from this package)
_version = [0]  # bumped by every registration: compiled kernels built from an older registry are stale


def registry_version() -> int:
    """A number that changes whenever a family is registered (kernel caches key on it)."""
    return _version[0]


def register_family(family: NeuronFamily, *, replace: bool = False) -> NeuronFamily:
    """Add a family to the registry; every backend picks it up. Refuses to replace a registered
    family unless ``replace=True``."""
    if family.name in FAMILIES and not replace:
        raise ConfigError(f"a neuron family named {family.name!r} is already registered; pick another "
                          "name or pass replace=True")
    FAMILIES[family.name] = family
    if getattr(family.charge, "__module__", "").startswith(__package__ + "."):
        _STANDARD.add(family.name)  # defined by a file of this package: part of snncompile
    _version[0] += 1
    return family


def unregister_family(name: str) -> None:
    """Remove a family registered from user code (the standard families stay)."""
    if name in _STANDARD:
        raise ConfigError(f"the standard neuron family {name!r} cannot be removed")
    if FAMILIES.pop(name, None) is not None:
        _version[0] += 1


def get_family(name: str) -> NeuronFamily:
    """The family registered as ``name``; ConfigError naming the known ones."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown neuron family {name!r}; known: {', '.join(FAMILIES)} (add one with "
                          "snncompile.register_family)") from None


def neuron_families() -> list[str]:
    """The names of the registered neuron families, in registration order."""
    return list(FAMILIES)


def family_of_node(node) -> str:
    """The family name of a neuron node (its ``family`` attribute); ConfigError naming the node
    when it has none or an unknown one."""
    kind = node.attrs.get("family")
    if kind not in FAMILIES:
        where = node.describe() if hasattr(node, "describe") else repr(node)
        raise ConfigError(f"{where}: neuron family {kind!r} is not registered; known: {', '.join(FAMILIES)}")
    return kind


def _count(A, q, K):
    """The spikes of a multi-spike neuron from ``q = u / theta``: ``clamp(floor(q), 0, K)``
    (NaN-safe, as the binary step: fmin/fmax drop a NaN; ``+ 0`` makes a -0 a plain 0)."""
    low = A.let("lv_c", A.maximum(A.floor(q), A.const(0.0)))
    return A.let("lv_n", A.add(A.minimum(low, K), A.const(0.0)))


def _nearest(A, q, K):
    """The level nearest u, ``clamp(floor(q + 1/2), 1, K)``: the surrogate is taken there."""
    near = A.let("lv_r", A.maximum(A.floor(A.add(q, A.const(0.5))), A.const(1.0)))
    return A.let("lv_k", A.minimum(near, K))


def fire(A, u, theta, spikes: str, p=None):
    """``(h, s)``: what training saves ``h`` and the spike ``s``, in algebra ``A`` (``A.step(x)``
    is the Heaviside step ``[x >= 0]``). Binary and signed: ``h = u - theta``, the surrogate's
    argument. Multi (``p.max_spikes`` is K): ``h = u/theta - 1`` and ``s`` the count, whose
    derivative is the surrogate at the nearest level (see the module docstring). Every h has its
    sign bit clear exactly when the neuron fired (+)."""
    if spikes == "multi":
        q = A.let("lv_q", A.true_div(u, theta))
        s = A.with_surrogate(_count(A, q, p.max_spikes),
                             lambda: A.mul(A.sub(q, _nearest(A, q, p.max_spikes)), theta))
        return A.sub(q, A.const(1.0)), s
    h = A.sub(u, theta)
    if spikes == "binary":
        return h, A.step(h)
    return h, A.sub(A.step(h), A.step(A.neg(A.add(u, theta))))


def _bptt_multi(A, h, theta, g_s, g_v, g_th, keep, p):
    """BPTT of the multi-spike fire and its reset by subtraction, ``v = u - s * theta``: the count
    again from the saved ``h + 1 = u / theta`` (exact in fp32), the nearest level's surrogate."""
    q = A.let("lv_q", A.add(h, A.const(1.0)))
    count, nearest = _count(A, q, p.max_spikes), _nearest(A, q, p.max_spikes)
    sg = A.let("sg", A.surrogate_grad(A.let("lv_h", A.mul(A.sub(q, nearest), theta))))
    g_spike = A.let("g_spike", A.sub(g_s, A.mul(keep, A.mul(g_v, theta))))
    g_th = A.let("g_th1", A.sub(g_th, A.mul(count, g_v)))
    g_h = A.let("g_h", A.mul(g_spike, sg))
    return A.let("g_u", A.add(g_v, g_h)), A.let("g_th2", A.sub(g_th, A.mul(nearest, g_h)))


def bptt_step(A, h, theta, g_s, g_v, g_th, keep, p, spikes: str, mode: str, charge_grad):
    """One step of BPTT, written once for every backend: from the saved ``h`` (see :func:`fire`),
    the gradient reaching the spike ``g_s`` and the carried ``g_v = dL/dv_t`` (and the
    threshold's running gradient ``g_th``), give ``(dL/dx_t, dL/dv_{t-1}, g_th updated)``.
    ``keep`` is 0 to detach the reset from the graph, else 1. The spike is read from h's sign bit
    (training forwards store h with the sign of the spike, so a rounded h never changes it); a
    multi-spike count from ``h + 1`` (exact from an fp32 h; from an fp16/bf16 h a count just
    under a level may read one more, which the threshold's gradient sees, and the surrogate's
    argument is as coarse as that h).
    """
    if spikes == "multi":
        g_u, g_th = _bptt_multi(A, h, theta, g_s, g_v, g_th, keep, p)
        g_x, g_v_prev = charge_grad(A, g_u, p)
        return A.let("g_x", g_x), A.let("g_v_prev", g_v_prev), g_th
    fired = A.let("fired", A.spiked(h))
    sg = A.let("sg", A.surrogate_grad(h))
    if mode == "subtract":  # v_t = u_t - s_t * theta
        s = fired
        if spikes == "signed":  # the -1 spikes: u + theta <= 0, with u = h + theta
            neg = A.let("neg", A.step(A.neg(A.add(A.add(h, theta), theta))))
            s = A.let("s", A.sub(fired, neg))
        g_spike = A.let("g_spike", A.sub(g_s, A.mul(keep, A.mul(g_v, theta))))
        g_u = g_v
        g_th = A.let("g_th1", A.sub(g_th, A.mul(s, g_v)))
    else:  # v_t = s_t * v_reset + (1 - s_t) * u_t
        g_spike = A.let("g_spike", A.add(g_s, A.mul(keep, A.mul(g_v, A.sub(p.v_reset, A.add(h, theta))))))
        g_u = A.let("g_u0", A.mul(A.sub(A.const(1.0), fired), g_v))
    if spikes == "binary":  # through s_t = H(u_t - theta)
        g_h = A.let("g_h", A.mul(g_spike, sg))
        g_u = A.let("g_u", A.add(g_u, g_h))
        g_th = A.let("g_th2", A.sub(g_th, g_h))
    else:  # s_t = H(u - theta) - H(-u - theta)
        sg_neg = A.let("sg_neg", A.surrogate_grad(A.neg(A.add(A.add(h, theta), theta))))
        g_u = A.let("g_u", A.add(g_u, A.mul(g_spike, A.add(sg, sg_neg))))
        g_th = A.let("g_th2", A.add(g_th, A.mul(g_spike, A.sub(sg_neg, sg))))
    g_x, g_v_prev = charge_grad(A, g_u, p)
    return A.let("g_x", g_x), A.let("g_v_prev", g_v_prev), g_th


def reset(A, u, s, theta, p, mode: str):
    """The membrane after the spike ``s``: by subtraction or to ``p.v_reset``."""
    if mode == "subtract":
        return A.sub(u, A.mul(s, theta))
    return A.add(A.mul(s, p.v_reset), A.mul(A.sub(A.const(1.0), s), u))
