"""The canonical op table: every op's inputs, typed attributes, parameters, traits, how it runs and
its shape rule.

One OpDef per op (ops/table.py). The emitter calls ``opdef.target`` with ``opdef.bind(...)``; the
verifier runs the same call on meta tensors to check shapes, so what is checked is what runs.
Ops that see time (``temporal``) get T after their inputs. Neurons are emitted as modules, so their
target is None. Users add an op with ``register_op``.

Attributes have schemas (ops/attrs.py: ``Attr``: type, default, allowed values or range; a plain
default checks only its type). Traits say what an op is (``weighted``, ``scale_transparent``,
``neuron``, ...; see ``TRAITS``); passes ask ``has_trait(node, "weighted")`` instead of keeping
their own lists of op names. The standard ops are in ops/standard.py, the neuron ops (one op for
every neuron family) in ops/neuron.py.
"""
from __future__ import annotations

from . import standard  # noqa: F401  (registers the standard ops)
from .attrs import REQUIRED, Attr
from .neuron import FUSED_NEURON_SUMPOOL, NEURON_OP, neuron_attrs, neuron_schema
from .standard import same_shape
from .table import (ACTIVATIONS, NEURON_OPS, OPS, STATEFUL_OPS, TRAITS, OpDef, get_op, has_trait, infer_shape,
                    ops_with, register_op)

__all__ = ["REQUIRED", "Attr", "OpDef", "OPS", "TRAITS", "ACTIVATIONS", "register_op", "get_op", "has_trait",
           "ops_with", "NEURON_OPS", "STATEFUL_OPS", "infer_shape", "NEURON_OP", "FUSED_NEURON_SUMPOOL",
           "neuron_attrs", "neuron_schema", "same_shape"]
