"""Save and load a compiled SNN: one safetensors file, no pickle.

The tensors are stored once each; the metadata holds a JSON document: format and version, T,
backend, readout, options, the graph that runs and the stage before lowering (nodes, ops, attrs,
params by tensor key, meta; body graphs recursively), the pipeline's spec and weightless stages,
and a SHA-256 of every tensor and of the document, all checked before anything is built.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import sys
import tempfile
import warnings

import safetensors.torch
import torch

from .errors import SnnCompileError
from .ir import Graph, Node, SourceLoc
from .neuron_module import backend_for
from .neurons import neuron_families
from .ops import OPS, has_trait
from .snapshots import PipelineRecord, label as _label

__all__ = ["SerializationError", "FORMAT", "VERSION", "save_module", "load_module", "read_file"]

FORMAT, VERSION, _KEY = "snncompile-snn", 1, "snncompile"


class SerializationError(SnnCompileError):
    """An SNN could not be saved, or a file could not be loaded as one (the message names it)."""


class _Tensors:
    """The tensors of one file, each stored once (by dtype, shape and SHA-256 of its bytes)."""

    def __init__(self):
        self.tensors, self.digests, self._by_content = {}, {}, {}

    def put(self, t: torch.Tensor) -> str:
        # a fresh dense copy: an expanded view (stride 0) can pass .contiguous() unchanged
        t = torch.empty(t.shape, dtype=t.dtype).copy_(t.detach().to("cpu"))
        digest = hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
        k = (str(t.dtype), tuple(t.shape), digest)
        if k not in self._by_content:  # a clone: safetensors takes no two views of one storage
            key = self._by_content[k] = f"t{len(self.tensors)}"
            self.tensors[key], self.digests[key] = t, digest
        return self._by_content[k]


def _enc(v, sink: _Tensors, light: bool, where: str):
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v) if math.isfinite(v) else {"$float": repr(float(v))}
    enc = lambda e: _enc(e, sink, light, where)  # noqa: E731
    if isinstance(v, (list, tuple)):
        return [enc(e) for e in v] if isinstance(v, list) else {"$tuple": [enc(e) for e in v]}
    if isinstance(v, dict):
        return {"$dict": [[enc(k), enc(e)] for k, e in v.items()]}
    if isinstance(v, torch.Tensor):
        if v.device.type == "meta" or (light and v.numel() > 1):
            return {"$meta": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
        return {"$tensor": sink.put(v)}
    if isinstance(v, (torch.dtype, torch.device)):
        return {"$dtype": str(v).replace("torch.", "")} if isinstance(v, torch.dtype) else {"$device": str(v)}
    if isinstance(v, SourceLoc):
        return {"$source": [v.module_path, v.file, v.line, v.code]}
    if isinstance(v, Graph):
        return {"$graph": encode_graph(v, sink, light)}
    if light or where.startswith("meta"):
        return _label(v)
    raise SerializationError(f"{where} is a {type(v).__name__} ({_label(v)}), which a saved SNN cannot carry "
                             "(JSON and tensors only, no pickle)")


def encode_graph(g: Graph, sink: _Tensors, light: bool = False) -> dict:
    """``g`` as JSON values, its tensors put into ``sink``; SerializationError naming the node
    that holds something JSON cannot carry (unless ``light``: then it is kept as text)."""
    nodes = []
    for n in g.nodes:
        if n.op == "opaque" and not light:
            raise SerializationError(f"cannot save {n.describe()}: it calls Python code ({_label(n.attrs.get('target'))}"
                                     "), which a saved SNN cannot carry without pickle; express it with ops from the "
                                     "table (snncompile.ops.register_op), or keep this SNN in Python")
        try:
            nodes.append({"id": n.id, "op": n.op, "inputs": [i.id for i in n.inputs],
                          "attrs": {k: _enc(v, sink, light, f"attribute {k!r}") for k, v in n.attrs.items()},
                          "params": {k: _enc(t, sink, light, f"parameter {k!r}") for k, t in n.params.items()},
                          "meta": {k: _enc(v, sink, light, f"meta {k!r}") for k, v in n.meta.items()}})
        except SerializationError as e:
            raise SerializationError(f"cannot save {n.describe()}: {e}") from None
    return {"name": g.name, "next_id": g._next_id, "nodes": nodes}


class _Decoder:
    def __init__(self, file: str, tensors: dict[str, torch.Tensor]):
        self.file, self.tensors, self.used = file, tensors, set()

    def bad(self, what: str) -> SerializationError:
        return SerializationError(f"{self.file}: corrupted: {what}; save the SNN again")

    def value(self, v):
        if isinstance(v, list):
            return [self.value(e) for e in v]
        if not isinstance(v, dict):
            return v
        tag = next((k for k in v if k.startswith("$")), None)
        if tag not in _TAGS:
            raise self.bad(f"unknown value tag {tag!r}")
        return _TAGS[tag](self, v[tag], v)

    def tensor(self, key: str) -> torch.Tensor:
        if key not in self.tensors:
            raise self.bad(f"it refers to a tensor {key!r} it does not hold")
        t = self.tensors[key].clone() if key in self.used else self.tensors[key]  # one object a use
        self.used.add(key)
        return t

    def dtype(self, name) -> torch.dtype:
        if isinstance(getattr(torch, str(name), None), torch.dtype):
            return getattr(torch, name)
        raise self.bad(f"unknown dtype {name!r}")

    def graph(self, d: dict) -> Graph:
        by_id: dict[int, Node] = {}
        for nd in d["nodes"]:
            what = f"{self.file}: node %{nd['id']} {nd['op']}"
            if nd["op"] not in OPS:
                raise SerializationError(f"{what}: this process has not registered the op; register it "
                                         "(snncompile.ops.register_op) before loading")
            if any(i not in by_id for i in nd["inputs"]):
                raise self.bad(f"node %{nd['id']} reads a node that does not precede it")
            node = Node(int(nd["id"]), nd["op"], [by_id[i] for i in nd["inputs"]],
                        *({k: self.value(v) for k, v in nd[f].items()} for f in ("attrs", "params", "meta")))
            if has_trait(node, "neuron") and node.attrs.get("family") not in neuron_families():
                raise SerializationError(f"{what}: this process has not registered neuron family "
                                         f"{node.attrs.get('family')!r}; register it (snncompile.register_family) first")
            by_id[node.id] = node
        g = Graph(by_id.values(), d["name"])
        g._next_id = max(int(d["next_id"]), g._next_id)
        return g


_TAGS = {"$float": lambda d, x, v: float(x), "$tuple": lambda d, x, v: tuple(d.value(e) for e in x),
         "$dict": lambda d, x, v: {d.value(k): d.value(e) for k, e in x}, "$tensor": lambda d, x, v: d.tensor(x),
         "$meta": lambda d, x, v: torch.empty(x, dtype=d.dtype(v.get("dtype")), device="meta"),
         "$dtype": lambda d, x, v: d.dtype(x), "$device": lambda d, x, v: torch.device(x),
         "$source": lambda d, x, v: SourceLoc(*x), "$graph": lambda d, x, v: d.graph(x)}


def save_module(snn, path) -> None:
    """Write SpikingModule ``snn`` to ``path`` (atomically: a failed save leaves no partial file)."""
    name, sink, pipe, sd = os.fspath(path), _Tensors(), snn.pipeline, snn.module.state_dict()
    graph = encode_graph(snn.graph, sink)
    semantic = None if snn.semantic_graph is snn.graph else encode_graph(snn.semantic_graph, sink)
    pipeline = None if pipe is None else {
        "spec": str(pipe), "timings": [[n, float(t)] for n, t in getattr(pipe, "timings", [])],
        "stages": [[n, encode_graph(g, sink, light=True)] for n, g in getattr(pipe, "stages", [])]}
    state = {k: sink.put(v) for k, v in sd.items() if isinstance(v, torch.Tensor)}
    extra = {k: _enc(v, sink, False, f"the state entry {k!r}") for k, v in sd.items() if k not in state}
    device = next((t.device for t in sd.values() if isinstance(t, torch.Tensor)), torch.device("cpu"))
    doc = {"format": FORMAT, "version": VERSION, "snncompile": getattr(sys.modules.get("snncompile"), "__version__", ""),
           "torch": torch.__version__, "T": snn.T, "backend": snn.backend, "readout_mode": snn.readout_mode,
           "device": str(device), "training": snn.training, "trainable": snn.trainable,
           "options": {"max_chunk_bytes": snn.max_chunk_bytes, "allow_nonfinite": snn.allow_nonfinite},
           "graph": graph, "semantic_graph": semantic, "pipeline": pipeline, "state": state, "extra_state": extra,
           "requires_grad": {k: p.requires_grad for k, p in snn.module.named_parameters()}, "sha256": sink.digests}
    text = json.dumps(doc, separators=(",", ":"))
    data = safetensors.torch.save(sink.tensors, metadata={_KEY: text, _KEY + "_sha256": _sha(text.encode())})
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(name)), prefix=".snncompile-", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, name)
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise SerializationError(f"cannot write {name}: {e.strerror or e}; choose a writable path") from None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_file(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The JSON document and the tensors of a file ``save_module`` wrote, every check done."""
    name, foreign = os.fspath(path), "not an SNN saved by snncompile"

    def fail(what: str, todo: str = "; save the SNN again"):
        return SerializationError(f"{name}: {what}{todo}")
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as e:
        raise fail(f"cannot read it ({e.strerror or e})", "; give the path snn.save() wrote") from None
    # zip (PK) and pickle (0x80) first bytes are also valid header lengths: check for the "{"
    if data[8:9] != b"{" and (data[:2] == b"PK" or data[:1] == b"\x80"):
        raise fail(f"{foreign}: a pickle or zip archive (as torch.save writes), which snncompile never loads (a "
                   "pickle can run code)", "; save SNNs with snn.save(path)")
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if not 0 <= n <= len(data) - 8:
        raise fail(f"truncated: {len(data)} bytes, less than its header needs") if data[8:9] in (b"{", b"") else \
            fail(f"{foreign} (nor a safetensors file)", "; snncompile.load reads the files snn.save(path) writes")
    try:
        header = json.loads(data[8:8 + n])
        meta = header.get("__metadata__") or {}
    except (UnicodeDecodeError, ValueError, AttributeError):
        raise fail("corrupted or not a safetensors file: its header is not a JSON object") from None
    if not isinstance(meta, dict) or _KEY not in meta:
        raise fail(f"{foreign}: a safetensors file without snncompile's description (a model's weights? read those "
                   "with safetensors.torch.load_file)", "; save SNNs with snn.save(path)")
    if _sha(str(meta[_KEY]).encode()) != meta.get(_KEY + "_sha256"):
        raise fail("corrupted: the SNN's description does not match its checksum")
    try:
        doc = json.loads(meta[_KEY])
        if doc.get("format") != FORMAT:
            raise ValueError(doc.get("format"))
    except (ValueError, AttributeError):
        raise fail(f"{foreign}: its description is not of format {FORMAT!r}", "") from None
    version = doc.get("version")
    if not isinstance(version, int) or version < 1:
        raise fail(f"corrupted: format version {version!r}")
    if version > VERSION:
        raise fail(f"written by a newer snncompile (file format version {version}; this one reads up to version "
                   f"{VERSION})", ": upgrade snncompile to load it")
    try:
        spans = {k: [8 + n + int(o) for o in v["data_offsets"]] for k, v in header.items() if k != "__metadata__"}
    except (KeyError, TypeError, ValueError):
        raise fail("corrupted: its header lists a tensor without data offsets") from None
    end = max((e for _, e in spans.values()), default=8 + n)
    if end > len(data):
        raise fail(f"truncated: its tensors end at byte {end} but the file has {len(data)} bytes")
    digests = doc.get("sha256")
    if not isinstance(digests, dict) or set(digests) != set(spans):
        raise fail("corrupted: the tensors it holds are not the ones it lists")
    bad = next((k for k, (b, e) in spans.items() if _sha(data[b:e]) != digests[k]), None)
    if bad is not None:
        raise fail(f"corrupted: tensor {bad!r} does not match its checksum")
    try:
        return doc, safetensors.torch.load(data)
    except Exception as e:
        raise fail(f"corrupted: safetensors cannot read it ({e})") from None


