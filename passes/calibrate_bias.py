"""calibrate-bias: layer by layer, correct each neuron layer's mean rate towards the ANN's.

Li et al. 2021 ("A free lunch from ANN: towards efficient, accurate spiking neural networks
calibration"): after conversion the SNN's mean output of a layer over T steps differs from the
ANN's activation by an error that is not zero on average (quantization of small activations,
clipping, uneven spike arrival) and that grows with depth. With unlabeled calibration data,
forward only, in the order of the graph: run the SNN up to neuron layer l for T steps, compare
each channel's mean rate with the ANN's mean (clipped at the neuron's saturation, one spike
per step; ``max_spikes`` for multi-spike neurons), and move the error into
- ``bias``: the bias of the layer that feeds the neuron (an error e per step is a current e
  per step), or
- ``potential``: the layer's starting membrane (``v_init``, one value per layer: T e summed
  over the run arrive at once), or ``both`` (half each);
then go on to layer l + 1 with layer l corrected. The readout layer's bias is corrected last,
towards the ANN's mean logits. One run through the SNN, node by node, on one batch of the first
calibration inputs (as many as fit ``memory_mb`` at T steps): after a correction only what it
changed is recomputed, and values are dropped once nothing later reads them, so the cost is about
one SNN run and the memory a few of the graph's values.

Requires: a converted graph before lowering (neurons, encode-input and readout placed; run it
before hoist-static). Guarantees: only biases (created as zeros where a layer had none) and
``v_init`` attributes change; a neuron whose input current no layer's bias reaches (fed by a
pool or a concat) is left alone and named in ``meta["calibration"]``.
"""
from __future__ import annotations

import math

import torch

from snncompile.calibrate import calibration_head, input_names, iter_batches
from snncompile.errors import ConfigError
from snncompile.ir import Graph, Node
from snncompile.neuron_module import backend_for
from snncompile.ops import FUSED_NEURON_SUMPOOL, has_trait
from snncompile.pipeline import PassContext, register_pass
from snncompile.simulate import Simulator, neuron_spec_of

__all__ = ["CalibrateBias", "channel_means"]


