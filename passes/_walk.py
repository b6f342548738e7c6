"""Graph walks the standard passes share (not a pass itself)."""
from __future__ import annotations

from snncompile.errors import UnsupportedOpError
from snncompile.ir import Graph, Node

__all__ = ["refuse_non_relu_activations", "single_user", "SHAPE_OPS", "LINEAR_OPS", "WEIGHTED_OPS", "POSITIVE_HOMOGENEOUS_OPS"]

SHAPE_OPS = ("flatten", "reshape", "dropout", "identity")
LINEAR_OPS = ("avgpool2d", "sumpool2d", "adaptive_avgpool2d") + SHAPE_OPS
WEIGHTED_OPS = ("conv1d", "conv2d", "linear")
# f(c*x) = c*f(x) for c > 0
POSITIVE_HOMOGENEOUS_OPS = ("relu", "maxpool2d") + LINEAR_OPS


def single_user(graph: Graph, node: Node) -> Node | None:
    """The one node reading ``node``, or None when zero or several read it."""
    users = graph.users(node)
    return users[0] if len(users) == 1 else None


_NON_RELU = ("gelu", "sigmoid", "tanh", "silu", "elu", "leaky_relu", "softplus", "hardswish", "mish", "selu",
             "GELU", "Sigmoid", "Tanh", "SiLU", "ELU", "LeakyReLU", "Softplus", "Hardswish", "Mish", "SELU")


def refuse_non_relu_activations(graph: Graph, pass_name: str) -> None:
    """Raise UnsupportedOpError naming the first activation an IF neuron cannot rate-code."""
    for n in graph.nodes:
        if n.op == "opaque" and any(k in str(n.attrs.get("name", "")) for k in _NON_RELU):
            raise UnsupportedOpError(
                f"{pass_name}: {n.describe()} is the activation {n.attrs['name']}, which an IF neuron cannot "
                "represent (IF neurons rate-code ReLU) — replace it with nn.ReLU and retrain or fine-tune")
        if n.op == "clamp" and (n.attrs.get("min") or 0.0) != 0.0:
            raise UnsupportedOpError(f"{pass_name}: {n.describe()} clamps below at {n.attrs.get('min')}; "
                                     "only ReLU-like activations (min 0) become IF neurons — use ReLU")
