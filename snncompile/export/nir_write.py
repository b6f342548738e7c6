"""IR (the stage before lowering) -> ``nir.NIRGraph``: one table from our ops to NIR's nodes.

Every IR value becomes a list of NIR node names whose summed outputs equal it: NIR sums a node's
incoming edges, so a residual ``add`` is only more edges, a concat is one channel-embedding
(1x1 conv or linear of 0/1 weights) per part, and encode/dropout/identity pass their input on.
Neurons are written by ``nir_neurons`` (reset by subtraction as integrator + threshold + feedback).
A recurrent container's body is written inline, its feedback as an edge back into its neuron.
"""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import torch

from ..errors import UnsupportedOpError
from .nir_neurons import F32, neuron_record, neuron_to_nir

__all__ = ["write_graph"]

_PASS_THROUGH = ("encode", "dropout", "identity")
_NO_NIR = {
    "maxpool2d": "NIR 1.0 has no max pool; train or convert the model with average pooling to export it",
    "spike_maxpool2d": "NIR 1.0 has no max pool; train or convert the model with average pooling to export it",
}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy().copy()


def _per_sample(value, shape) -> np.ndarray:
    """``value`` (a number or a tensor that broadcasts over ``[N, *shape]``) over one sample."""
    full = torch.ones((1,) + tuple(shape), dtype=torch.float32) * torch.as_tensor(value, dtype=torch.float32)
    return _np(full[0])


