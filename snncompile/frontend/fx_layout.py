"""fx rules for the ops that move values: reshapes, flattens, slices of chunk/split/unbind,
permutes (channel shuffle), zero padding, global means and 1-D pools.

Rules here read the call's concrete output (``site.out``) where it fixes a shape, so every
spelling of a reshape (``x.view(x.size(0), -1)``, ``x.squeeze(-1)``, ``torch.reshape``) becomes one
``reshape`` of the per-sample shape. The meaning of pools and global means is asked of
``canonical.py``, shared with the ONNX frontend.
"""
from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _single, _triple

from .canonical import PREV, global_avgpool_steps, pool_steps
from .fx_site import Site, bind

__all__ = ["reshape_rule", "flatten_rule", "split_results", "LAYOUT_FUNCTIONS", "LAYOUT_METHODS",
           "convert_layout_module"]


def _flatten_sig(input, start_dim=0, end_dim=-1): ...
def _split_sig(input, split_size_or_sections, dim=0): ...
def _chunk_sig(input, chunks, dim=0): ...
def _unbind_sig(input, dim=0): ...
def _pad_sig(input, pad, mode="constant", value=None): ...
def _mean_sig(input, dim=None, keepdim=False, *, dtype=None): ...
def _avgpool1d_sig(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True): ...
def _maxpool1d_sig(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False): ...


def reshape_rule(site: Site):
    """Any per-sample reshape (view, reshape, squeeze, unsqueeze, flatten from 0 keeping the batch)."""
    x = site.args[0]
    out = site.out
    if not isinstance(out, torch.Tensor) or not site.is_ir(x):
        return None
    if out.dim() == 0 or out.shape[0] != site.batch:
        return None  # reshapes across the batch dimension are not per-sample
    return "reshape", [x], {"shape": tuple(out.shape[1:])}, {}


def flatten_rule(site: Site):
    """torch.flatten / x.flatten / nn.Flatten."""
    a = bind(_flatten_sig, site.args, site.kwargs)
    if a["start_dim"] == 0:
        return reshape_rule(site)  # flatten from 0 crosses the batch: only fine if it keeps it
    return "flatten", [a["input"]], {"start_dim": int(a["start_dim"]), "end_dim": int(a["end_dim"])}, {}


def _dim(d: int, ndim: int) -> int | None:
    """``d`` as a non-negative dim, None for the batch dim."""
    d = d + ndim if d < 0 else d
    return None if d == 0 else d


_SPLIT_FUNCTIONS = {torch.chunk: "chunk", torch.split: "split", torch.functional.split: "split",
                    torch.tensor_split: "tensor_split", torch.unbind: "unbind"}


def split_results(site: Site):
    """chunk / split / tensor_split / unbind along a non-batch dim -> one ``(op, [x], attrs)`` per
    result (``slice`` or ``select``); None for other calls."""
    fn = site.node.target
    name = fn if site.node.op == "call_method" else _SPLIT_FUNCTIONS.get(fn) if site.node.op == "call_function" else None
    if name not in ("chunk", "split", "tensor_split", "unbind", "split_with_sizes"):
        return None
    x = site.args[0] if site.args else site.kwargs.get("input")
    if not site.is_ir(x) or x.shape is None:
        return None
    sig = _unbind_sig if name == "unbind" else _chunk_sig if name in ("chunk", "tensor_split") else _split_sig
    try:
        d = _dim(int(bind(sig, site.args, site.kwargs)["dim"]), len(x.shape))
    except TypeError:
        return None
    if d is None:
        return None
    if name == "unbind":
        return [("select", [x], {"dim": d, "index": i}) for i in range(len(site.out))]
    results, start = [], 0
    for o in site.out:
        stop = start + o.shape[d]
        results.append(("slice", [x], {"dim": d, "start": start, "stop": stop, "step": 1}))
        start = stop
    return results


def _index(site: Site):
    """``x[:, 0]``, ``x[:, :, 1:5]``: basic indexing that keeps the batch -> slices and selects."""
    x, idx = site.args[0], site.args[1]
    if not site.is_ir(x) or x.shape is None:
        return None
    idx = idx if isinstance(idx, tuple) else (idx,)
    if not idx or idx[0] != slice(None) or any(not isinstance(i, (int, slice)) for i in idx):
        return None
    steps, dim = [], 0
    for i, ix in enumerate(idx[1:], start=1):
        dim += 1
        size = x.shape[i]
        if isinstance(ix, int):
            steps.append(("select", [PREV if steps else x], {"dim": dim, "index": ix % size}, {}))
            dim -= 1
        elif ix != slice(None):
            start, stop, step = ix.indices(size)
            if step < 1 or stop <= start:
                return None
            steps.append(("slice", [PREV if steps else x], {"dim": dim, "start": start, "stop": stop, "step": step}, {}))
    return steps or [("identity", [x], {}, {})]


def _permute(site: Site):
    x, out = site.args[0], site.out
    name = site.node.target if isinstance(site.node.target, str) else site.node.target.__name__
    rest = site.args[1:]
    if name == "transpose":
        d0, d1 = (rest + tuple(site.kwargs.get(k) for k in ("dim0", "dim1")))[:2]
        dims = list(range(x.shape.__len__()))
        dims[d0], dims[d1] = dims[d1], dims[d0]
    else:
        dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest or site.kwargs.get("dims")
        dims = [d % len(x.shape) for d in dims]
    if not site.is_ir(x) or dims[0] != 0:
        return None  # moving the batch dimension is not a per-sample op
    return "permute", [x], {"dims": tuple(int(d) for d in dims[1:])}, {}


