"""Count what an SNN does on data: firing rates, synaptic operations, MACs, energy, latency, accuracy.

    a = snncompile.analyze(snn, (x_test, y_test))
    print(a)                    # per-layer table, totals, constants with their citation
    a.accuracy[8]               # accuracy after 8 steps (from the one run)

``analyze`` reads ``snn.semantic_graph`` (the stage before lowering, so the neuron fused with the
sum pool after it is still a neuron and every spike is seen) with the module's current parameters
(``snncompile.live_params.semantic_graph_now``), and runs it with the IR simulator
(``snncompile.simulate.Simulator``: the runtime's own neuron kernels, node by node), observing
every node. The definitions of events, accumulates and MACs are in snncompile/analyze_counts.py;
the energy constants in snncompile/analyze_format.py (``EnergyConstants``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .analyze_counts import Counter, ann_macs, chunk_rows, prod
from .analyze_data import batches_with_labels
from .analyze_format import EnergyConstants, format_markdown, format_table, resolve_constants
from .errors import ConfigError
from .live_params import semantic_graph_now
from .neurons import get_family
from .neurons.reference import broadcast_threshold
from .runtime import SpikingModule, check_steps
from .simulate import Simulator

__all__ = ["analyze", "Analysis", "LayerRecord", "LayerDetail", "EnergyConstants"]

_REFUSED = ("recurrent", "synapse_filter", "repeat_time")


@dataclass
class LayerRecord:
    """One counted node, per sample (averaged over the data), over the whole run of T steps.

    ``name``: module path (``network.4``); ``node``: its IR id; ``op``: ``conv2d``, ``linear``,
    ``neuron if``...; ``input``: "spikes" or "analog" for a weighted layer ("" for a neuron);
    ``neurons``/``spikes``/``rate`` (spikes per neuron per step, counting values) for a neuron
    layer; ``synops``: accumulates triggered by the events it received; ``macs``: the
    multiply-accumulates it does in the SNN as the runtime runs it (``hoisted``: once in all, else
    ``macs_per_step`` every step); ``ann_macs``: the ANN layer's; ``energy_pj`` (SNN) and
    ``ann_energy_pj`` with the analysis' constants. The total row has ``name`` "total".
    """
    name: str
    node: int | None
    op: str
    input: str = ""
    neurons: int | None = None
    spikes: float | None = None
    rate: float | None = None
    synops: float = 0.0
    macs: float = 0.0
    macs_per_step: float = 0.0
    hoisted: bool = False
    ann_macs: float = 0.0
    energy_pj: float = 0.0
    ann_energy_pj: float = 0.0


@dataclass
class LayerDetail:
    """Per-neuron data of one neuron layer for the first samples (plots): ``ann``: the ANN's
    activation there (rate domain, in the layer's normalized units) ``[n, ...]``; ``snn``: the
    mean spike value over T times the threshold ``[n, ...]`` (what the rate stands for);
    ``raster``: the first sample's spikes ``[T, neurons]`` (int8 counts)."""
    ann: torch.Tensor
    snn: torch.Tensor
    raster: torch.Tensor


@dataclass
class Analysis:
    """What ``analyze`` measured. ``layers``: LayerRecords in graph order (weighted layers, batch
    norms and neuron layers); ``total``: their sums (``rate``: all spikes over all neuron-steps);
    ``accuracy``: {t: fraction correct after t steps} for t = 1..T, None without labels;
    ``ann_accuracy``: the ANN's (when ``ann`` and labels were given); ``constants``: the energy
    constants; ``T``, ``warmup_steps``, ``latency_steps`` (T + warm-up); ``samples``;
    ``details``: {layer name: LayerDetail}; ``readout_mode``, ``backend``, ``seconds``;
    ``label_source``: what the labels are ("labels", or e.g. "the ANN's predictions": then the
    accuracy is the agreement with them)."""
    layers: list[LayerRecord]
    total: LayerRecord
    accuracy: dict[int, float] | None
    constants: EnergyConstants
    T: int
    warmup_steps: int
    samples: int
    backend: str
    readout_mode: str = "mean"
    ann_accuracy: float | None = None
    details: dict[str, LayerDetail] = field(default_factory=dict)
    seconds: float = 0.0
    label_source: str = "labels"

    @property
    def latency_steps(self) -> int:
        """Time steps until the answer: T plus any warm-up steps."""
        return self.T + self.warmup_steps

    def layer(self, name: str) -> LayerRecord:
        """The record of the layer ``name`` (a module path as printed); ConfigError listing them."""
        for r in self.layers:
            if r.name == name:
                return r
        raise ConfigError(f"analysis: no layer {name!r}; the layers are {', '.join(r.name for r in self.layers)}")

    def rates(self) -> dict[str, float]:
        """{neuron layer name: spikes per neuron per step}."""
        return {r.name: r.rate for r in self.layers if r.rate is not None}

    def operations(self) -> dict[str, dict[str, float]]:
        """{weighted layer name: {"synops", "macs", "ann_macs"}} per sample."""
        return {r.name: {"synops": r.synops, "macs": r.macs, "ann_macs": r.ann_macs}
                for r in self.layers if r.neurons is None}

    def __str__(self) -> str:
        return format_table(self)

    def to_markdown(self) -> str:
        """The same tables as ``str(analysis)``, as GitHub markdown."""
        return format_markdown(self)


def _check_graph(snn, graph) -> None:
    for n in graph.nodes:
        if n.op in _REFUSED:
            raise ConfigError(f"analyze: {n.describe()} is a {n.op}, whose operations analyze does not count yet; "
                              "analyze a feed-forward SNN (recurrent containers and synapse filters are not supported)")
    if len(graph.inputs) != 1:
        raise ConfigError(f"analyze: this SNN takes {len(graph.inputs)} inputs; analyze runs SNNs of one input")
    if snn.sequence_input:
        raise ConfigError("analyze: this SNN reads a sequence input [T, N, ...]; analyze runs SNNs of a static "
                          "input (direct or Poisson encoding)")
    if len(graph.output.inputs) != 1:
        raise ConfigError(f"analyze: this SNN has {len(graph.output.inputs)} outputs; analyze needs one")


def _name(node, used: set) -> str:
    path = node.source.module_path if node.source is not None and node.source.module_path else ""
    name = path if path and path not in used else (f"{path} %{node.id}" if path else f"%{node.id} {node.op}")
    used.add(name)
    return name


def _warmup_steps(snn) -> int:
    """Steps the SNN runs before its readout counts: none in snncompile (the readout averages every
    step from the first); an SNN object may declare ``warmup_steps``."""
    return int(getattr(snn, "warmup_steps", 0) or 0)


@torch.no_grad()
def analyze(snn, data, *, T: int | None = None, batch_size: int = 256, ann=None, energy=None,
            detail_samples: int = 16, memory_mb: int = 256) -> Analysis:
    """Run ``snn`` (a SpikingModule from ``compile`` or ``to_trainable``) T steps on ``data`` and
    count what it does, layer by layer (see the module and snncompile/analyze_counts.py).

    Takes ``data``: an input tensor ``[N, ...]``, an ``(inputs, labels)`` pair, or an iterable of
    such batches; ``T`` (default ``snn.T``); ``batch_size`` (rows per batch when one tensor is
    given); ``ann``: the ANN (a callable on inputs) whose accuracy is measured beside when labels
    are given; ``energy``: an ``EnergyConstants`` or a dict ``{"e_ac_pj", "e_mac_pj", "source"}``
    (default: Horowitz 2014, 45 nm: 0.9 pJ per accumulate, 4.6 pJ per MAC); ``detail_samples``:
    how many first samples keep per-neuron data (``Analysis.details``, for the plots);
    ``memory_mb``: the simulator's activations per chunk stay under this.
    Returns an ``Analysis``; the SNN is not changed (its state is reset by any later call). Batch
    norms left in a trainable SNN run on their running statistics (eval semantics); ``ann`` is
    called as it is (put it in eval mode).
    Guarantees: counts are exact (integers per sample before averaging), the accuracy at every t
    comes from the same run; ConfigError for a bad argument, data of the wrong shape or type,
    labels out of range, or a graph it cannot count (recurrent, several inputs or outputs).
    """
    if not isinstance(snn, SpikingModule):
        raise ConfigError(f"analyze: snn must be a SpikingModule (from snncompile.compile or to_trainable), got "
                          f"{type(snn).__name__}")
    T = check_steps(snn.T if T is None else T, "analyze: T")
    if isinstance(detail_samples, bool) or not isinstance(detail_samples, int) or detail_samples < 0:
        raise ConfigError(f"analyze: detail_samples must be an int >= 0, got {detail_samples!r}")
    constants = resolve_constants(energy)
    t0 = time.perf_counter()
    graph = semantic_graph_now(snn)
    _check_graph(snn, graph)
    device = next((t.device for n in graph.nodes for t in n.params.values()), torch.device("cpu"))
    sim = Simulator(graph, T, device=device, backend=snn.backend)
    counter = Counter(graph, T)
    rows = chunk_rows(graph, T, memory_mb)
    out_shape = graph.output.inputs[0].shape
    n_out = out_shape[-1] if out_shape is not None and isinstance(out_shape[-1], int) else None
    correct = torch.zeros(T, dtype=torch.float64)
    samples, labelled, ann_correct, first_x = 0, None, 0, []
    for x, y in batches_with_labels(data, batch_size, graph.inputs[0].shape, "analyze"):
        if labelled is None:
            labelled = y is not None
        elif labelled != (y is not None):
            raise ConfigError("analyze: some batches have labels and some do not; give labels with every batch "
                              "or with none")
        x = x.to(device)
        if y is not None and n_out is not None and int(y.max()) >= n_out:
            raise ConfigError(f"analyze: a label is {int(y.max())} but the SNN has {n_out} outputs; labels must be "
                              f"class indices 0..{n_out - 1}")
        for k, xc in enumerate(x.split(rows)):
            keep = max(0, min(detail_samples - samples, xc.shape[0]))
            out = counter.run(sim, xc, keep)
            if keep:
                first_x.append(xc[:keep])
            if y is not None:
                correct += _correct_per_step(out, y[k * rows:(k + 1) * rows].to(out.device), snn.readout_mode)
            samples += xc.shape[0]
        if y is not None:
            if ann is not None:
                ann_correct += int((_call_ann(ann, x).argmax(-1).cpu() == y.cpu()).sum())
    accuracy = {t + 1: float(c) / samples for t, c in enumerate(correct)} if labelled else None
    ann_acc = ann_correct / samples if (labelled and ann is not None) else None
    hoisted = {n.id for n in snn.graph.nodes if n.meta.get("static")}
    layers, total = _records(graph, counter, samples, T, hoisted, constants)
    details = _details(graph, counter, torch.cat(first_x), layers, device) if first_x else {}
    return Analysis(layers, total, accuracy, constants, T, _warmup_steps(snn), samples, snn.backend,
                    snn.readout_mode, ann_acc, details, time.perf_counter() - t0)


def _call_ann(ann, x):
    if not callable(ann):
        raise ConfigError(f"analyze: ann must be the ANN (a module or callable on inputs), got {type(ann).__name__}")
    out = ann(x)
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"analyze: the ann returned {type(out).__name__}; it must return one logits tensor [N, C]")
    return out


