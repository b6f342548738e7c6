"""Weightless snapshots of graphs and pipelines: what an SNN keeps of its pipeline's stages (they
print and diff like the originals but hold no weights), and a pipeline read back from a file."""
from __future__ import annotations

import copy

import torch

from .ir import Graph, Node
from .pipeline import Pipeline, parse_pipeline

__all__ = ["light_graph", "light_pipeline", "PipelineRecord", "label"]


def label(v) -> str:
    """The name a value is kept as where only its name is (a callable in a stage: it prints the same)."""
    return getattr(v, "__qualname__", None) or getattr(v, "name", None) or type(v).__name__


def _light(v):
    if isinstance(v, torch.Tensor):
        return v.detach().clone() if v.numel() <= 1 else torch.empty(v.shape, dtype=v.dtype, device="meta")
    if isinstance(v, Graph):
        return light_graph(v)
    if isinstance(v, dict):
        return {k: _light(e) for k, e in v.items()}
    if type(v) in (list, tuple):
        return type(v)(_light(e) for e in v)
    return label(v) if callable(v) and not isinstance(v, type) else v


def light_graph(g: Graph) -> Graph:
    """``g`` without weights (bigger tensors become shape-only meta tensors, callables their names):
    it prints and diffs like ``g`` but does not run."""
    mapping: dict[int, Node] = {}
    for n in g.nodes:
        mapping[id(n)] = Node(n.id, n.op, [mapping[id(i)] for i in n.inputs], _light(n.attrs),
                              {k: _light(t) for k, t in n.params.items()}, _light(n.meta))
    out = Graph(mapping.values(), g.name)
    out._next_id = max(g._next_id, out._next_id)
    return out


def light_pipeline(p, before_lowering: Graph | None = None):
    """A copy of pipeline ``p`` whose stages hold no weights (``stage()``, ``diff()`` work as before)."""
    light = copy.copy(p)
    light.passes = list(getattr(p, "passes", []))
    light.stages = [(name, light_graph(g)) for name, g in getattr(p, "stages", [])]
    light.before_lowering = before_lowering if before_lowering is not None else getattr(p, "before_lowering", None)
    return light


class PipelineRecord(Pipeline):
    """A pipeline loaded from a file: stages print and diff; passes parsed again when known here."""

    def __init__(self, spec: str, stages, timings, before_lowering=None):
        super().__init__((), print_after=(), dump_dir="")
        self.spec, self.stages, self.timings, self.before_lowering = spec, stages, timings, before_lowering
        try:
            self.passes = parse_pipeline(spec) if spec else []
        except Exception:  # a user's pass this process has not registered
            self.passes = []

    def __str__(self) -> str:
        return super().__str__() if self.passes else self.spec
