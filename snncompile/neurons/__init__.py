"""Neuron families and the neuron layer: one file a family, every backend built from it.

- params.py: typed parameter records; algebra.py: the arithmetic families are written in;
- family.py: the registry, fire and reset written once; spec.py: NeuronSpec;
- reference.py: the torch reference (the oracle for every kernel);
- if_.py, lif.py, signed_if.py, multi_if.py: the standard families.

Equations (DESIGN.md, per neuron, per step t = 1..T)::

    IF:               v <- v + x[t]
    LIF spikingjelly: v <- v + (x[t] - (v - v_rest)) / tau
    LIF snntorch:     v <- beta * v + x[t]
    signed IF:        v <- v + x[t], spikes of +1 (v >= theta) and -1 (v <= -theta)
    multi-spike IF:   v <- v + x[t], s[t] = clamp(floor(v / theta), 0, max_spikes) spikes
    s[t] = 1 if v >= theta else 0
    reset subtract:   v <- v - s[t] * theta
    reset value:      v <- s[t] ? v_reset : v
"""
from __future__ import annotations

from . import if_, lif, signed_if  # noqa: F401  (registers the standard families, in this order)
from . import multi_if  # noqa: F401  (after them: neuron_families() lists it fourth)
from .algebra import CAlgebra, ParamView, Reciprocal, Sym, TorchAlgebra
from .family import FAMILIES, bptt_step, registry_version, family_of_node, NeuronFamily, fire, get_family, neuron_families, register_family, reset, unregister_family
from .params import Param
from .reference import broadcast_threshold, initial_membrane, neuron_reference
from .spec import INPUT_KINDS, RUN_FIELDS, NeuronSpec

__all__ = ["unregister_family", "registry_version", "NeuronSpec", "NeuronFamily", "Param", "neuron_reference", "broadcast_threshold", "initial_membrane",
           "family_of_node", "register_family", "get_family", "neuron_families", "FAMILIES", "fire", "reset", "bptt_step", "bptt_step",
           "TorchAlgebra", "CAlgebra", "Sym", "ParamView", "Reciprocal", "INPUT_KINDS", "RUN_FIELDS"]
