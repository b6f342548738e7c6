"""normalize: rescale weights so every ReLU's activation scale λ becomes 1 (threshold 1).

Data-based normalization (Diehl 2015, Rueckauer 2017): λ_l is the max or the p-th percentile of
ReLU l's output over calibration data, layer-wise (one λ) or channel-wise (one per channel);
mode "mse" takes instead the λ that minimises the squared rate error of an IF neuron at the T
steps asked for (``_threshold_search``: a threshold chosen for the target T, not one percentile).
Every conv/linear is rescaled ``W[o,i] <- W[o,i] * s_in[i] / s_out[o]``, ``b <- b / s_out``, where
``s_in`` is the scale its input carries and ``s_out`` the λ of the ReLU it feeds. We rescale
weights (not thresholds): afterwards every neuron has threshold 1 and a spike means λ.

Scales are tracked per edge, so the structure is handled here, not by the user: pools and
reshapes carry their input's scale; a concat concatenates its inputs' channel scales; both inputs
of a residual ``add`` are brought to the add's scale (a weighted input is rescaled directly, a
skip connection gets a ``scale`` node); where a ReLU's input cannot be rescaled by a weight a
``scale`` node is inserted; outputs are scaled back to true units. Requires: BN folded, no
opaque ops, ReLUs not yet converted. Guarantees: the graph computes the original function
(within float rounding), and each ReLU's output is the original divided by its λ.
"""
from __future__ import annotations

import math

import torch

from snncompile.calibrate import collect_stats
from snncompile.errors import CalibrationError, ConfigError, UnsupportedOpError
from snncompile.ir import Graph, Node
from snncompile.ops import get_op, has_trait
from snncompile.pipeline import PassContext, register_pass

from ._threshold_search import mse_scale
from ._walk import ceiling_of, is_relu_like, refuse_non_relu_activations

__all__ = ["Normalize"]


def _carries_scale(n: Node) -> bool:
    """``n``'s output carries its input's activation scale as it is, per channel: a positive
    per-channel scale s passes through (f(s*x) = s*f(x)) and the channel layout is kept
    (elementwise ops and pools; relu and add qualify too, and are handled before this is asked)."""
    return has_trait(n, "scale_transparent") and (has_trait(n, "elementwise") or has_trait(n, "pooling"))


@register_pass("normalize")
class Normalize:
    """Options: ``mode`` "max" | "percentile" | "fixed"; ``p`` (percentile); ``granularity``
    "layer" | "channel"; ``scale`` (the λ every ReLU gets in mode "fixed");
    ``batch_size`` for calibration."""

    mode: str = "percentile"
    p: float = 99.9
    granularity: str = "channel"
    scale: float = 1.0
    T: int = 0
    v_init: float = 0.5
    max_spikes: int = 1
    batch_size: int = 256

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        if self.mode not in ("max", "percentile", "fixed", "mse"):
            raise ConfigError(f"normalize: mode must be 'max', 'percentile', 'fixed' or 'mse', got {self.mode!r}")
        if self.granularity not in ("layer", "channel"):
            raise ConfigError(f"normalize: granularity must be 'layer' or 'channel', got {self.granularity!r}")
        if self.mode == "percentile" and not 0 < self.p <= 100:
            raise ConfigError(f"normalize: p={self.p} must be in (0, 100]")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"normalize: scale={self.scale} must be a positive number (the activation scale "
                              "every ReLU gets in mode 'fixed': its largest expected output, e.g. 1.0)")
        steps = self._steps(ctx)
        _refuse_unsupported(graph)
        relus = [n for n in graph.nodes if is_relu_like(n)]
        lam = self._lambdas(graph, relus, ctx, steps)
        _rescale(graph, lam)
        return graph

    def _steps(self, ctx: PassContext) -> int:
        """The T mode "mse" chooses λ for (0 for the other modes)."""
        if self.mode != "mse":
            return 0
        T = self.T or ctx.T
        if not isinstance(T, int) or isinstance(T, bool) or T < 1:
            raise ConfigError(f"normalize: mode 'mse' chooses thresholds for a number of steps; give T (an int >= 1) "
                              f"as normalize{{mode=mse T=4}} or compile(..., T=4), got T={T!r}")
        if self.max_spikes < 1:
            raise ConfigError(f"normalize: max_spikes={self.max_spikes} must be >= 1 (spikes a neuron fires per step)")
        if not 0.0 <= self.v_init < 1.0:
            raise ConfigError(f"normalize: v_init={self.v_init} must be in [0, 1) (the neurons' starting membrane "
                              "as a fraction of the threshold, as relu-to-if sets it)")
        return T

    def _lambdas(self, graph: Graph, relus: list[Node], ctx: PassContext, steps: int) -> dict[int, torch.Tensor]:
        if self.mode == "fixed":
            return {r.id: _capped(torch.tensor(float(self.scale)), r) for r in relus}
        poisson = ctx.options.get("encoding") == "poisson"  # its inputs are probabilities: check them here too
        stats = collect_stats(graph, ctx.calibration_data, relus, batch_size=self.batch_size, device=ctx.device,
                              allow_nonfinite=bool(ctx.options.get("allow_nonfinite", False)),
                              value_range=(0.0, 1.0) if poisson else None, what="Poisson encoding")
        lam = {}
        cw = self.granularity == "channel"
        for r in relus:
            st = stats[r.id]
            if st.count == 0:
                raise CalibrationError(f"normalize: {r.describe()} has no calibration statistics — pass "
                                       "calibration data that reaches it, or use mode=fixed with a scale")
            mode = self._mode_for(graph, r)
            v = self._scale_of(st, cw, steps, mode)
            layer_v = st.max(channelwise=False).float().cpu() if mode != "percentile" else \
                self._scale_of(st, False, steps, mode)
            # a channel that never fires in calibration keeps the layer's scale (any positive
            # value is exact for the ANN; this one keeps its weights in range)
            floor = torch.clamp(layer_v, min=1e-8)
            v = torch.where(v > 1e-6 * floor, v, floor)
            lam[r.id] = _capped(_broadcastable(v, r.shape), r)
        return lam


    def _mode_for(self, graph: Graph, r: Node) -> str:
        """The statistic for ``r``: the pass's mode, except that mode "mse" keeps the percentile
        for a ReLU read only by a max pool. There the next layer sees the window maxima, which a
        λ fitted to all values clips: measured on the VGG-style MNIST nets, the search there loses
        0.5-3 points at T = 1..4 (also when fitted to the maxima), while behind weights and average
        pools it gains."""
        users = graph.users(r)
        if self.mode == "mse" and len(users) == 1 and users[0].op == "maxpool2d":
            return "percentile"
        return self.mode

    def _scale_of(self, st, channelwise: bool, steps: int, mode: str) -> torch.Tensor:
        if mode == "max":
            v = st.max(channelwise=channelwise)
        elif mode == "mse":
            v = mse_scale(st, steps, self.v_init, channelwise, max_spikes=self.max_spikes)
        else:
            v = st.percentile(self.p, channelwise=channelwise)
        return v.detach().float().cpu()


