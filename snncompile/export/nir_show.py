"""A NIR graph as text: one line a node (type, shape, the parameters that say what it does), then
the edges, delayed ones marked; ``snncompile inspect file.nir`` prints it."""
from __future__ import annotations

import json

import numpy as np

__all__ = ["format_nir", "inspect_nir_file"]

_SHOWN = ("r", "tau", "v_leak", "v_threshold", "v_reset", "threshold", "scale", "stride", "padding",
          "kernel_size", "groups", "start_dim", "end_dim", "tau_syn", "tau_mem", "w_in", "delay")


def _value(v) -> str:
    a = np.asarray(v)
    if a.dtype.kind in "fiu" and a.size > 1:
        lo, hi = float(a.min()), float(a.max())
        return f"{lo:.8g}" if lo == hi else f"{lo:.8g}..{hi:.8g}"  # 8 digits: a float32 nudge shows
    if a.size == 1 and a.dtype.kind in "fiu":
        return f"{float(a.reshape(-1)[0]):.8g}"
    return str(v)


def _shape(node, key: str, field: str) -> str:
    t = getattr(node, field, None) or {}
    s = t.get(key) if isinstance(t, dict) else None
    return "?" if s is None else "[" + ",".join(str(int(d)) for d in np.asarray(s).reshape(-1)) + "]"


def format_nir(nir, graph) -> str:
    """``graph`` (a nir.NIRGraph) as lines of text; nested graphs are indented under their node."""
    from .nir_structure import delayed_edges, find_loops, flatten

    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    lines = []
    rec = meta.get("snncompile")
    if rec:
        info = json.loads(rec.decode() if isinstance(rec, bytes) else rec)
        lines.append(f"// written by snncompile {info.get('version')}: dt={info.get('dt')} T={info.get('T')} "
                     f"form={info.get('form')}")
        lines.append(f"// conventions: {info.get('conventions')}")
    other = sorted(k for k in meta if k != "snncompile")
    if other:
        lines.append(f"// metadata: {', '.join(other)}")
    _nodes(graph, lines, "", nir)
    try:
        flat = flatten(nir, graph)
        loops = find_loops(flat)
        resets = {(lp.reset, lp.integrator) for lp in loops.values()}
        delayed = delayed_edges(flat, resets) | resets
        why = ""
    except Exception as e:  # an unreadable cycle: show the edges anyway
        delayed, why = set(), f"  (cycles not analysed: {e})"
        flat = None
    edges = flat.edges if flat is not None else graph.edges
    lines.append(f"// {len(edges)} edges (~> carries the previous step's value){why}")
    lines += [f"  {a} {'~>' if (a, b) in delayed else '->'} {b}" for a, b in edges]
    return "\n".join(lines)


def inspect_nir_file(path: str, out=print) -> None:
    """What ``snncompile inspect file.nir`` prints (through ``out``): the file's nodes and edges,
    then the graph snncompile reads from it. ConfigError for a missing or unreadable file; the
    importer's error (after the nodes and edges are printed) for a graph snncompile cannot run."""
    from .nir import from_nir, read_nir_file, require_nir

    nir = require_nir()
    graph = read_nir_file(path, "inspect")
    out(f"// {path}: NIR graph, {len(graph.nodes)} nodes (nir {nir.version})")
    out(format_nir(nir, graph))
    snn = from_nir(graph)
    out(f"// as snncompile reads it (T={snn.T}; the stage before lowering)")
    out(str(snn.semantic_graph))


def _nodes(graph, lines, indent, nir):
    for name, node in graph.nodes.items():
        kind = type(node).__name__
        if isinstance(node, nir.NIRGraph):
            lines.append(f"{indent}{name}: NIRGraph ({len(node.nodes)} nodes)")
            _nodes(node, lines, indent + "  ", nir)
            continue
        params = [f"{f}={_value(getattr(node, f))}" for f in _SHOWN if getattr(node, f, None) is not None]
        w = getattr(node, "weight", None)
        if w is not None:
            params.insert(0, f"weight=f32{list(np.shape(w))}")
        rec = (getattr(node, "metadata", None) or {}).get("snncompile")
        tag = f"  # {json.loads(rec).get('op')}" if isinstance(rec, str) and rec.startswith("{") else ""
        shape = _shape(node, "output", "output_type")
        lines.append(f"{indent}{name}: {kind} {shape} {' '.join(params)}{tag}".rstrip())