def load_module(cls, path, *, device=None, backend: str | None = None):
    """Rebuild the SpikingModule (``cls``) saved at ``path``; see ``snncompile.load``."""
    name = os.fspath(path)
    doc, tensors = read_file(name)
    dec = _Decoder(name, tensors)
    try:
        graph = dec.graph(doc["graph"])
        graph.verify()
        semantic = graph if doc["semantic_graph"] is None else dec.graph(doc["semantic_graph"])
        p = doc["pipeline"]
        pipe = None if p is None else PipelineRecord(p["spec"], [(n, dec.graph(g)) for n, g in p["stages"]],
                                                     [tuple(t) for t in p["timings"]], semantic)
        dev = torch.device(device) if device is not None else _saved_device(doc["device"], name)
        if backend is None:
            backend = backend_for(doc["backend"], dev)
            if backend != doc["backend"]:
                warnings.warn(f"snncompile: {name} was saved with the {doc['backend']!r} backend, which does not run "
                              f"on {dev}; using {backend!r} (pass backend= to choose)", stacklevel=3)
        opts = doc["options"]
        snn = cls(graph, doc["T"], backend=backend, pipeline=pipe,
                  semantic_graph=semantic, keep_stages=True, max_chunk_bytes=opts["max_chunk_bytes"],
                  allow_nonfinite=opts["allow_nonfinite"], trainable=doc["trainable"])
        state = {k: dec.tensor(v) for k, v in doc["state"].items()}
        state.update({k: dec.value(v) for k, v in doc["extra_state"].items()})
        snn.module.load_state_dict(state, strict=True)
        for k, prm in snn.module.named_parameters():
            prm.requires_grad_(bool(doc["requires_grad"].get(k, prm.requires_grad)))
        snn.train(bool(doc["training"]))
    except SerializationError:
        raise
    except SnnCompileError as e:
        raise SerializationError(f"{name}: the saved SNN does not rebuild here: {e}") from e
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
        raise SerializationError(f"{name}: corrupted: {type(e).__name__}: {e}; save the SNN again") from e
    return snn.to(dev)


def _saved_device(saved: str, name: str) -> torch.device:
    if torch.device(saved).type != "cuda" or torch.cuda.is_available():
        return torch.device(saved)
    warnings.warn(f"snncompile: {name} was saved on {saved}, which this machine lacks; loading it on the CPU "
                  "(pass device= to choose)", stacklevel=4)
    return torch.device("cpu")