def _capped(lam: torch.Tensor, r: Node) -> torch.Tensor:
    """λ of a ReLU-like node: at most its ceiling c (ReLU6: 6), so that the neuron's saturation at
    one spike per step (λ) is never above what the ANN can output."""
    c = ceiling_of(r)
    return lam if c is None else torch.clamp(lam, max=float(c))


def _refuse_unsupported(graph: Graph) -> None:
    refuse_non_relu_activations(graph, "normalize")
    for n in graph.nodes:
        if n.op == "batchnorm":
            raise UnsupportedOpError(f"normalize: {n.describe()} is a batch norm that is not folded (it does not "
                                     "follow a conv/linear that only it reads) — run fold-batchnorm first, or move "
                                     "the BN after a conv/linear layer in the model")
        if n.op == "opaque":
            raise UnsupportedOpError(f"normalize: {n.describe()} calls {n.attrs.get('name')}, which snncompile "
                                     "cannot rescale — replace it with a supported op (see snncompile.ops.OPS) "
                                     "or remove it before converting")
        if has_trait(n, "neuron") or n.op in ("encode", "readout"):
            raise ConfigError(f"normalize: {n.describe()} is already spiking; normalize runs before relu-to-if")


def _broadcastable(v: torch.Tensor, shape) -> torch.Tensor:
    """A scalar stays a scalar; a per-channel vector [C] becomes [C, 1, ...] for one sample."""
    if v.numel() == 1:
        return v.reshape(())
    return v.reshape((v.numel(),) + (1,) * (len(shape) - 2))


def _per_channel(s: torch.Tensor, shape, where: Node) -> torch.Tensor:
    """The scale as a vector over dim 1 of ``shape``; it must be constant within a channel."""
    c = shape[1]
    if s.dim() == 0:
        return s.expand(c)
    full = s.expand(tuple(shape[1:]))
    flat = full.reshape(c, -1)
    if not torch.allclose(flat, flat[:, :1].expand_as(flat), rtol=1e-6, atol=0):
        raise UnsupportedOpError(f"normalize: the input of {where.describe()} has scales that vary within a "
                                 "channel; normalize layer-wise (granularity=layer) for this model")
    return flat[:, 0]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    try:
        return a.shape == b.shape and torch.allclose(a, b, rtol=1e-7, atol=0) or \
            (a.numel() == 1 and b.numel() == 1 and torch.allclose(a.reshape(()), b.reshape(()), rtol=1e-7, atol=0))
    except RuntimeError:
        return False


def _target(graph: Graph, node: Node, lam: dict[int, torch.Tensor], seen=None) -> torch.Tensor | None:
    """The λ of the ReLU this node's value flows into (through pools and adds), None for an output."""
    for u in graph.users(node):
        if is_relu_like(u):
            return lam[u.id]
        if _carries_scale(u):
            t = _target(graph, u, lam)
            if t is not None:
                return t
    return None


