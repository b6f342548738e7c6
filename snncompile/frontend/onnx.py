"""ONNX model -> IR. ``from_onnx(path_or_model)`` gives the same canonical graph the torch.fx
frontend gives for the same network, so every pass runs on it unchanged.

The importer walks the ONNX nodes in order, keeping an environment from value names to graph
tensors (IR Nodes), constants (numpy arrays) and run-time values. A node that reads no graph
tensor is folded to constants (onnx_fold.py); every other node goes to its handler
(onnx_ops.py: layers, onnx_layout.py: layout ops), which returns canonical steps
(canonical.py). Each IR node's source is the ONNX node (``SourceLoc(path=node name,
code=op type)``), so errors and printed graphs point at the ONNX node. Nodes nothing reads are
skipped. Reading a file and refusing bad ones is onnx_checks.py.
"""
from __future__ import annotations

import os
import re
from collections import Counter

import onnx
import torch
from onnx import numpy_helper

from ..errors import UnsupportedOpError
from ..ir import Graph, Node, SourceLoc
from ..ops import infer_shape
from .canonical import PREV
from .onnx_checks import MIN_OPSET, input_specs, inferred_shapes, model_opset, read_model
from .onnx_fold import FOLDED_ONLY, fold
from .onnx_layout import LAYOUT_OPS
from .onnx_node import Dynamic, OnnxImportError, OnnxNode
from .onnx_ops import LAYER_OPS

__all__ = ["from_onnx", "SUPPORTED_OPS", "MIN_OPSET", "OnnxImportError"]

HANDLERS = LAYER_OPS | LAYOUT_OPS
# the ONNX op types a graph tensor may flow through; FOLDED_ONLY ones are evaluated at import time
SUPPORTED_OPS = tuple(sorted(HANDLERS))


def from_onnx(model, *, name: str | None = None) -> Graph:
    """Read an ONNX model into a verified canonical IR Graph.

    Takes a path to a .onnx file (external data files are read from its folder), the file's
    bytes, or an ``onnx.ModelProto``; ``name`` names the graph (default: the file's name, else the
    ONNX graph's).
    Returns the graph ``snncompile.trace`` would give for the same network: one ``input`` node per
    float graph input (the first dim is the batch, symbolic or fixed), one canonical node (or a
    short chain, see canonical.py) per ONNX node, one ``output`` node reading every graph output.
    Weights become float32 parameters; each node's ``meta["shape"]`` is its per-sample shape
    (batch as None) and ``meta["source"]`` the ONNX node (name, op type). Guarantees: emitting the
    graph computes what onnxruntime computes for the model.

    Raises OnnxImportError (a TraceError) for a file that cannot be read (missing, truncated, not
    ONNX, missing external data), an opset older than MIN_OPSET (7), a model without inputs or with
    inputs of unknown per-sample shape, and reshape targets known only at run time;
    UnsupportedOpError naming the node, its op type and the opset for an op (or form of an op)
    the canonical op table cannot express, with the supported ONNX op types listed.
    """
    proto, what = read_model(model)
    opset = model_opset(proto, what)
    # the file's name says more than an exporter's "main_graph"; it names the emitted module's class
    default = os.path.splitext(os.path.basename(what))[0] if os.path.isfile(what) else proto.graph.name
    return _Importer(proto, opset, what).run(name or re.sub(r"\W", "_", default or "onnx"))


def _uses(g: onnx.GraphProto, live: list[bool]) -> Counter:
    """How many inputs of live nodes and graph outputs read each value name."""
    uses = Counter(name for n, keep in zip(g.node, live) if keep for name in n.input if name)
    uses.update(o.name for o in g.output)
    return uses


def _live(g: onnx.GraphProto) -> list[bool]:
    """Which nodes some graph output depends on (the others are skipped: a dead Shape, or an
    op nothing reads, never stops an import)."""
    needed = {o.name for o in g.output}
    live = [False] * len(g.node)
    for k in range(len(g.node) - 1, -1, -1):
        if any(o in needed for o in g.node[k].output):
            live[k] = True
            needed.update(i for i in g.node[k].input if i)
    return live


