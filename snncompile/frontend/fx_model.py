"""Preparing the user's model for tracing: a private float32 copy, hooks refused or applied.

``prepare_model(model)`` is all the fx frontend asks of this file; it never changes ``model``.
"""
from __future__ import annotations

import copy
import itertools
import os

import torch
import torch.nn as nn

from ..errors import TraceError, warn_user

__all__ = ["prepare_model"]


def prepare_model(model: nn.Module) -> nn.Module:
    """A private eval-mode float32 copy of ``model`` with weight_norm applied; TraceError for any
    forward hook (see ``_refuse_hooks``)."""
    copy_ = _fold_weight_norm(_private_copy(model).eval())
    _refuse_hooks(copy_)
    return _as_float32(copy_)


def _hook_name(hook) -> str:
    fn = getattr(hook, "__func__", hook)
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    code = getattr(fn, "__code__", None)
    return f"{name} ({os.path.basename(code.co_filename)}:{code.co_firstlineno})" if code else name


def _refuse_hooks(model: nn.Module) -> None:
    """TraceError for the first forward hook or pre-hook on ``model``, a submodule, or all modules."""
    from torch.nn.modules import module as torch_module
    drop = ("snncompile traces forward() and would drop it, so the SNN would not compute what the model "
            "computes — remove the hook (handle.remove()) and put what it does into the model's forward "
            "(or apply it to the data before converting)")
    for attr, what in (("_forward_pre_hooks", "forward pre-hook"), ("_forward_hooks", "forward hook")):
        for h in (getattr(torch_module, "_global" + attr, None) or {}).values():
            how = "register_module" + attr[:-1]
            raise TraceError(f"trace: a global {what} {_hook_name(h)} is set for every module "
                             f"(torch.nn.modules.module.{how}); {drop}")
        for path, mod in model.named_modules():
            for h in (getattr(mod, attr, None) or {}).values():
                where = f"module {path!r} ({type(mod).__name__})" if path else f"the model ({type(mod).__name__})"
                raise TraceError(f"trace: {where} has a {what} {_hook_name(h)} (register{attr[:-1]}); {drop}")


def _private_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model``; tensors held as plain attributes that are results of autograd
    (weight_norm's ``weight`` after a forward), which deepcopy refuses, are copied detached."""
    memo = {id(v): v.detach().clone() for m in model.modules() for v in vars(m).values()
            if isinstance(v, torch.Tensor) and not v.is_leaf}
    try:
        return copy.deepcopy(model, memo)
    except Exception as e:
        raise TraceError(f"trace: could not copy {type(model).__name__} (snncompile never changes the user's "
                         f"model, so it converts a copy): {type(e).__name__}: {e}") from e


def _fold_weight_norm(model: nn.Module) -> nn.Module:
    """``model`` (a private copy) with every ``torch.nn.utils.weight_norm`` pre-hook applied: the
    weight computed from its g and v, as the hook would before each forward, and the hook removed."""
    from torch.nn.utils.weight_norm import WeightNorm, remove_weight_norm
    for mod in model.modules():
        for name in [h.name for h in mod._forward_pre_hooks.values() if isinstance(h, WeightNorm)]:
            remove_weight_norm(mod, name)
    return model


def _as_float32(model: nn.Module) -> nn.Module:
    """``model`` (a private copy) with floating parameters and buffers in float32; one warning
    when any was of another floating dtype."""
    dtypes = {t.dtype for t in itertools.chain(model.parameters(), model.buffers())
              if t.is_floating_point() and t.dtype != torch.float32}
    if not dtypes:
        return model
    names = ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes))
    warn_user(f"snncompile: the model's parameters are {names}; it is converted as a float32 copy (the SNN "
              "runs in float32, and its inputs are read as float32) — pass model.float() to silence this")
    return model.float()