def _insert_scale(graph: Graph, src: Node, reader: Node, factor: torch.Tensor) -> None:
    s = graph.insert_before(reader, "scale", [src], params={"factor": factor.float()},
                            meta={"shape": src.shape, "source": src.source})
    graph.replace_all_uses(src, s, readers=[reader])


def _rescale(graph: Graph, lam: dict[int, torch.Tensor]) -> None:
    one = torch.tensor(1.0)
    scales: dict[int, torch.Tensor] = {}
    for n in list(graph.nodes):
        if n.op == "input":
            scales[n.id] = one
        elif has_trait(n, "weighted"):
            s_in = _per_channel(scales[n.inputs[0].id], n.inputs[0].shape, n)
            t = _target(graph, n, lam)
            s_out = one if t is None else t
            _rescale_layer(n, s_in, _per_channel(s_out, n.shape, n))
            scales[n.id] = s_out
        elif is_relu_like(n):
            s_in, want = scales[n.inputs[0].id], lam[n.id]
            if not _same(s_in, want):
                _insert_scale(graph, n.inputs[0], n, s_in / want)
            scales[n.id] = want
            n.meta["act_scale"] = want.clone()
            if n.op == "clamp":  # clamp(x, 0, c) / λ = clamp(x / λ, 0, c / λ): the ceiling in λ units
                ceiling = float(n.attrs["max"]) / want
                n.params["ceiling"] = ceiling.float()
                n.attrs["max"] = None
        elif n.op == "add":
            t = _target(graph, n, lam)
            want = scales[n.inputs[0].id] if t is None else t
            for x in list(n.inputs):
                if not _same(scales[x.id], want):
                    _insert_scale(graph, x, n, scales[x.id] / want)
            scales[n.id] = want
        elif _carries_scale(n) and has_trait(n, "pooling"):
            # a window mixes positions of one channel: the scale must be one value per channel
            scales[n.id] = _channel_scale(scales[n.inputs[0].id], n.inputs[0].shape, n)
        elif _carries_scale(n):
            scales[n.id] = scales[n.inputs[0].id]
        elif has_trait(n, "rearrange"):  # the scales move with the values they belong to
            s = scales[n.inputs[0].id]
            if s.dim() == 0:
                scales[n.id] = s
            else:
                full = s.expand(tuple(n.inputs[0].shape[1:])).unsqueeze(0)
                args, kw = get_op(n.op).bind_call([full], n.attrs, {})
                scales[n.id] = get_op(n.op).target(*args, **kw)[0]
        elif n.op == "cat":
            scales[n.id] = _cat_scales(graph, n, scales)
        elif n.op == "clamp":
            raise UnsupportedOpError(f"normalize: {n.describe()} clamps to [{n.attrs.get('min')}, {n.attrs.get('max')}]; "
                                     "only ReLU-like activations convert (ReLU, or a clamp with floor 0 such as ReLU6) "
                                     "— use ReLU")
        elif n.op == "output":
            for x in list(n.inputs):
                if not _same(scales[x.id], one):
                    _insert_scale(graph, x, n, scales[x.id])
        else:
            raise UnsupportedOpError(f"normalize: does not know how {n.describe()} carries activation scales — "
                                     "add a rule in passes/normalize.py or remove the op")


def _cat_scales(graph: Graph, n: Node, scales: dict[int, torch.Tensor]) -> torch.Tensor:
    ss = [scales[x.id] for x in n.inputs]
    if all(s.dim() == 0 for s in ss) and all(_same(s, ss[0]) for s in ss):
        return ss[0]
    dim = n.attrs.get("dim", 1)
    dim = dim - 1 if dim > 0 else len(n.shape) + dim - 1
    if dim == 0:  # along the channels: the inputs' channel scales, concatenated, stay per channel
        return _broadcastable(torch.cat([_per_channel(s, x.shape, n) for s, x in zip(ss, n.inputs)]), n.shape)
    fulls = [s.expand(tuple(x.shape[1:])) for s, x in zip(ss, n.inputs)]
    return torch.cat(fulls, dim=dim)


def _channel_scale(s: torch.Tensor, shape, where: Node) -> torch.Tensor:
    """A scale as a scalar or a per-channel ``[C, 1, ...]`` (UnsupportedOpError naming ``where``
    when it varies within a channel)."""
    return s if s.dim() == 0 else _broadcastable(_per_channel(s, shape, where), shape)


def _rescale_layer(n: Node, s_in: torch.Tensor, s_out: torch.Tensor) -> None:
    w = n.params["weight"].double()
    groups = int(n.attrs.get("groups", 1))
    cout = w.shape[0]
    s_in_rows = s_in.double().reshape(groups, -1)[torch.arange(cout) // (cout // groups)]  # [Cout, Cin/g]
    extra = (1,) * (w.dim() - 2)
    w = w * s_in_rows.reshape(s_in_rows.shape + extra) / s_out.double().reshape((cout, 1) + extra)
    n.params["weight"] = w.float()
    if "bias" in n.params:
        n.params["bias"] = (n.params["bias"].double() / s_out.double()).float()
    n.meta["out_scale"] = s_out.clone()
