"""Graph walks the standard passes share (not a pass itself)."""
from __future__ import annotations

from snncompile.errors import UnsupportedOpError
from snncompile.ir import Graph, Node

__all__ = ["refuse_non_relu_activations", "single_user", "is_relu_like", "ceiling_of"]


def is_relu_like(n: Node) -> bool:
    """A ReLU, or a clamp whose floor is 0 (ReLU6, Hardtanh(0, c), clamp(0, c)): a ReLU with a
    ceiling, which a neuron rate-codes (its rate saturates at one spike per step). A clamp with no
    floor (``torch.clamp(x, max=c)``) is not an activation."""
    if n.op == "relu":
        return True
    lo = n.attrs.get("min") if n.op == "clamp" else None
    return lo is not None and float(lo) == 0.0


def ceiling_of(n: Node):
    """The ceiling of a ReLU-like node: None for a ReLU, else a float or (after normalize) the
    per-channel tensor ``ceiling`` parameter."""
    if n.op != "clamp":
        return None
    return n.params["ceiling"] if "ceiling" in n.params else n.attrs.get("max")


def single_user(graph: Graph, node: Node) -> Node | None:
    """The one node reading ``node``, or None when zero or several read it."""
    users = graph.users(node)
    return users[0] if len(users) == 1 else None


def refuse_non_relu_activations(graph: Graph, pass_name: str) -> None:
    """Raise UnsupportedOpError naming the first activation an IF neuron cannot rate-code: an
    opaque node the frontend marked as a known activation (``activation="gelu"``, ...), or a
    clamp whose floor is not 0. The message also counts the graph's other ops that would stop
    the conversion (opaque calls: layer norms, attention, ...) and names the first few, so a user
    sees the whole job at once."""
    for n in graph.nodes:
        if n.op == "opaque" and n.attrs.get("activation"):
            what = n.attrs.get("name") or n.attrs["activation"]
            raise UnsupportedOpError(
                f"{pass_name}: {n.describe()} is the activation {what}, which an IF neuron cannot "
                "represent (IF neurons rate-code ReLU) — replace it with nn.ReLU and retrain or fine-tune"
                + _others(graph, n))
        if n.op == "clamp" and (n.attrs.get("min") or 0.0) != 0.0:
            raise UnsupportedOpError(f"{pass_name}: {n.describe()} clamps below at {n.attrs.get('min')}; "
                                     "only ReLU-like activations (min 0) become IF neurons — use ReLU"
                                     + _others(graph, n))


def _others(graph: Graph, first: Node, shown: int = 3) -> str:
    """``; the model has 12 more ops that do not convert: LayerNorm (features.1.0.block.2), ...``."""
    rest = [n for n in graph.nodes if n is not first and n.op == "opaque"]
    if not rest:
        return ""
    names = [f"{n.attrs.get('name') or n.attrs.get('activation') or 'opaque'}"
             + (f" ({n.source.module_path})" if n.source is not None and n.source.module_path else "")
             for n in rest[:shown]]
    more = f", and {len(rest) - shown} more" if len(rest) > shown else ""
    verb = "ops that do" if len(rest) > 1 else "op that does"
    return (f"; the model has {len(rest)} more {verb} not convert: "
            + ", ".join(names) + more)
