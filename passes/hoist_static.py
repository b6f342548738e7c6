"""hoist-static: what depends only on the static input runs once, not T times.

Requires: direct ``encode`` nodes after the inputs. Guarantees: direct encodings are removed;
every op whose inputs are all static runs on ``[N, ...]``; a neuron reading a static value gets
``input_kind="static"`` (it reads the current once and writes T steps); any other op that mixes a
static value with a sequence reads it through ``repeat_time``. The function computed is unchanged.
"""
from __future__ import annotations

from snncompile.ir import Graph
from snncompile.ops import has_trait
from snncompile.pipeline import PassContext, register_pass

__all__ = ["HoistStatic"]


@register_pass("hoist-static")
class HoistStatic:
    """No options."""

    lowering = True  # runtime-only: the graph before it is what exporters and analyses read

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        for enc in list(graph.find("encode")):
            if enc.attrs.get("method", "direct") == "direct":
                graph.bypass(enc)
        static = {n.id for n in graph.inputs if n.attrs.get("kind", "static") == "static"}
        for n in list(graph.nodes):
            if n.op in ("input", "output"):
                continue
            ins_static = [i.id in static for i in n.inputs]
            if has_trait(n, "neuron"):
                if ins_static[0]:
                    n.attrs["input_kind"] = "static"
                continue
            if n.op in ("encode",):
                continue
            # a stateful op (recurrent container, synapse filter) needs its T steps even from a static input
            if all(ins_static) and n.op not in ("readout", "repeat_time") and not has_trait(n, "stateful"):
                static.add(n.id)
                n.meta["static"] = True  # runs once on [N, ...]; read by benchmarks and tools
                continue
            for i in [i for i, s in zip(n.inputs, ins_static) if s]:
                rep = graph.insert_before(n, "repeat_time", [i], meta={"shape": i.shape, "source": i.source})
                graph.replace_all_uses(i, rep, readers=[n])
        return graph
