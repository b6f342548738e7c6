"""Every torch spelling of an op -> one canonical op (conversion rules for the fx frontend).

Activations the op table has no op for (GELU, sigmoid, ...) stay ``opaque`` calls, but each of
their spellings (``nn.GELU()``, ``F.gelu``, ``torch.sigmoid``, ``x.sigmoid()``, ...) is named here
by one canonical kind from ``snncompile.ops.ACTIVATIONS`` (``activation_of_*``), which the
frontend records on the opaque node as ``activation="gelu"``.

A rule takes a ``Site`` (the fx node, its concrete argument values, the module it calls if any)
and returns ``(op, inputs, attrs, params)`` or None when the spelling is not one we know (the
frontend then makes an ``opaque`` node). ``inputs`` are the argument values that are tensors
flowing through the graph; everything else must be a constant.
"""
from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair, _single

__all__ = ["Site", "convert_module", "convert_function", "convert_method", "activation_of_module",
           "activation_of_function", "activation_of_method"]


@dataclass
class Site:
    """One fx call: ``args``/``kwargs`` hold IR Nodes for graph tensors, constants otherwise."""

    node: Any
    args: tuple
    kwargs: dict
    out: Any  # the concrete output value from running the example
    is_ir: Any  # callable: is this value an IR node?
    batch: int = -1  # the example's batch size


def _bind(sig_fn, args, kwargs) -> dict:
    ba = inspect.signature(sig_fn).bind(*args, **kwargs)
    ba.apply_defaults()
    return dict(ba.arguments)


# signatures of the functional spellings (the torch builtins have none we can inspect)
def _conv_sig(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1): ...
def _linear_sig(input, weight, bias=None): ...
def _bn_sig(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5): ...
def _relu_sig(input, inplace=False): ...
def _clamp_sig(input, min=None, max=None, *, out=None): ...
def _avgpool_sig(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None): ...
def _maxpool_sig(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False): ...
def _adaptive_sig(input, output_size): ...
def _flatten_sig(input, start_dim=0, end_dim=-1): ...
def _dropout_sig(input, p=0.5, training=True, inplace=False): ...
def _cat_sig(tensors, dim=0): ...
def _binary_sig(input, other, *, alpha=1, out=None, rounding_mode=None): ...
def _hardtanh_sig(input, min_val=-1.0, max_val=1.0, inplace=False): ...


def _tensor_param(v, what: str):
    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    return None if v is None else False


def _conv(site, pad):
    a = _bind(_conv_sig, site.args, site.kwargs)
    w, b = _tensor_param(a["weight"], "weight"), _tensor_param(a["bias"], "bias")
    if w is False or w is None or b is False:
        return None  # weights computed in the graph: not a conv we can fold
    op = "conv1d" if w.dim() == 3 else "conv2d"
    attrs = {"stride": pad(a["stride"]), "padding": a["padding"] if isinstance(a["padding"], str) else pad(a["padding"]),
             "dilation": pad(a["dilation"]), "groups": int(a["groups"])}
    params = {"weight": w} | ({"bias": b} if b is not None else {})
    return op, [a["input"]], attrs, params


def _pool_attrs(a, maxpool: bool):
    k = _pair(a["kernel_size"])
    s = k if a["stride"] is None or a["stride"] == [] else _pair(a["stride"])
    attrs = {"kernel_size": k, "stride": s, "padding": _pair(a["padding"])}
    if maxpool:
        attrs |= {"dilation": _pair(a["dilation"]), "ceil_mode": bool(a["ceil_mode"])}
    else:
        attrs |= {"ceil_mode": bool(a["ceil_mode"]), "count_include_pad": bool(a["count_include_pad"]),
                  "divisor_override": a["divisor_override"]}
    return attrs


def _relu(site):
    a = _bind(_relu_sig, site.args, site.kwargs)
    return "relu", [a["input"]], {}, {}


def _clamp(site):
    a = _bind(_clamp_sig, site.args, site.kwargs)
    lo, hi = a["min"], a["max"]
    if site.is_ir(lo) or site.is_ir(hi) or isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
        return None
    if hi is None and lo is not None and float(lo) == 0.0:
        return "relu", [a["input"]], {}, {}
    return "clamp", [a["input"]], {"min": None if lo is None else float(lo), "max": None if hi is None else float(hi)}, {}


def _clamp_min(site):
    a = _bind(lambda input, min: None, site.args, site.kwargs)
    return _clamp(Site(site.node, (a["input"], a["min"]), {}, site.out, site.is_ir, site.batch))