class _Importer:
    def __init__(self, proto: onnx.ModelProto, opset: int, what: str):
        self.proto, self.opset, self.what = proto, opset, what
        self.graph = Graph(name="onnx")
        self.env: dict = {}
        self.shapes = inferred_shapes(proto)
        self.batch: int | None = None

    def run(self, name: str) -> Graph:
        g = self.proto.graph
        self.graph.name = name
        for t in g.initializer:
            self.env[t.name] = numpy_helper.to_array(t)
        index = 0
        for vname, is_float, shape, batch in input_specs(self.proto, self.what):
            if not is_float:  # a non-float input (a shape, an index): known only at run time
                self.env[vname] = Dynamic(f"graph input {vname!r}")
                continue
            self.batch = batch if index == 0 else self.batch
            meta = {"shape": shape, "dtype": torch.float32, "source": SourceLoc(vname, code="input")}
            self.env[vname] = self.graph.add("input", [], {"index": index}, {}, meta)
            index += 1
        live_nodes = _live(g)
        uses = _uses(g, live_nodes)
        for k, (node, live) in enumerate(zip(g.node, live_nodes)):
            if live:
                self._convert(OnnxNode(node, self.env, uses, self.shapes, self.opset, k, self.batch))
        outs = []
        for o in g.output:
            v = self.env.get(o.name)
            if not isinstance(v, Node):
                raise OnnxImportError(f"from_onnx: output {o.name!r} of {self.what} is not computed from the model's "
                                      "input (a constant or run-time value) — snncompile converts outputs that depend "
                                      "on the input")
            outs.append(v)
        self.graph.add("output", outs, {}, {}, {"shape": outs[0].shape, "source": SourceLoc(g.output[0].name,
                                                                                            code="output")})
        self.graph.verify()
        return self.graph

    def _convert(self, n: OnnxNode) -> None:
        if n.proto.domain not in ("", "ai.onnx"):
            raise self._unknown(n, f"from the {n.proto.domain!r} domain")
        ins = [n.value(i) for i in range(len(n.proto.input)) if n.has_input(i)]
        # Shape reads only a graph tensor's (known) shape, so it folds like any constant
        if n.op_type in ("Constant", "Shape", "Size") or not any(isinstance(v, Node) for v in ins):
            for name, v in zip(n.proto.output, fold(n)):
                self.env[name] = v
            return
        handler = HANDLERS.get(n.op_type)
        if handler is None:
            raise self._unknown(n, "")
        result = handler(n)
        results = result if isinstance(result, dict) else {0: result}
        for k, steps in results.items():
            self.env[n.proto.output[k]] = steps if isinstance(steps, Node) else self._add_steps(n, steps, k)

    def _add_steps(self, n: OnnxNode, steps: list, k: int) -> Node:
        """Add a handler's steps; the last one is output ``k``. Its shape is ONNX's where shape
        inference knew it, checked against what the canonical op computes."""
        prev = None
        for j, (op, ins, attrs, params) in enumerate(steps):
            ins = [prev if i is PREV else i for i in ins]
            meta = {"source": SourceLoc(n.name, code=n.op_type), "dtype": torch.float32}
            node = self.graph.add(op, ins, attrs, params, meta)
            try:
                computed = infer_shape(node, [i.shape for i in ins])
            except Exception as e:
                raise n.unsupported(f"becomes {op} {attrs}, which cannot run on {[i.shape for i in ins]} "
                                    f"({type(e).__name__}: {e})", "this form of the op is not supported") from None
            onnx_shape = n.out_shape(k) if j == len(steps) - 1 else None
            if onnx_shape is not None and computed is not None and tuple(onnx_shape) != tuple(computed):
                raise n.unsupported(f"gives {_fmt(onnx_shape)} in ONNX, but its canonical form ({op}) gives "
                                    f"{_fmt(computed)}", "ONNX and torch differ on this form of the op (ceil_mode or "
                                    "pads); export it without them")
            node.meta["shape"] = tuple(onnx_shape) if onnx_shape is not None else computed
            prev = node
        return prev

    def _unknown(self, n: OnnxNode, extra: str) -> UnsupportedOpError:
        domain = f" {extra}" if extra else ""
        return UnsupportedOpError(
            f"from_onnx: node {n.name!r} is a {n.op_type}{domain} (opset {self.opset}), which snncompile has no "
            f"canonical op for — supported ONNX op types: {', '.join(SUPPORTED_OPS)} (and, on constants and shapes "
            f"only, evaluated at import time: {', '.join(op for op in FOLDED_ONLY if op not in HANDLERS)}); replace that layer in the model (or export "
            "the part before it)")


def _fmt(shape) -> str:
    return "[" + ",".join("N" if d is None else str(d) for d in shape) + "]"