class _Writer:
    def __init__(self, nir, dt: float, form: str):
        self.nir, self.dt, self.form = nir, float(dt), form
        self.nodes: dict = {}
        self.edges: list = []
        self.shapes: dict = {}  # NIR name -> per-sample output shape
        self.plain_subtract: list = []  # neurons whose reset by subtraction the plain form drops

    # names and edges -----------------------------------------------------------------------
    def name(self, node, suffix: str = "") -> str:
        src = node.source
        base = (src.module_path if src is not None and src.module_path else f"{node.op}{node.id}") + suffix
        name, k = base, 1
        while name in self.nodes or name in ("input", "output"):
            k += 1
            name = f"{base}.{node.op}" if k == 2 else f"{base}.{node.op}{k}"
        return name

    def add(self, name: str, nir_node, sources, shape, record: str | None = None) -> str:
        if record is not None:
            nir_node.metadata = {**getattr(nir_node, "metadata", {}), "snncompile": record}
        self.nodes[name] = nir_node
        self.shapes[name] = tuple(shape)
        self.connect(sources, name)
        return name

    def connect(self, sources, dst: str) -> None:
        """Edges from every source into ``dst``; a source counted k > 1 times goes through Scale(k)."""
        for src, k in Counter(sources).items():
            if k > 1:
                shape = self.shapes[src]
                src = self.add(f"{src}.times{k}", self.nir.Scale(scale=np.full(shape, k, F32)), [src], shape)
            self.edges.append((src, dst))

    # the walk --------------------------------------------------------------------------------
    def walk(self, graph, src: dict, out_name: str | None = None, outer=None):
        """Write ``graph``'s nodes; ``src`` maps IR ids already written to their NIR sources
        (``out_name``, ``outer``: the name and IR node of the recurrent container whose body this is).
        Returns the sources of the graph's output (a list per output value)."""
        for node in graph.nodes:
            if node.id in src:
                continue
            if node.op == "output":
                return [src[i.id] for i in node.inputs]
            ins = [src[i.id] for i in node.inputs]
            src[node.id] = self.write(node, ins, out_name if node.op == "neuron" else None, outer)
        raise UnsupportedOpError(f"export_nir: graph {graph.name!r} has no output node")

    def write(self, node, ins: list, base: str | None, outer=None) -> list:
        op = node.op
        shape = tuple(node.shape[1:]) if node.shape is not None else None
        in_shape = tuple(node.inputs[0].shape[1:]) if node.inputs and node.inputs[0].shape is not None else None
        nir = self.nir
        if op in _PASS_THROUGH or (op == "readout" and node.attrs.get("mode") == "last"):
            return ins[0]
        if op == "add":
            return ins[0] + ins[1]
        if op in ("conv1d", "conv2d"):
            a, w = node.attrs, node.params["weight"]
            bias = _np(node.params["bias"]) if "bias" in node.params else np.zeros(w.shape[0], F32)
            if op == "conv1d":
                n = nir.Conv1d(input_shape=int(in_shape[1]), weight=_np(w), stride=int(a["stride"][0]),
                               padding=int(a["padding"][0]), dilation=int(a["dilation"][0]), groups=int(a["groups"]),
                               bias=bias)
            else:
                n = nir.Conv2d(input_shape=tuple(int(d) for d in in_shape[1:]), weight=_np(w),
                               stride=tuple(a["stride"]), padding=tuple(a["padding"]), dilation=tuple(a["dilation"]),
                               groups=int(a["groups"]), bias=bias)
            return [self.add(self.name(node), n, ins[0], shape)]
        if op == "linear":
            if in_shape is None or len(in_shape) != 1:
                raise UnsupportedOpError(f"export_nir: {node.describe()} is a linear layer over per-sample shape "
                                         f"{list(in_shape or [])}; NIR's Affine takes vectors — flatten before it")
            w = _np(node.params["weight"])
            n = nir.Affine(weight=w, bias=_np(node.params["bias"])) if "bias" in node.params else nir.Linear(weight=w)
            return [self.add(self.name(node), n, ins[0], shape)]
        if op in ("sumpool2d", "avgpool2d", "adaptive_avgpool2d"):
            return [self.add(self.name(node), self.pool(node, in_shape, shape), ins[0], shape)]
        if op == "flatten":
            start, end = int(node.attrs.get("start_dim", 1)), int(node.attrs.get("end_dim", -1))
            n = nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=start - 1,
                            end_dim=end - 1 if end > 0 else end)
            return [self.add(self.name(node), n, ins[0], shape)]
        if op == "reshape" and len(shape) == 1:
            n = nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0, end_dim=-1)
            return [self.add(self.name(node), n, ins[0], shape)]
        if op in ("mul_const", "scale"):
            factor = node.attrs["value"] if op == "mul_const" else node.params["factor"]
            return [self.add(self.name(node), nir.Scale(scale=_per_sample(factor, shape)), ins[0], shape)]
        if op == "cat":
            return self.cat(node, ins)
        if op == "neuron":
            return self.neuron(node, ins[0], shape, base or self.name(node), outer or node)
        if op == "synapse_filter":
            tau = F32(node.attrs.get("tau", 2.0))
            one = np.ones(shape, F32)
            n = nir.LI(tau=one * tau * F32(self.dt), r=one * tau, v_leak=np.zeros(shape, F32))
            return [self.add(self.name(node), n, ins[0], shape, json.dumps({"op": "synapse_filter", "tau": float(tau)}))]
        if op == "recurrent":
            return self.recurrent(node, ins[0])
        if op == "readout":  # mode "mean": the last layer integrates; snn(x) is its state after T steps / T
            n = nir.I(r=np.full(shape, 1.0 / self.dt, F32))
            return [self.add(self.name(node), n, ins[0], shape, json.dumps({"op": "readout", "mode": "mean"}))]
        why = _NO_NIR.get(op, "it has no NIR 1.0 form")
        raise UnsupportedOpError(f"export_nir: {node.describe()} cannot be exported: {why} (snncompile writes conv, "
                                 "linear, sum/average pools, flatten, scale, add, cat, IF/LIF neurons, synapse filters, "
                                 "recurrent containers and the readout)")

    def pool(self, node, in_shape, shape):
        a, nir = node.attrs, self.nir
        if node.op == "adaptive_avgpool2d":
            (h, w), (oh, ow) = in_shape[1:], shape[1:]
            if h % oh or w % ow:
                raise UnsupportedOpError(f"export_nir: {node.describe()} pools {h}x{w} to {oh}x{ow}, which is not one "
                                         "window size; NIR's AvgPool2d needs equal windows")
            k = np.array([h // oh, w // ow])
            return nir.AvgPool2d(kernel_size=k, stride=k, padding=np.array([0, 0]))
        k, p = np.array(a["kernel_size"]), np.array(a["padding"])
        s = np.array(a["stride"] if a.get("stride") is not None else a["kernel_size"])
        if node.op == "sumpool2d":
            return nir.SumPool2d(kernel_size=k, stride=s, padding=p)
        if a.get("ceil_mode") or a.get("divisor_override") or (p.any() and not a.get("count_include_pad", True)):
            raise UnsupportedOpError(f"export_nir: {node.describe()} (ceil_mode, divisor_override or padding not "
                                     "counted) has no NIR AvgPool2d form")
        return nir.AvgPool2d(kernel_size=k, stride=s, padding=p)

    def cat(self, node, ins: list) -> list:
        """Each part embedded into the concat's channels by a 0/1 weight; the parts' edges sum."""
        rank, dim = len(node.shape) - 1, int(node.attrs.get("dim", 1))
        if dim not in (1, -rank):
            raise UnsupportedOpError(f"export_nir: {node.describe()} concatenates along dim {dim}; NIR can only "
                                     "express a concat of channels (dim 1)")
        total, offset, out = node.shape[1], 0, []
        for k, (part, sources) in enumerate(zip(node.inputs, ins)):
            c = part.shape[1]
            w = np.zeros((total, c) + (1,) * (rank - 1), F32)
            w[offset + np.arange(c), np.arange(c)] = 1.0
            spatial = tuple(int(d) for d in part.shape[2:])
            if rank == 1:
                n = self.nir.Linear(weight=w)
            elif rank == 2:
                n = self.nir.Conv1d(input_shape=spatial[0], weight=w, stride=1, padding=0, dilation=1, groups=1,
                                    bias=np.zeros(total, F32))
            elif rank == 3:
                n = self.nir.Conv2d(input_shape=spatial, weight=w, stride=1, padding=0, dilation=1, groups=1,
                                    bias=np.zeros(total, F32))
            else:
                raise UnsupportedOpError(f"export_nir: {node.describe()} concatenates {rank}-D samples; NIR has 1-D "
                                         "and 2-D convolutions only")
            record = json.dumps({"op": "cat", "part": k, "offset": offset})
            out.append(self.add(self.name(node, f".part{k}"), n, sources, node.shape[1:], record))
            offset += c
        return out

    def neuron(self, node, sources, shape, base: str, named) -> list:
        """``named``: the IR node the record names (a recurrent container for its body's neuron)."""
        theta = node.params["threshold"]
        n = neuron_to_nir(node, theta, shape, self.dt, self.form)
        record = neuron_record(node, theta, named.id)
        nir = self.nir
        if n.reset_scale is None:
            if node.attrs.get("reset", "subtract") == "subtract":
                self.plain_subtract.append(node.describe())
            cls = nir.IF(r=n.r, v_threshold=n.v_threshold, v_reset=n.v_reset) if n.kind == "IF" else \
                nir.LIF(tau=n.tau, r=n.r, v_leak=n.v_leak, v_threshold=n.v_threshold, v_reset=n.v_reset)
            return [self.add(base, cls, sources, shape, record)]
        integ = nir.I(r=n.r) if n.kind == "I" else nir.LI(tau=n.tau, r=n.r, v_leak=n.v_leak)
        self.add(base, integ, sources, shape, record)
        fire = self.add(fire_name(base), nir.Threshold(threshold=n.v_threshold), [base], shape)
        self.add(f"{base}.reset", nir.Scale(scale=n.reset_scale), [fire], shape)
        self.edges.append((f"{base}.reset", base))
        return [fire]

    def recurrent(self, node, sources) -> list:
        """The body inline: its state input is the neuron's own spikes, so its feedback is a cycle.
        A feedback bias moves to the input path (an identity Affine): our container adds it from the
        first step, and a cycle's edge carries nothing at the first step."""
        body = node.attrs["body"].copy()
        base = self.name(node)
        x_in, state = sorted(body.inputs, key=lambda i: i.attrs.get("index", 0))
        fb = next((u for u in body.users(state) if u.op == "linear" and "bias" in u.params), None)
        if fb is not None:
            b = _np(fb.params.pop("bias"))
            eye = self.nir.Affine(weight=np.eye(b.shape[0], dtype=F32), bias=b)
            sources = [self.add(f"{base}.bias", eye, sources, b.shape, json.dumps({"op": "recurrent_bias"}))]
        spikes = fire_name(base) if self.form == "subtract" and body.output.inputs[0].attrs.get(
            "reset", "subtract") == "subtract" else base
        outs = self.walk(body, {x_in.id: sources, state.id: [spikes]}, out_name=base, outer=node)
        return outs[0]


def fire_name(base: str) -> str:
    """The NIR name of the Threshold of the neuron written as ``base`` (its spikes)."""
    return f"{base}.fire"


def write_graph(nir, graph, *, dt: float, form: str, metadata: dict):
    """``graph`` (a semantic-stage IR Graph with current parameters) as a ``nir.NIRGraph``, and
    the neurons whose reset by subtraction the plain form replaced (for the caller's warning)."""
    w = _Writer(nir, dt, form)
    src = {}
    inputs = sorted(graph.inputs, key=lambda i: i.attrs.get("index", 0))
    for k, inp in enumerate(inputs):
        enc = next((u.attrs.get("method") for u in graph.users(inp) if u.op == "encode"), None)
        if inp.attrs.get("kind") == "sequence":
            enc = "sequence"
        name = "input" if len(inputs) == 1 else (inp.meta.get("input_name") or f"input{k}")
        record = json.dumps({"op": "input", "index": k, "encode": enc})
        src[inp.id] = [w.add(name, nir.Input(input_type=np.array(inp.shape[1:])), [], inp.shape[1:], record)]
    outs = w.walk(graph, src)
    for k, (value, sources) in enumerate(zip(graph.output.inputs, outs)):
        name = "output" if len(outs) == 1 else f"output{k}"
        w.add(name, nir.Output(output_type=np.array(value.shape[1:])), sources, value.shape[1:])
    return nir.NIRGraph(nodes=w.nodes, edges=w.edges, metadata=metadata, type_check=False), w.plain_subtract
