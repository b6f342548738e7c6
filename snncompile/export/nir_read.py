"""``nir.NIRGraph`` -> our IR -> a runnable SpikingModule: one table from NIR's nodes to our ops.

Several edges into one node become ``add`` nodes; a node's own metadata written by snncompile
restores our neuron exactly when the graph's numbers still agree with it (``restore_record``);
otherwise the NIR parameters are read by the equations in ``nir_neurons``. A neuron fed back its
own spikes (directly or through one Affine/Linear) becomes a recurrent container.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import torch

from ..errors import UnsupportedOpError
from ..ir import Graph, SourceLoc
from ..ops import infer_shape
from .nir_neurons import F32, neuron_from_nir, restore_record, uniform
from .nir_structure import delayed_edges, find_loops, flatten, order

__all__ = ["read_graph"]

_NEURONS = ("IF", "LIF")
_RUN_FIELDS = ("input_kind", "surrogate", "alpha", "detach_reset", "learn_threshold", "learn_leak")
_REFUSED = {"Delay": "snncompile runs every connection within one step (no synaptic delays)",
            "Threshold": "a Threshold outside an integrator loop is a stateless step function, not a neuron",
            "CubaLI": "a current-based leaky integrator without spikes has no snncompile op",
            "Identity": "not a NIR 1.0 primitive"}


def _arr(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=F32, copy=True))


def _record(node):
    meta = getattr(node, "metadata", None) or {}
    rec = meta.get("snncompile")
    return rec.decode() if isinstance(rec, bytes) else rec


class _Reader:
    def __init__(self, nir, flat, dt: float):
        self.nir, self.flat, self.dt = nir, flat, dt
        self.g = Graph(name="nir")
        self.value: dict = {}  # NIR name -> IR node giving its output

    def add(self, op, inputs, attrs=None, params=None, where: str = "", graph=None):
        g = graph or self.g
        node = g.add(op, inputs, attrs or {}, params or {}, meta={"source": SourceLoc(module_path=where)})
        if op != "input":
            node.meta["shape"] = infer_shape(node, [i.shape for i in node.inputs])
        return node

    def summed(self, sources: list, where: str, graph=None):
        """The IR value of the sum of the NIR ``sources`` (one add per extra edge, in edge order)."""
        if not sources:
            raise UnsupportedOpError(f"from_nir: node {where!r} has no input")
        x = self.value[sources[0]]
        for s in sources[1:]:
            x = self.add("add", [x, self.value[s]], where=where, graph=graph)
        return x

    def scaled(self, x, gain, where, graph=None):
        return x if gain is None else self.add("scale", [x], {}, {"factor": _arr(gain)}, where, graph)

    def neuron(self, name, node, x, loop, graph=None):
        """The IR neuron for NIR ``node`` (a plain IF/LIF, or the integrator of ``loop``) on ``x``."""
        k = type(node).__name__
        if loop is not None:
            fields = {"r": node.r, "v_threshold": self.flat.nodes[loop.fire].threshold,
                      "reset_scale": self.flat.nodes[loop.reset].scale}
            if k == "LI":
                fields.update(tau=node.tau, v_leak=node.v_leak)
        else:
            fields = {f: getattr(node, f) for f in ("r", "v_threshold", "v_reset", "tau", "v_leak") if hasattr(node, f)}
        shape = tuple(np.shape(node.r))
        restored = restore_record(_record(node), fields, shape, self.dt, subtract=loop is not None)
        if restored is not None:
            attrs, theta = restored
            gain = None
        else:
            attrs, theta, gain = neuron_from_nir(k, fields, self.dt, f"{k} {name!r}")
        x = self.scaled(x, gain, name, graph)
        # how it ran (training fields) is not the neuron: an imported SNN is for inference
        attrs = {"family": attrs.pop("family"), **{a: v for a, v in attrs.items() if a not in _RUN_FIELDS}}
        return self.add("neuron", [x], attrs, {"threshold": theta}, name, graph)

    def node(self, name, node, srcs):
        """The IR node(s) for the stateless or non-looped NIR node ``name`` read from ``srcs``."""
        k = type(node).__name__
        if k == "Input":
            rec = json.loads(_record(node) or "{}")
            enc = rec.get("encode") or "sequence"
            shape = (None,) + tuple(int(d) for d in node.input_type["input"])
            kind = "sequence" if enc == "sequence" else "static"
            names = sorted(n for n, k in self.flat.kinds.items() if k == "Input")
            index = rec.get("index", names.index(name))  # by name: the order nir.read gives back
            inp = self.g.add("input", [], {"index": int(index), "kind": kind},
                             meta={"shape": shape, "source": SourceLoc(module_path=name)})
            if len(names) > 1:
                inp.meta["input_name"] = name
            return self.add("encode", [inp], {"method": enc}, where=name)
        if k in _REFUSED:
            raise UnsupportedOpError(f"from_nir: node {name!r} is a {k}: {_REFUSED[k]}")
        x = self.summed(srcs, name)
        if k in ("Affine", "Linear"):
            params = {"weight": _arr(node.weight)}
            if k == "Affine":
                params["bias"] = _arr(node.bias)
            return self.add("linear", [x], {}, params, name)
        if k in ("Conv1d", "Conv2d"):
            return self.conv(name, node, x)
        if k in ("SumPool2d", "AvgPool2d"):
            attrs = {"kernel_size": tuple(int(v) for v in np.broadcast_to(node.kernel_size, (2,))),
                     "stride": tuple(int(v) for v in np.broadcast_to(node.stride, (2,))),
                     "padding": tuple(int(v) for v in np.broadcast_to(node.padding, (2,)))}
            return self.add("sumpool2d" if k == "SumPool2d" else "avgpool2d", [x], attrs, where=name)
        if k == "Flatten":
            start, end = int(node.start_dim), int(node.end_dim)
            return self.add("flatten", [x], {"start_dim": start + 1, "end_dim": end + 1 if end >= 0 else end},
                            where=name)
        if k == "Scale":
            return self.add("scale", [x], {}, {"factor": _arr(node.scale)}, name)
        if k == "I":  # an integrator read out: snn(x) is the time average of dt*r*x, its state / T
            return self.add("readout", [self.scaled(x, self.gain(node), name)], {"mode": "mean"}, where=name)
        if k == "LI":
            return self.leaky(name, x, node.tau, node.r, node.v_leak, k, json.loads(_record(node) or "{}"))
        if k == "CubaLIF":  # the synaptic current first, then the membrane reads it (the same step)
            syn = self.leaky(name, x, node.tau_syn, node.w_in, np.zeros_like(node.tau_syn), k)
            lif = self.nir.LIF(tau=node.tau_mem, r=node.r, v_leak=node.v_leak, v_threshold=node.v_threshold,
                               v_reset=node.v_reset)
            return self.neuron(name, lif, syn, None)
        if k in _NEURONS:
            return self.neuron(name, node, x, None)
        if k == "Output":
            return x
        raise UnsupportedOpError(f"from_nir: node {name!r} is a {k}, which snncompile cannot run")

    def gain(self, node):
        g = F32(self.dt) * np.asarray(node.r, F32)
        return None if np.all(g == 1) else g

    def leaky(self, name, x, tau, r, v_leak, what: str, rec: dict | None = None):
        """A leaky integrator without spikes as a synapse filter: ``i <- i - i/tau_s + (r/tau_s) x``."""
        if np.any(np.asarray(v_leak) != 0):
            raise UnsupportedOpError(f"from_nir: {what} {name!r} leaks toward v_leak != 0; snncompile's synapse filter "
                                     "leaks toward 0")
        tau_s = uniform(tau, "tau", f"{what} {name!r}") / self.dt
        if rec and rec.get("op") == "synapse_filter" and np.all(np.asarray(r, F32) == F32(rec["tau"])):
            tau_s, gain = float(rec["tau"]), None  # ours: restore tau exactly
        else:
            gain = np.asarray(r, F32) / F32(tau_s)
            gain = None if np.all(gain == 1) else gain
        return self.add("synapse_filter", [self.scaled(x, gain, name)], {"tau": tau_s}, where=name)

    def conv(self, name, node, x):
        w = np.asarray(node.weight)
        nd = w.ndim - 2
        pad = node.padding
        if isinstance(pad, (str, bytes)):
            pad = pad.decode() if isinstance(pad, bytes) else pad
            total = [0] * nd if pad == "valid" else \
                [int(d) * (k - 1) for d, k in zip(np.broadcast_to(node.dilation, (nd,)), w.shape[2:])]
            if any(t % 2 for t in total):
                raise UnsupportedOpError(f"from_nir: {type(node).__name__} {name!r} has padding 'same' with an even "
                                         "kernel (padded unequally on the two sides), which snncompile's conv lacks")
            pad = [t // 2 for t in total]
        tup = lambda v: tuple(int(i) for i in np.broadcast_to(v, (nd,)))  # noqa: E731
        attrs = {"stride": tup(node.stride), "padding": tup(pad), "dilation": tup(node.dilation),
                 "groups": int(node.groups)}
        params = {"weight": _arr(w), "bias": _arr(node.bias)}
        return self.add("conv1d" if nd == 1 else "conv2d", [x], attrs, params, name)

    def recurrent(self, name, node, x, loop, feedback):
        """A neuron whose own spikes come back (through ``feedback``: None or an Affine/Linear name)."""
        body = Graph(name=f"{name}.body")
        shape = x.shape
        xi = body.add("input", [], {"index": 0, "kind": "sequence"}, meta={"shape": shape})
        yi = body.add("input", [], {"index": 1, "kind": "state"}, meta={"shape": shape})
        fb = yi
        if feedback is not None:
            f = self.flat.nodes[feedback]
            params = {"weight": _arr(f.weight)} | ({"bias": _arr(f.bias)} if hasattr(f, "bias") else {})
            if np.any(np.asarray(getattr(f, "bias", 0)) != 0):
                warnings.warn(f"from_nir: the feedback {type(f).__name__} {feedback!r} has a bias; it is added from the "
                              "first step, as snnTorch's recurrent neurons do (a strict reading of the cycle's delayed "
                              "edge adds it from the second step)", stacklevel=4)
            fb = self.add("linear", [yi], {}, params, feedback, body)
        total = self.add("add", [xi, fb], where=name, graph=body)
        n = self.neuron(name, node, total, loop, body)
        body.add("output", [n], meta={"shape": n.shape})
        kind = "linear" if feedback is not None else "elementwise"
        return self.add("recurrent", [x], {"body": body, "kind": kind}, where=name)


def read_graph(nir, graph, *, T, dt, backend):
    """See ``snncompile.export.nir.from_nir``."""
    from ..convert import choose_backend
    from ..pipeline import PassContext, Pipeline, get_pass
    from ..runtime import SpikingModule, check_steps

    ours = json.loads(_record(graph) or "{}")
    if dt is None and not ours:
        _warn_if_dt_looks_small(graph)
    dt = float(dt if dt is not None else ours.get("dt", 1.0))
    T = check_steps(T if T is not None else int(ours.get("T", 32)), "from_nir: T")
    flat = flatten(nir, graph)
    outputs = [n for n, k in flat.kinds.items() if k == "Output"]
    if len(outputs) != 1:
        raise UnsupportedOpError(f"from_nir: the graph has {len(outputs)} Output nodes ({', '.join(outputs[:4])}); "
                                 "snncompile's SNN has one output — keep one Output (or join them in the graph)")
    loops = find_loops(flat)
    resets = {(lp.reset, lp.integrator) for lp in loops.values()}
    delayed = delayed_edges(flat, resets)
    skip = delayed | resets
    r = _Reader(nir, flat, dt)
    spikes_of = {lp.fire: i for i, lp in loops.items()}  # a loop's Threshold -> its integrator
    done = set()
    for name in order(flat, skip):
        if name in done or name in {lp.reset for lp in loops.values()}:
            continue
        node = flat.nodes[name]
        srcs = [a for a, b in flat.edges if b == name and (a, b) not in skip]
        if name in spikes_of:  # the neuron was made at its integrator
            r.value[name] = r.value[spikes_of[name]]
            continue
        back = [a for a, b in delayed if b == name]
        loop = loops.get(name)
        if back:
            r.value[name] = _recurrent(r, name, node, srcs, loop, back)
            done.update(a for a in back if a not in (name, loop and loop.fire))
        elif loop is not None:
            r.value[name] = r.neuron(name, node, r.summed(srcs, name), loop)
        else:
            r.value[name] = r.node(name, node, srcs)
    # an output not read out by an integrator (spikes, a leaky membrane) is decoded as its time
    # average, as snncompile's readout does: snn(x) is [N, ...], snn.run_sequence(x) [T, N, ...]
    outs = [v if v.op == "readout" else r.add("readout", [v], {"mode": "mean"}, where=n)
            for n, v in ((n, r.value[n]) for n, k in flat.kinds.items() if k == "Output")]
    r.add("output", outs)
    r.g.verify()
    pipe = Pipeline([get_pass("hoist-static"), get_pass("fuse-neuron-sumpool")])
    lowered = pipe.run(r.g, PassContext(T=T))
    return SpikingModule(lowered, T, backend=choose_backend(backend, torch.device("cpu")), pipeline=pipe)


def _warn_if_dt_looks_small(graph) -> None:
    """One warning when a graph of another tool, read with the default dt=1, has resistances or time
    constants of 100 or more: SpikingJelly and snnTorch write r = 1/dt, tau = dt/(1-beta) with
    dt = 1e-4, which dt=1 reads 10,000 times too strong."""
    big = [n for n, v in graph.nodes.items() if any(np.any(np.abs(np.asarray(getattr(v, f, 0), np.float64)) >= 100)
                                                     for f in ("r", "tau", "tau_mem", "tau_syn"))]
    if big:
        warnings.warn(f"from_nir: no dt given and the graph does not say it, so dt=1; but {big[0]!r} has r or tau >= 100, "
                      "as tools that write dt=1e-4 do (SpikingJelly, snnTorch) — pass the graph's step, e.g. "
                      "from_nir(path, dt=1e-4)", stacklevel=3)


def _recurrent(r, name, node, srcs, loop, back):
    """The recurrent container for a neuron with delayed edges ``back`` into it."""
    own = loop.fire if loop is not None else name
    if len(back) != 1:
        raise UnsupportedOpError(f"from_nir: {len(back)} feedback paths come back into {name!r}; snncompile's recurrent "
                                 "container takes one (its own spikes, directly or through one Affine/Linear)")
    fb = back[0]
    if fb == own:
        feedback = None
    elif type(r.flat.nodes[fb]).__name__ in ("Affine", "Linear") and r.flat.ins(fb) == [own] and \
            r.flat.outs(fb) == [name]:
        feedback = fb
    else:
        raise UnsupportedOpError(f"from_nir: the cycle through {fb!r} back into {name!r} is not a neuron's own spikes "
                                 "fed back directly or through one Affine/Linear, the recurrences snncompile runs")
    return r.recurrent(name, node, r.summed(srcs, name), loop, feedback)