def _binary(site, kind: str):
    a = _bind(_binary_sig, site.args, site.kwargs)
    x, y = a["input"], a["other"]
    if a["rounding_mode"] is not None:
        return None
    if kind == "add":
        if site.is_ir(x) and site.is_ir(y) and a["alpha"] == 1:
            return "add", [x, y], {}, {}
        return None
    const = None
    if kind == "mul" and site.is_ir(x) and isinstance(y, (int, float)):
        tensor, const = x, float(y)
    elif kind == "mul" and site.is_ir(y) and isinstance(x, (int, float)):
        tensor, const = y, float(x)
    elif kind == "div" and site.is_ir(x) and isinstance(y, (int, float)) and y != 0:
        tensor, const = x, 1.0 / float(y)
    if const is None:
        return None
    return "mul_const", [tensor], {"value": const}, {}


def _reshape(site):
    x = site.args[0]
    out = site.out
    if not isinstance(out, torch.Tensor) or not site.is_ir(x):
        return None
    if out.dim() == 0 or out.shape[0] != site.batch:
        return None  # reshapes across the batch dimension are not per-sample
    return "reshape", [x], {"shape": tuple(out.shape[1:])}, {}


def _flatten(site):
    a = _bind(_flatten_sig, site.args, site.kwargs)
    start, end = a["start_dim"], a["end_dim"]
    if start == 0:
        return _reshape(site)  # flatten from 0 crosses the batch: only fine if it keeps it
    return "flatten", [a["input"]], {"start_dim": int(start), "end_dim": int(end)}, {}


def _cat(site):
    a = _bind(_cat_sig, site.args, site.kwargs)
    tensors = list(a["tensors"])
    if not all(site.is_ir(t) for t in tensors) or a["dim"] == 0:
        return None
    return "cat", tensors, {"dim": int(a["dim"])}, {}


def _dropout(site):
    a = _bind(_dropout_sig, site.args, site.kwargs)
    return "dropout", [a["input"]], {"p": float(a["p"])}, {}


_FUNCTIONS = {
    F.relu: _relu, torch.relu: _relu, torch.relu_: _relu, F.relu_: _relu,
    torch.clamp: _clamp, torch.clip: _clamp, torch.clamp_min: _clamp_min,
    F.conv1d: lambda s: _conv(s, _single), F.conv2d: lambda s: _conv(s, _pair),
    F.avg_pool2d: lambda s: ("avgpool2d", [_bind(_avgpool_sig, s.args, s.kwargs)["input"]],
                             _pool_attrs(_bind(_avgpool_sig, s.args, s.kwargs), False), {}),
    F.max_pool2d: lambda s: None if _bind(_maxpool_sig, s.args, s.kwargs)["return_indices"] else
    ("maxpool2d", [_bind(_maxpool_sig, s.args, s.kwargs)["input"]], _pool_attrs(_bind(_maxpool_sig, s.args, s.kwargs), True), {}),
    F.adaptive_avg_pool2d: lambda s: ("adaptive_avgpool2d", [_bind(_adaptive_sig, s.args, s.kwargs)["input"]],
                                      {"output_size": _pair(_bind(_adaptive_sig, s.args, s.kwargs)["output_size"])}, {}),
    torch.flatten: _flatten, torch.reshape: _reshape,
    operator.add: lambda s: _binary(s, "add"), operator.iadd: lambda s: _binary(s, "add"),
    torch.add: lambda s: _binary(s, "add"),
    operator.mul: lambda s: _binary(s, "mul"), operator.imul: lambda s: _binary(s, "mul"), torch.mul: lambda s: _binary(s, "mul"),
    operator.truediv: lambda s: _binary(s, "div"), operator.itruediv: lambda s: _binary(s, "div"),
    torch.div: lambda s: _binary(s, "div"),
    torch.cat: _cat, torch.concat: _cat,
    F.dropout: _dropout, F.dropout2d: _dropout, F.dropout1d: _dropout,
}


def _linear_fn(site):
    a = _bind(_linear_sig, site.args, site.kwargs)
    w, b = _tensor_param(a["weight"], "weight"), _tensor_param(a["bias"], "bias")
    if w is None or w is False or b is False:
        return None
    return "linear", [a["input"]], {}, {"weight": w} | ({"bias": b} if b is not None else {})


def _bn_fn(site):
    a = _bind(_bn_sig, site.args, site.kwargs)
    ps = {k: _tensor_param(a[k], k) for k in ("running_mean", "running_var", "weight", "bias")}
    if any(v is False for v in ps.values()) or ps["running_mean"] is None or a["training"]:
        return None
    return "batchnorm", [a["input"]], {"eps": float(a["eps"])}, {k: v for k, v in ps.items() if v is not None}