def _pad(site: Site):
    a = bind(_pad_sig, site.args, site.kwargs)
    x, pads = a["input"], tuple(int(p) for p in a["pad"])
    if a["mode"] != "constant" or a["value"] not in (None, 0, 0.0) or not site.is_ir(x):
        return None
    if len(pads) // 2 > len(x.shape) - 2 or any(p < 0 for p in pads):
        return None  # padding channels, or cropping: not a spatial zero pad
    return "pad", [x], {"pads": pads}, {}


def _mean(site: Site):
    """A mean over every spatial dim (``x.mean((2, 3))``, ``x.mean([-1, -2], keepdim=True)``):
    a global average pool, then a reshape when the dims are dropped."""
    a = bind(_mean_sig, site.args, site.kwargs)
    x = a["input"]
    if not site.is_ir(x) or a["dim"] is None or a["dtype"] is not None or len(x.shape) < 3:
        return None
    dims = a["dim"] if isinstance(a["dim"], (tuple, list)) else (a["dim"],)
    if sorted(int(d) % len(x.shape) for d in dims) != list(range(2, len(x.shape))):
        return None
    steps = global_avgpool_steps(x, tuple(x.shape[1:]))
    if not a["keepdim"]:
        steps.append(("reshape", [PREV], {"shape": tuple(site.out.shape[1:])}, {}))
    return steps


def _pool1d(site: Site, op2d: str, a: dict):
    x = a["input"]
    if not site.is_ir(x) or x.shape is None or len(x.shape) != 3:
        return None
    k = _single(a["kernel_size"])
    attrs = {"kernel_size": k, "stride": k if a.get("stride") in (None, []) else _single(a["stride"]),
             "padding": _single(a["padding"]), "ceil_mode": bool(a["ceil_mode"])}
    if op2d == "maxpool2d":
        if a.get("return_indices"):
            return None
        attrs["dilation"] = _single(a["dilation"])
    else:
        attrs |= {"count_include_pad": bool(a["count_include_pad"]), "divisor_override": None}
    return pool_steps(op2d, x, tuple(x.shape[1:]), tuple(site.out.shape[1:]), attrs)


def _global3d(site: Site, x, size):
    """``F.adaptive_avg_pool3d(x, 1)`` / ``nn.AdaptiveAvgPool3d(1)``: the global mean of 3-D data."""
    if not site.is_ir(x) or x.shape is None or len(x.shape) != 5 or any(int(s) != 1 for s in _triple(size)):
        return None
    return global_avgpool_steps(x, tuple(x.shape[1:]))


def _adaptive1d(site: Site, x, size):
    if not site.is_ir(x) or x.shape is None or len(x.shape) != 3 or size is None:
        return None
    return pool_steps("adaptive_avgpool2d", x, tuple(x.shape[1:]), tuple(site.out.shape[1:]),
                      {"output_size": _single(size)})


LAYOUT_FUNCTIONS = {
    torch.permute: _permute, torch.transpose: _permute, torch.swapaxes: _permute, torch.swapdims: _permute,
    F.pad: _pad, torch.mean: _mean, operator.getitem: _index,
    torch.squeeze: reshape_rule, torch.unsqueeze: reshape_rule,
    F.max_pool1d: lambda s: _pool1d(s, "maxpool2d", bind(_maxpool1d_sig, s.args, s.kwargs)),
    F.avg_pool1d: lambda s: _pool1d(s, "avgpool2d", bind(_avgpool1d_sig, s.args, s.kwargs)),
    F.adaptive_avg_pool3d: lambda s: _global3d(s, s.args[0], s.args[1] if len(s.args) > 1 else s.kwargs.get("output_size")),
    F.adaptive_avg_pool1d: lambda s: _adaptive1d(s, s.args[0], s.args[1] if len(s.args) > 1 else s.kwargs.get("output_size")),
}
LAYOUT_METHODS = {
    "permute": _permute, "transpose": _permute, "swapaxes": _permute, "swapdims": _permute,
    "contiguous": lambda s: ("identity", [s.args[0]], {}, {}),
    "mean": _mean, "squeeze": reshape_rule, "unsqueeze": reshape_rule,
    "view": reshape_rule, "reshape": reshape_rule, "flatten": flatten_rule,
}


def convert_layout_module(mod: nn.Module, site: Site):
    """nn.ZeroPad*/ConstantPad* (value 0), nn.MaxPool1d/AvgPool1d/AdaptiveAvgPool1d, nn.Flatten;
    None for other modules."""
    x = site.args[0] if site.args else None
    if type(mod) in (nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d) and float(mod.value) == 0.0:
        return _pad(Site(site.node, (x, tuple(mod.padding)), {}, site.out, site.is_ir, site.batch))
    if type(mod) is nn.MaxPool1d:
        return _pool1d(site, "maxpool2d", {"input": x, "kernel_size": mod.kernel_size, "stride": mod.stride,
                                           "padding": mod.padding, "dilation": mod.dilation,
                                           "ceil_mode": mod.ceil_mode, "return_indices": mod.return_indices})
    if type(mod) is nn.AvgPool1d:
        return _pool1d(site, "avgpool2d", {"input": x, "kernel_size": mod.kernel_size, "stride": mod.stride,
                                           "padding": mod.padding, "ceil_mode": mod.ceil_mode,
                                           "count_include_pad": mod.count_include_pad})
    if type(mod) is nn.AdaptiveAvgPool3d:
        return _global3d(site, x, mod.output_size)
    if type(mod) is nn.AdaptiveAvgPool1d:
        return _adaptive1d(site, x, _single(mod.output_size)[0])
    if type(mod) is nn.Flatten:
        return flatten_rule(Site(site.node, (x, mod.start_dim, mod.end_dim), {}, site.out, site.is_ir, site.batch))
    return None