def channel_means(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Per-channel sums of a batch ``[N, C, ...]`` (dim 1 the channel; ``[N, F]`` per feature) in
    float64 (each batch summed in float32: a batch holds few enough values), and the number of
    values each sum holds."""
    dims = [d for d in range(x.dim()) if d != 1]
    return x.sum(dims, dtype=torch.float32).double(), x.numel() // x.shape[1]


@register_pass("calibrate-bias")
class CalibrateBias:
    """Options: ``what`` "bias" | "potential" | "both"; ``T`` (the steps to calibrate for; 0 takes
    the T compile was asked for); ``samples`` (at most this many calibration inputs, the first
    ones, as many as fit ``memory_mb`` at T steps); ``readout`` (also correct the last layer's
    bias); ``rounds`` (corrections per layer: a rate answers a bias shift one for one only on
    average; measured on the MNIST CNNs, a second round does not raise accuracy)."""

    what: str = "bias"
    T: int = 0
    samples: int = 512
    memory_mb: int = 512
    readout: bool = True
    rounds: int = 1

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        if self.what not in ("bias", "potential", "both"):
            raise ConfigError(f"calibrate-bias: what must be 'bias', 'potential' or 'both', got {self.what!r}")
        T = self.T or ctx.T
        if not isinstance(T, int) or isinstance(T, bool) or T < 1:
            raise ConfigError(f"calibrate-bias: give T (an int >= 1), as calibrate-bias{{T=4}} or compile(..., T=4); "
                              f"got {T!r}")
        if self.samples < 1 or self.memory_mb < 1 or self.rounds < 1:
            raise ConfigError("calibrate-bias: samples, memory_mb and rounds must be >= 1")
        lowered = next((n for n in graph.nodes if n.op in (FUSED_NEURON_SUMPOOL, "repeat_time") or n.meta.get("static")
                        or has_trait(n, "neuron") and n.attrs.get("input_kind") == "static"), None)
        if lowered is not None:
            raise ConfigError(f"calibrate-bias: {lowered.describe()} is already lowered (hoist-static or a fusion "
                              "ran); the calibration simulates the SNN as converted — put calibrate-bias before "
                              "hoist-static, right after readout")
        layers = [n for n in graph.nodes if has_trait(n, "neuron")]
        if not any(n.op == "encode" for n in graph.nodes):
            raise ConfigError("calibrate-bias: the graph has no encode-input yet; run it after relu-to-if, "
                              "encode-input and readout (before hoist-static)")
        if not layers:  # (no neuron: the SNN computes the ANN's function exactly, nothing to correct)
            return graph
        outs = [n for n in graph.output.inputs if n.op == "readout"] if self.readout else []
        xs = self._batch(graph, ctx, T)
        clip = {n.id: _saturation(n) for n in layers}
        with torch.no_grad():
            ann = _ann_means(Simulator(graph, T, device=ctx.device, rate_domain=True), xs, layers + outs, clip)
            notes = self._calibrate(graph, Simulator(graph, T, device=ctx.device, backend=_backend(ctx.device)), xs,
                                    layers + outs, ann, T)
        for layer in layers + outs:
            layer.meta["calibration"] = notes[layer.id]
        return graph

    def _batch(self, graph: Graph, ctx: PassContext, T: int) -> tuple:
        """The first calibration inputs, as one batch of as many rows as fit ``memory_mb`` (three
        live values of the graph's largest per-sample size, T steps, float32), at most ``samples``."""
        widest = max(math.prod(n.shape[1:]) for n in graph.nodes if n.shape and len(n.shape) > 1)
        rows = max(8, min(self.samples, (self.memory_mb << 20) // (4 * 3 * widest * T)))
        n_inputs = max(len(graph.inputs), 1)
        parts, seen = [], 0
        for x in iter_batches(calibration_head(ctx.calibration_data), rows, n_inputs=n_inputs, names=input_names(graph),
                              allow_nonfinite=bool(ctx.options.get("allow_nonfinite", False))):
            x = x if n_inputs > 1 else (x,)
            parts.append(tuple(t[:rows - seen] for t in x))
            seen += parts[-1][0].shape[0]
            if seen >= rows:
                break
        return tuple(torch.cat([p[k] for p in parts]) for k in range(n_inputs))

    def _calibrate(self, graph: Graph, sim: Simulator, xs: tuple, layers: list[Node], ann: dict, T: int) -> dict:
        """One run through the graph, node by node; at each layer measure, correct, recompute what
        the correction changed, go on. Values are dropped once nothing later reads them."""
        order = list(graph.nodes)
        pos = {n.id: i for i, n in enumerate(order)}
        last_use = {n.id: max((pos[u.id] for u in graph.users(n)), default=pos[n.id]) for n in order}
        env: dict[int, torch.Tensor] = {}
        done, notes = 0, {}
        for layer in layers:
            for node in order[done:pos[layer.id] + 1]:
                env[node.id] = sim.evaluate(node, env, xs)
            done = pos[layer.id] + 1
            said = []
            for _ in range(self.rounds if layer.op == "neuron" else 1):  # (the readout is linear: one is exact)
                err = ann[layer.id] - _channel_mean(env[layer.id], layer)  # [C]: what the SNN lacks, per step
                site, text = self._correct(graph, layer, err, T)
                said.append(text)
                changed = {layer.id} if site is None else {site.id}
                for node in order[pos[site.id] if site is not None else pos[layer.id]:done]:
                    if node.id in changed or any(i.id in changed for i in node.inputs):
                        env[node.id] = sim.evaluate(node, env, xs)
                        changed.add(node.id)
            notes[layer.id] = "; ".join(said)
            for i in [i for i in env if last_use[i] < done]:
                del env[i]
        return notes

    def _correct(self, graph: Graph, layer: Node, err: torch.Tensor, T: int) -> tuple[Node | None, str]:
        """Move ``err`` (per channel, per step) into a bias or the starting membrane; returns the
        layer whose bias changed (None: only ``v_init`` did) and what was done."""
        mean_abs = float(err.abs().mean())
        if layer.op == "neuron" and self.what in ("potential", "both"):
            share = 1.0 if self.what == "potential" else 0.5
            v0 = float(layer.attrs.get("v_init", 0.0)) + share * T * float(err.mean())
            layer.attrs["v_init"] = min(max(v0, 0.0), 0.95)  # (a fraction of the threshold: [0, 1))
            err = err * (1.0 - share)
            if share == 1.0:
                return None, f"v_init {layer.attrs['v_init']:.3f} (mean error {mean_abs:.4f})"
        feed = _bias_site(graph, layer.inputs[0])
        if feed is None:
            return None, f"not corrected: no bias reaches its input (mean error {mean_abs:.4f})"
        node, gain = feed
        bias = node.params.get("bias")
        if bias is None:
            bias = torch.zeros(node.params["weight"].shape[0])
        node.params["bias"] = (bias.double() + err.cpu() / gain).float()
        return node, f"bias of {node.describe()} (mean error {mean_abs:.4f})"


def _backend(device) -> str:
    """The fastest neuron backend on ``device`` (the runtime's rule: the C loop on a CPU)."""
    return backend_for("auto", torch.device(device) if device is not None else torch.device("cpu"))


def _bias_site(graph: Graph, x: Node) -> tuple[Node, torch.Tensor] | None:
    """The weighted layer whose bias adds to current ``x`` one for one (``x`` itself, a layer
    through a ``scale`` node: gain = the factor, or a residual add's only-read weighted input),
    with that gain per channel; None when there is none."""
    if has_trait(x, "weighted") and len(graph.users(x)) == 1:
        return x, torch.ones(())
    if x.op == "scale" and len(graph.users(x)) == 1:
        inner = _bias_site(graph, x.inputs[0])
        if inner is not None:
            f = x.params["factor"].double().reshape(-1)
            return inner[0], inner[1] * f
    if x.op == "add":
        for y in x.inputs:
            site = _bias_site(graph, y)
            if site is not None:
                return site
    return None


def _channel_mean(value: torch.Tensor, node: Node) -> torch.Tensor:
    """Each channel's mean of a node's value (a readout's ``[T, N, ...]`` read as ``[T*N, ...]``)."""
    v = value.reshape((-1,) + tuple(value.shape[2:])) if node.op == "readout" else value
    s, k = channel_means(v)
    return (s / k).cpu()


def _saturation(node: Node) -> float:
    """The most a neuron outputs per step: 1, or ``max_spikes`` for a multi-spike family (a
    signed neuron's saturation is not clipped: inf)."""
    spec = neuron_spec_of(node)
    if spec.family.spikes == "multi":
        return float(spec.params()["max_spikes"])
    return 1.0 if spec.family.spikes == "binary" else math.inf


def _ann_means(sim: Simulator, xs: tuple, nodes: list[Node], clip: dict) -> dict[int, torch.Tensor]:
    """Per-channel means of ``nodes``' rate-domain values on ``xs``; a node in ``clip`` is first
    clipped at its saturation (a neuron's spikes per step)."""
    means: dict[int, torch.Tensor] = {}
    wanted = {n.id: n for n in nodes}

    def observe(node: Node, value: torch.Tensor) -> None:
        if node.id in wanted:
            means[node.id] = _channel_mean(value.clamp(max=clip[node.id]) if node.id in clip else value, node)

    sim.run(*xs, observer=observe, stop_after=nodes)
    return means
