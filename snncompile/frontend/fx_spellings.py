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

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair, _single, _triple

from .canonical import batchnorm_steps, clip_steps, mul_const_steps
from .fx_activations import activation_of_function, activation_of_method, activation_of_module
from .fx_layout import LAYOUT_FUNCTIONS, LAYOUT_METHODS, convert_layout_module, flatten_rule, reshape_rule, split_results
from .fx_site import Site, bind as _bind

__all__ = ["Site", "convert_module", "convert_function", "convert_method", "split_results", "activation_of_module",
           "activation_of_function", "activation_of_method"]


# signatures of the functional spellings (the torch builtins have none we can inspect)
def _conv_sig(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1): ...
def _linear_sig(input, weight, bias=None): ...
def _bn_sig(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5): ...
def _relu_sig(input, inplace=False): ...
def _clamp_sig(input, min=None, max=None, *, out=None): ...
def _avgpool_sig(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None): ...
def _maxpool_sig(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False): ...
def _adaptive_sig(input, output_size): ...
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
    op = {3: "conv1d", 4: "conv2d", 5: "conv3d"}.get(w.dim())
    if op is None:
        return None
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
    return clip_steps(a["input"], None if lo is None else float(lo), None if hi is None else float(hi))


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
    return mul_const_steps(tensor, const)


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
    F.conv1d: lambda s: _conv(s, _single), F.conv2d: lambda s: _conv(s, _pair), F.conv3d: lambda s: _conv(s, _triple),
    F.avg_pool2d: lambda s: ("avgpool2d", [_bind(_avgpool_sig, s.args, s.kwargs)["input"]],
                             _pool_attrs(_bind(_avgpool_sig, s.args, s.kwargs), False), {}),
    F.max_pool2d: lambda s: None if _bind(_maxpool_sig, s.args, s.kwargs)["return_indices"] else
    ("maxpool2d", [_bind(_maxpool_sig, s.args, s.kwargs)["input"]], _pool_attrs(_bind(_maxpool_sig, s.args, s.kwargs), True), {}),
    F.adaptive_avg_pool2d: lambda s: ("adaptive_avgpool2d", [_bind(_adaptive_sig, s.args, s.kwargs)["input"]],
                                      {"output_size": _pair(_bind(_adaptive_sig, s.args, s.kwargs)["output_size"])}, {}),
    torch.flatten: flatten_rule, torch.reshape: reshape_rule,
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
    return batchnorm_steps(a["input"], ps["running_mean"], ps["running_var"], ps["weight"], ps["bias"], a["eps"])


def _hardtanh_fn(site):
    a = _bind(_hardtanh_sig, site.args, site.kwargs)
    return clip_steps(a["input"], float(a["min_val"]), float(a["max_val"]))


_FUNCTIONS |= {F.linear: _linear_fn, F.batch_norm: _bn_fn, F.hardtanh: _hardtanh_fn,
               F.relu6: lambda s: clip_steps(s.args[0], 0.0, 6.0)}
_FUNCTIONS |= LAYOUT_FUNCTIONS

_METHODS = {
    "relu": _relu, "relu_": _relu, "clamp": _clamp, "clamp_": _clamp, "clip": _clamp, "clamp_min": _clamp_min,
    "clamp_min_": _clamp_min, "add": lambda s: _binary(s, "add"), "add_": lambda s: _binary(s, "add"),
    "mul": lambda s: _binary(s, "mul"), "mul_": lambda s: _binary(s, "mul"),
    "div": lambda s: _binary(s, "div"), "div_": lambda s: _binary(s, "div"),
}
_METHODS |= LAYOUT_METHODS


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
    if type(mod) in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        if mod.padding_mode != "zeros":
            return None
        pad, op = {nn.Conv1d: (_single, "conv1d"), nn.Conv2d: (_pair, "conv2d"), nn.Conv3d: (_triple, "conv3d")}[type(mod)]
        params = {"weight": mod.weight.detach().clone()}
        if mod.bias is not None:
            params["bias"] = mod.bias.detach().clone()
        return op, [x], {
            "stride": pad(mod.stride), "padding": mod.padding if isinstance(mod.padding, str) else pad(mod.padding),
            "dilation": pad(mod.dilation), "groups": mod.groups}, params
    if type(mod) is nn.Linear:
        params = {"weight": mod.weight.detach().clone()} | ({"bias": mod.bias.detach().clone()} if mod.bias is not None else {})
        return "linear", [x], {}, params
    if type(mod) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        if mod.running_mean is None:
            return None
        w, b = (mod.weight.detach().clone(), mod.bias.detach().clone()) if mod.affine else (None, None)
        return batchnorm_steps(x, mod.running_mean.detach().clone(), mod.running_var.detach().clone(), w, b, mod.eps)
    if type(mod) is nn.ReLU:
        return "relu", [x], {}, {}
    if type(mod) in (nn.ReLU6, nn.Hardtanh):
        return clip_steps(x, float(mod.min_val), float(mod.max_val))
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
    if type(mod) in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout):
        return "dropout", [x], {"p": float(mod.p)}, {}
    if type(mod) is nn.Identity:
        return "identity", [x], {}, {}
    return convert_layout_module(mod, site)


