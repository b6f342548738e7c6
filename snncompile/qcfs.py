"""Quantization-aware ANN preparation for few-step conversion: QCFS (Bu et al., ICLR 2022).

Opt-in, beside ``compile()``: each ReLU becomes ``y = λ/L * clamp(floor(x L/λ + φ), 0, L)``, λ trainable
per layer (started at a percentile of the ReLU's calibration outputs); after a short fine-tune the SNN at
T = L reproduces it: an IF neuron (soft reset, threshold λ, ``v_init = φ λ``) fires
``clamp(floor(x L/λ + φ), 0, L)`` times in L steps on a constant x (exact in the first layer; later
layers see spikes in time order, not their mean).

    qmodel = qcfs.prepare_qcfs(model, calib, L=2)        # a copy; the user's model is untouched
    report = qcfs.finetune_qcfs(qmodel, x_train, y_train, epochs=3, eval_data=(x_test, y_test))
    snn = qcfs.compile_qcfs(qmodel, calib)               # T = L; λ_SNN = each QCFS λ, exactly

Exact λ: ``finalize_qcfs`` makes each QCFS ``nn.Hardtanh(0, λ)`` and ``compile_qcfs`` compiles that
with ``normalize="fixed", scale=max λ``: normalize caps the scale at each ReLU's ceiling, so layer l
gets λ_SNN = min(max λ, λ_l) = λ_l bit for bit, whatever the data (mode "max" gives min(data max, λ_l),
below λ_l where no calibration output saturates). A plain ReLU would get max λ: it is refused.
"""
from __future__ import annotations

import copy
import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .calibrate import iter_batches, peek_first_batch
from .convert import compile as snn_compile
from .convert import forward_input_names
from .errors import ConfigError, UnsupportedOpError
from .frontend.fx import trace
from .stats import ActivationStats

__all__ = ["QCFS", "prepare_qcfs", "finetune_qcfs", "finalize_qcfs", "compile_qcfs", "qcfs_layers", "FinetuneReport"]

# the ReLU spellings prepare_qcfs replaces, with their ceilings (None: no ceiling)
_RELU_FUNCS = {F.relu: None, torch.relu: None, torch.relu_: None, F.relu6: 6.0}
_RELU_MODULES = {nn.ReLU: None, nn.ReLU6: 6.0}


class QCFS(nn.Module):
    """``y = λ/L * clamp(floor(x L/λ + φ), 0, L)``; λ is the trainable parameter ``threshold``.

    Takes the levels ``L`` (a positive int), the initial λ (> 0) and the shift φ in [0, 1) (0.5).
    Gradients: the floor is straight-through, so x gets 1 where 0 < x < λ and 0 elsewhere; λ gets
    ``floor(x L/λ + φ)/L - x/λ`` where 0 < x < λ, 1 where x >= λ and 0 where x <= 0 (the paper's)."""

    def __init__(self, L: int = 4, threshold: float = 1.0, phi: float = 0.5, *, _cap: float | None = None) -> None:
        super().__init__()
        if isinstance(L, bool) or not isinstance(L, int) or L < 1 or not 0.0 <= phi < 1.0:
            raise ConfigError(f"QCFS: L={L!r} must be a positive int (the levels; the SNN runs T = L) and phi={phi!r} "
                              "in [0, 1) (0.5 makes the conversion error's mean 0)")
        if not (math.isfinite(threshold) and threshold > 0):
            raise ConfigError(f"QCFS: threshold={threshold!r} must be a positive number (λ, the clip value)")
        self.L, self.phi = L, float(phi)
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))
        self._stats: ActivationStats | None = None  # set while prepare_qcfs calibrates
        self._cap = _cap  # the replaced activation's ceiling (ReLU6: 6) until prepare_qcfs sets λ

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._stats is not None:  # calibrating: the original (capped) ReLU, recording its output
            self._stats.update((y := torch.clamp(x, min=0.0, max=self._cap)).detach())
            return y
        u = torch.clamp(x / self.threshold, 0.0, 1.0) * self.L + self.phi
        q = u + (torch.floor(u) - u).detach()  # floor(u) exactly, with a straight-through gradient
        return q * (self.threshold / self.L)

    def extra_repr(self) -> str:
        return f"L={self.L}, threshold={self.threshold.item():.6g}, phi={self.phi}"