def _hardtanh_fn(site):
    a = _bind(_hardtanh_sig, site.args, site.kwargs)
    return "clamp", [a["input"]], {"min": float(a["min_val"]), "max": float(a["max_val"])}, {}


_FUNCTIONS |= {F.linear: _linear_fn, F.batch_norm: _bn_fn, F.hardtanh: _hardtanh_fn,
               F.relu6: lambda s: ("clamp", [s.args[0]], {"min": 0.0, "max": 6.0}, {})}

_METHODS = {
    "relu": _relu, "relu_": _relu, "clamp": _clamp, "clamp_": _clamp, "clip": _clamp, "clamp_min": _clamp_min,
    "clamp_min_": _clamp_min, "add": lambda s: _binary(s, "add"), "add_": lambda s: _binary(s, "add"),
    "mul": lambda s: _binary(s, "mul"), "mul_": lambda s: _binary(s, "mul"),
    "div": lambda s: _binary(s, "div"), "div_": lambda s: _binary(s, "div"),
    "view": _reshape, "reshape": _reshape, "flatten": _flatten,
}


def _apply(rule, site: Site):
    try:
        return rule(site) if rule else None
    except TypeError:
        return None  # arguments our signature does not know (a rarer overload): keep it opaque


def convert_function(site: Site):
    """Canonicalise a call_function; None when the function has no canonical op."""
    return _apply(_FUNCTIONS.get(site.node.target), site)


def convert_method(site: Site):
    """Canonicalise a call_method (``x.relu()``, ``x.view(n, -1)``); None when unknown."""
    return _apply(_METHODS.get(site.node.target), site)


def convert_module(mod: nn.Module, site: Site):
    """Canonicalise a call to a leaf module; None when the module type has no canonical op."""
    x = site.args[0] if site.args else None
    if isinstance(mod, (nn.Conv1d, nn.Conv2d)) and type(mod) in (nn.Conv1d, nn.Conv2d):
        if mod.padding_mode != "zeros":
            return None
        pad = _single if isinstance(mod, nn.Conv1d) else _pair
        params = {"weight": mod.weight.detach().clone()}
        if mod.bias is not None:
            params["bias"] = mod.bias.detach().clone()
        return ("conv1d" if isinstance(mod, nn.Conv1d) else "conv2d"), [x], {
            "stride": pad(mod.stride), "padding": mod.padding if isinstance(mod.padding, str) else pad(mod.padding),
            "dilation": pad(mod.dilation), "groups": mod.groups}, params
    if type(mod) is nn.Linear:
        params = {"weight": mod.weight.detach().clone()} | ({"bias": mod.bias.detach().clone()} if mod.bias is not None else {})
        return "linear", [x], {}, params
    if type(mod) in (nn.BatchNorm1d, nn.BatchNorm2d):
        if mod.running_mean is None:
            return None
        params = {"running_mean": mod.running_mean.detach().clone(), "running_var": mod.running_var.detach().clone()}
        if mod.affine:
            params |= {"weight": mod.weight.detach().clone(), "bias": mod.bias.detach().clone()}
        return "batchnorm", [x], {"eps": float(mod.eps)}, params
    if type(mod) is nn.ReLU:
        return "relu", [x], {}, {}
    if type(mod) in (nn.ReLU6, nn.Hardtanh):
        return "clamp", [x], {"min": float(mod.min_val), "max": float(mod.max_val)}, {}
    if type(mod) is nn.AvgPool2d:
        a = {"kernel_size": mod.kernel_size, "stride": mod.stride, "padding": mod.padding, "ceil_mode": mod.ceil_mode,
             "count_include_pad": mod.count_include_pad, "divisor_override": mod.divisor_override}
        return "avgpool2d", [x], _pool_attrs(a, False), {}
    if type(mod) is nn.MaxPool2d and not mod.return_indices:
        a = {"kernel_size": mod.kernel_size, "stride": mod.stride, "padding": mod.padding,
             "dilation": mod.dilation, "ceil_mode": mod.ceil_mode}
        return "maxpool2d", [x], _pool_attrs(a, True), {}
    if type(mod) is nn.AdaptiveAvgPool2d and all(o is not None for o in _pair(mod.output_size)):
        return "adaptive_avgpool2d", [x], {"output_size": _pair(mod.output_size)}, {}
    if type(mod) is nn.Flatten:
        site = Site(site.node, (x, mod.start_dim, mod.end_dim), {}, site.out, site.is_ir, site.batch)
        return _flatten(site)
    if type(mod) in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout):
        return "dropout", [x], {"p": float(mod.p)}, {}
    if type(mod) is nn.Identity:
        return "identity", [x], {}, {}
    return None


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
