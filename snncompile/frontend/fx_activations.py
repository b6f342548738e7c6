"""Activations the op table has no op for: every torch spelling -> one canonical kind.

The fx frontend records the kind on the opaque node (``activation="gelu"``), so the passes name
what they refuse without guessing from names (kinds: ``snncompile.ops.ACTIVATIONS``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["activation_of_module", "activation_of_function", "activation_of_method"]


# activations with no op of their own: every spelling -> the canonical kind (ops.ACTIVATIONS) ------
_ACTIVATION_MODULES = {
    nn.GELU: "gelu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.SiLU: "silu", nn.ELU: "elu",
    nn.LeakyReLU: "leaky_relu", nn.Softplus: "softplus", nn.Hardswish: "hardswish", nn.Mish: "mish",
    nn.SELU: "selu", nn.CELU: "celu", nn.Hardsigmoid: "hardsigmoid", nn.LogSigmoid: "logsigmoid",
    nn.Tanhshrink: "tanhshrink", nn.Softsign: "softsign", nn.PReLU: "prelu", nn.RReLU: "rrelu",
}


def _spellings(kind: str, names: tuple[str, ...], owners: tuple) -> dict:
    return {getattr(o, n): kind for o in owners for n in names if callable(getattr(o, n, None))}


_ACTIVATION_FUNCTIONS: dict = {}
for _kind, _names in [
    ("gelu", ("gelu",)), ("sigmoid", ("sigmoid", "sigmoid_", "expit")), ("tanh", ("tanh", "tanh_")),
    ("silu", ("silu",)), ("elu", ("elu", "elu_")), ("leaky_relu", ("leaky_relu", "leaky_relu_")),
    ("softplus", ("softplus",)), ("hardswish", ("hardswish",)), ("mish", ("mish",)),
    ("selu", ("selu", "selu_")), ("celu", ("celu", "celu_")), ("hardsigmoid", ("hardsigmoid",)),
    ("logsigmoid", ("logsigmoid", "log_sigmoid")), ("tanhshrink", ("tanhshrink",)), ("softsign", ("softsign",)),
    ("prelu", ("prelu",)), ("rrelu", ("rrelu", "rrelu_")),
]:
    _ACTIVATION_FUNCTIONS |= _spellings(_kind, _names, (F, torch, torch.special))

_ACTIVATION_METHODS = {n: k for k, names in [("sigmoid", ("sigmoid", "sigmoid_")), ("tanh", ("tanh", "tanh_")),
                                             ("prelu", ("prelu",))]
                       for n in names if hasattr(torch.Tensor, n)}


def activation_of_module(mod: nn.Module) -> str | None:
    """The canonical activation kind a leaf module computes (``nn.GELU()`` -> "gelu"), or None."""
    return _ACTIVATION_MODULES.get(type(mod))


def activation_of_function(fn) -> str | None:
    """The canonical activation kind of a function (``F.gelu``, ``torch.sigmoid``), or None."""
    try:
        return _ACTIVATION_FUNCTIONS.get(fn)
    except TypeError:  # an unhashable callable
        return None


def activation_of_method(name: str) -> str | None:
    """The canonical activation kind of a tensor method (``x.sigmoid()`` -> "sigmoid"), or None."""
    return _ACTIVATION_METHODS.get(name)