def qcfs_layers(model: nn.Module) -> dict[str, QCFS]:
    """The QCFS modules of ``model`` by name (each once, even when one is called at several sites)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QCFS)}


def _layers(model: nn.Module, where: str) -> dict[str, QCFS]:
    if not (layers := qcfs_layers(model)):
        raise ConfigError(f"{where}: the model has no QCFS layers — call prepare_qcfs(model, calibration_data, L) first")
    return layers


def _replace_children(model: nn.Module, new: Callable[[nn.Module], nn.Module | None]) -> None:
    for m in list(model.modules()):
        for name, child in list(m.named_children()):
            if (repl := new(child)) is not None:
                setattr(m, name, repl)


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QCFS) or super().is_leaf_module(m, qualname)


def _rewrite_functional(model: nn.Module, L: int, phi: float) -> tuple[nn.Module, str | None]:
    """``(model, None)`` with its F.relu / torch.relu / x.relu() / F.relu6 calls replaced by new QCFS
    submodules through torch.fx (a GraphModule then; ``model`` itself when it has none), or
    ``(model, reason)`` when torch.fx cannot trace it."""
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # torch.fx raises many types (TraceError, TypeError, NameError, ...)
        return model, f"{type(e).__name__}: {e}"
    sites = [n for n in graph.nodes if (n.op == "call_function" and n.target in _RELU_FUNCS)
             or (n.op == "call_method" and n.target in ("relu", "relu_"))]
    taken = {name for name, _ in model.named_modules()}
    for k, n in enumerate(sites):
        name = next(f"qcfs_{k}{'_' * j}" for j in range(len(taken) + 1) if f"qcfs_{k}{'_' * j}" not in taken)
        model.add_module(name, QCFS(L, phi=phi, _cap=_RELU_FUNCS[n.target] if n.op == "call_function" else None))
        with graph.inserting_after(n):
            n.replace_all_uses_with(graph.call_module(name, (n.args[0] if n.args else n.kwargs["input"],)))
        graph.erase_node(n)
    gm = torch.fx.GraphModule(model, graph, class_name=type(model).__name__ + "QCFS") if sites else model
    return gm.train(model.training), None


class _ReluWatch(torch.overrides.TorchFunctionMode):
    """Records in ``seen`` the ReLU spellings called while active (prepare_qcfs's check that none is left)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if any(func is f for f in (*_RELU_FUNCS, torch.Tensor.relu, torch.Tensor.relu_)):
            self.seen.append(getattr(func, "__qualname__", str(func)))
        return func(*args, **(kwargs or {}))


def prepare_qcfs(model: nn.Module, calibration_data: Any, L: int = 4, *, percentile: float = 99.9,
                 phi: float = 0.5, batch_size: int = 256) -> nn.Module:
    """A deep copy of ``model`` (which is never modified) with every ReLU replaced by a QCFS of ``L``
    levels, λ started at the ``percentile`` of that ReLU's outputs on ``calibration_data`` (what
    ``compile`` takes; a ReLU6's λ at most 6). ``nn.ReLU`` / ``nn.ReLU6`` modules are swapped (a module
    called at several sites keeps one λ); ``F.relu``, ``torch.relu``, ``x.relu()``, ``F.relu6`` calls
    are rewritten with torch.fx (the copy is then a GraphModule). UnsupportedOpError when a ReLU call
    is left (forward not traceable by torch.fx) or there is none. The copy keeps the model's mode."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"prepare_qcfs: expected a torch.nn.Module, got {type(model).__name__}")
    if not 0 < percentile <= 100:
        raise ConfigError(f"prepare_qcfs: percentile={percentile} must be in (0, 100] (99 to 99.9 is a good start)")
    qmodel = copy.deepcopy(nn.Sequential(model) if type(model) in _RELU_MODULES else model)
    _replace_children(qmodel, lambda c: QCFS(L, phi=phi, _cap=_RELU_MODULES[type(c)]) if type(c) in _RELU_MODULES
                      else None)
    qmodel, untraceable = _rewrite_functional(qmodel, L, phi)
    for q in (layers := qcfs_layers(qmodel)).values():  # (new modules go where the model's parameters are)
        q.to(_device(model))._stats = ActivationStats(channel_dim=1)
    watch, n_inputs, was_training, stats = _ReluWatch(), len(forward_input_names(qmodel)), qmodel.training, {}
    watch.seen = []
    try:
        with torch.no_grad(), watch:
            for xs in iter_batches(calibration_data, batch_size, n_inputs=n_inputs):
                qmodel.eval()(*(x.to(_device(qmodel)) for x in ((xs,) if n_inputs == 1 else xs)))
    finally:
        for name, q in layers.items():
            stats[name], q._stats = q._stats, None
        qmodel.train(was_training)
    if watch.seen:
        why = f"torch.fx could not trace forward ({untraceable})" if untraceable else "torch.fx did not see the call"
        raise UnsupportedOpError(f"prepare_qcfs: forward calls {watch.seen[0]}, which could not be replaced by a QCFS"
                                 f" activation: {why} — spell it as an nn.ReLU module, or make forward torch.fx-traceable")
    if not layers:
        raise UnsupportedOpError("prepare_qcfs: the model has no ReLU (nn.ReLU, nn.ReLU6, F.relu, torch.relu, x.relu(), "
                                 "F.relu6) to replace — QCFS prepares ReLU networks")
    for name, q in layers.items():
        if (st := stats[name]).count == 0:  # never called on the calibration data: λ stays 1
            continue
        lam = float(st.percentile(percentile) if percentile < 100 else st.max())
        lam = lam if lam > 0 else max(float(st.max()), 1.0)  # a dead layer: any λ is exact for it
        with torch.no_grad():
            q.threshold.fill_(lam if q._cap is None else min(lam, q._cap))
        q._cap = None
    return qmodel


@dataclass
class FinetuneReport:
    """What ``finetune_qcfs`` did and cost; accuracies are fractions (None without eval data)."""
    seconds: float
    epochs: int
    steps: int
    train_loss: float
    acc_before: float | None = None
    acc_after: float | None = None
    thresholds: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        acc = "" if self.acc_after is None else f"; ANN {100 * self.acc_before:.2f}% -> {100 * self.acc_after:.2f}%"
        return (f"QCFS fine-tune: {self.epochs} epochs, {self.steps} steps, {self.seconds:.1f} s, "
                f"loss {self.train_loss:.4f}{acc}")


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    out = torch.cat([model.eval()(xb.to(_device(model))).argmax(1).cpu() for xb in x.split(500)])
    return (out == y.cpu()).float().mean().item()


def finetune_qcfs(qmodel: nn.Module, data: Any, labels: torch.Tensor | None = None, *, epochs: int = 2,
                  lr: float = 1e-3, threshold_lr: float | None = None, batch_size: int = 64,
                  weight_decay: float = 0.0, eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
                  augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                  teacher: nn.Module | None = None, distill: float = 0.5, loss_fn: Callable = F.cross_entropy,
                  seed: int = 0, verbose: bool = True) -> FinetuneReport:
    """Fine-tune a ``prepare_qcfs`` model in place (weights and every λ; Adam, cosine decay); return a
    FinetuneReport (printed when ``verbose``); the model ends in eval mode. ``data``: an input tensor
    with ``labels`` (shuffled by ``seed``), or a re-iterable of ``(x, y)`` batches (a DataLoader).
    ``threshold_lr``: λ's learning rate (default ``lr``); weight decay only on tensors of 2+ dims; λ
    stays positive. ``augment(x, generator)`` warps each batch. With a ``teacher`` (the original model:
    a frozen eval-mode copy is used) the loss is ``(1 - distill) * loss_fn + distill * 4 KL`` to its
    outputs softened at temperature 2. ``eval_data=(x, y)``: ANN accuracy before and after."""
    layers = _layers(qmodel, "finetune_qcfs")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"finetune_qcfs: epochs={epochs!r} must be a positive int")
    if labels is not None and not (torch.is_tensor(data) and torch.is_tensor(labels) and len(data) == len(labels)):
        raise ConfigError("finetune_qcfs: data and labels must be tensors with one row per label (or pass a DataLoader "
                          "of (x, y) batches as data, without labels)")
    device, gen, aug_gen = _device(qmodel), torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    teacher = None if teacher is None else copy.deepcopy(teacher).eval().requires_grad_(False).to(device)
    before = None if eval_data is None else _accuracy(qmodel, *eval_data)
    lams = [q.threshold for q in layers.values()]
    rest = [p for p in qmodel.parameters() if p.requires_grad and all(p is not t for t in lams)]
    opt = torch.optim.Adam([{"params": [p for p in rest if p.dim() > 1], "weight_decay": weight_decay},
                            {"params": [p for p in rest if p.dim() <= 1]},
                            {"params": lams, "lr": lr if threshold_lr is None else threshold_lr}], lr=lr)
    per_epoch = math.ceil(len(data) / batch_size) if labels is not None else len(data) if hasattr(data, "__len__") else 0
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * per_epoch) if per_epoch else None
    t0, steps = time.perf_counter(), 0
    for epoch in range(epochs):
        qmodel.train()
        loss_sum, seen = 0.0, 0
        batches = iter(data) if labels is None else \
            ((data[idx], labels[idx]) for idx in torch.randperm(len(data), generator=gen).split(batch_size))
        for xb, yb in batches:
            xb, yb = (xb.to(device) if augment is None else augment(xb.to(device), aug_gen)), yb.to(device)
            loss = loss_fn(out := qmodel(xb), yb)
            if teacher is not None:
                soft = F.log_softmax(teacher(xb).detach() / 2.0, 1)
                kd = F.kl_div(F.log_softmax(out / 2.0, 1), soft, log_target=True, reduction="batchmean") * 4.0
                loss = (1 - distill) * loss + distill * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step() if sched is not None else None
            with torch.no_grad():
                torch._foreach_clamp_min_(lams, 1e-4)
            loss_sum, seen, steps = loss_sum + loss.item() * len(xb), seen + len(xb), steps + 1
        if seen == 0:
            raise ConfigError(f"finetune_qcfs: epoch {epoch + 1} got no batches — pass a re-iterable of (x, y) "
                              "batches (a DataLoader or a list), not a one-shot iterator, or tensors with labels")
    seconds, after = time.perf_counter() - t0, None if eval_data is None else _accuracy(qmodel, *eval_data)
    report = FinetuneReport(seconds, epochs, steps, loss_sum / seen, before, after,
                            {name: q.threshold.item() for name, q in layers.items()})
    if verbose:
        print(report, flush=True)
    qmodel.eval()
    return report


def finalize_qcfs(qmodel: nn.Module) -> nn.Module:
    """A copy of a QCFS model, in eval mode, with each QCFS as ``nn.Hardtanh(0, λ)``: the capped
    ReLU whose SNN (threshold λ, ``v_init = φ λ``) reproduces that QCFS layer at T = L on a constant
    input and approaches ``clamp(x, 0, λ)`` as T grows. ``qmodel`` is untouched."""
    _layers(qmodel, "finalize_qcfs")
    out = copy.deepcopy(nn.Sequential(qmodel) if isinstance(qmodel, QCFS) else qmodel)
    _replace_children(out, lambda c: nn.Hardtanh(0.0, c.threshold.item()) if isinstance(c, QCFS) else None)
    return out.eval()


def compile_qcfs(qmodel: nn.Module, calibration_data: Any, T: int | None = None, **compile_kwargs):
    """Finalize ``qmodel`` and compile it with λ_SNN = each QCFS λ exactly (``normalize="fixed"``, ``scale`` =
    the largest λ, which normalize caps at each layer's ceiling λ_l), ``v_init = φ`` and no bias calibration
    (``calibrate="none"`` unless given); return the SpikingModule. ``T`` defaults to L (the largest, if layers
    differ); ``calibration_data`` gives the example input; other keyword arguments go to ``snncompile.compile``
    (backend, encoding, ...) except those this sets (ConfigError). UnsupportedOpError: a ReLU not from QCFS."""
    layers = _layers(qmodel, "compile_qcfs")
    if taken := sorted({"normalize", "scale", "percentile", "granularity", "v_init", "pipeline"} & set(compile_kwargs)):
        raise ConfigError(f"compile_qcfs: {', '.join(taken)} cannot be set: it compiles with normalize='fixed' and "
                          "v_init=phi so that λ_SNN is each QCFS λ — for other options use "
                          "snncompile.compile(finalize_qcfs(qmodel), ...)")
    if len(phis := {q.phi for q in layers.values()}) > 1:
        raise ConfigError(f"compile_qcfs: the QCFS layers have different phi {sorted(phis)}; the SNN has one v_init")
    if "calibrate" in inspect.signature(snn_compile).parameters:  # bias calibration would move the SNN off QCFS
        compile_kwargs.setdefault("calibrate", "none")
    final, names = finalize_qcfs(qmodel), forward_input_names(qmodel)
    example, calibration_data = peek_first_batch(calibration_data, n_inputs=len(names),
                                                 names=names if len(names) > 1 else None)
    xs = tuple(x.to(_device(final)) for x in (example if isinstance(example, tuple) else (example,)))
    graph = trace(final, xs if len(xs) > 1 else xs[0], leaf_modules=compile_kwargs.get("leaf_modules", ()))
    lams = {q.threshold.item() for q in layers.values()}
    if plain := [n for n in graph.nodes if n.op == "relu" or n.op == "clamp" and n.attrs.get("min") == 0.0
                 and n.attrs.get("max") not in lams]:
        raise UnsupportedOpError(f"compile_qcfs: {plain[0].describe()} is a ReLU that is not a QCFS layer (a spelling "
                                 "prepare_qcfs does not replace, such as torch.clamp(x, min=0)); with fixed scales it "
                                 "would get the largest λ — spell it as nn.ReLU or F.relu and call prepare_qcfs again")
    return snn_compile(final, calibration_data, T=max(q.L for q in layers.values()) if T is None else T,
                       example_input=example, normalize="fixed", scale=max(lams), v_init=phis.pop(), **compile_kwargs)