def _correct_per_step(seq: torch.Tensor, y: torch.Tensor, mode: str) -> torch.Tensor:
    """Correct predictions after each t (the runtime's readout: running mean, or the last step)."""
    if mode != "last":
        steps = torch.arange(1, seq.shape[0] + 1, device=seq.device, dtype=seq.dtype)
        seq = seq.cumsum(0) / steps.reshape((-1,) + (1,) * (seq.dim() - 1))
    return (seq.argmax(-1) == y.reshape(1, -1)).sum(1).to(torch.float64).cpu()


def _records(graph, counter: Counter, samples: int, T: int, hoisted: set, c: EnergyConstants):
    layers, used = [], set()
    for node in graph.nodes:
        if node.id in counter.spikes:
            neurons = prod(counter.shapes[node.id])
            spikes = counter.spikes[node.id] / samples
            fam = node.attrs.get("family", "")
            layers.append(LayerRecord(_name(node, used), node.id, f"neuron {fam}".strip(), neurons=neurons,
                                      spikes=spikes, rate=spikes / (neurons * T)))
        elif node.id in counter.synops:
            ann = ann_macs(node, counter.shapes[node.id])
            analog = counter.analog[node.id]
            once = node.id in hoisted
            macs = (ann if once else ann * T) if analog else 0.0
            syn = counter.synops[node.id] / samples
            layers.append(LayerRecord(_name(node, used), node.id, node.op, "analog" if analog else "spikes",
                                      synops=syn, macs=float(macs), macs_per_step=float(ann if analog else 0),
                                      hoisted=once and analog, ann_macs=float(ann),
                                      energy_pj=syn * c.e_ac_pj + macs * c.e_mac_pj, ann_energy_pj=ann * c.e_mac_pj))
    neuron_steps = sum(r.neurons * T for r in layers if r.neurons is not None)
    spikes = sum(r.spikes for r in layers if r.spikes is not None)
    total = LayerRecord("total", None, "", neurons=sum(r.neurons for r in layers if r.neurons is not None),
                        spikes=spikes, rate=spikes / neuron_steps if neuron_steps else None,
                        synops=sum(r.synops for r in layers), macs=sum(r.macs for r in layers),
                        macs_per_step=sum(r.macs_per_step for r in layers),
                        ann_macs=sum(r.ann_macs for r in layers), energy_pj=sum(r.energy_pj for r in layers),
                        ann_energy_pj=sum(r.ann_energy_pj for r in layers))
    return layers, total


def _details(graph, counter: Counter, x, layers, device) -> dict[str, LayerDetail]:
    """Per-neuron ANN activations (rate domain) and SNN values of the first samples."""
    ann_vals = {}
    Simulator(graph, 1, device=device, rate_domain=True).run(
        x, observer=lambda n, v: ann_vals.__setitem__(n.id, v) if n.id in counter.spikes else None)
    out = {}
    for r in layers:
        if r.node not in counter.first:
            continue
        s = torch.cat(counter.first[r.node], 1)
        node = graph.node(r.node)
        th = broadcast_threshold(node.params["threshold"].float(), tuple(s.shape[1:])).to(s.device)
        signed = get_family(node.attrs["family"]).spikes == "signed"
        raster = s[:, 0].reshape(s.shape[0], -1).round().to(torch.int8).cpu()
        mean = s.float().mean(0) if signed else s.float().abs().mean(0)
        out[r.name] = LayerDetail(ann_vals[r.node].float().cpu(), (mean * th).cpu(), raster)
    return out
