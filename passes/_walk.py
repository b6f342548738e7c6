"""Graph walks the standard passes share (not a pass itself)."""
from __future__ import annotations

from snncompile.ir import Graph, Node

__all__ = ["single_user", "SHAPE_OPS", "LINEAR_OPS", "WEIGHTED_OPS", "POSITIVE_HOMOGENEOUS_OPS"]

SHAPE_OPS = ("flatten", "reshape", "dropout", "identity")
LINEAR_OPS = ("avgpool2d", "sumpool2d", "adaptive_avgpool2d") + SHAPE_OPS
WEIGHTED_OPS = ("conv1d", "conv2d", "linear")
# f(c*x) = c*f(x) for c > 0
POSITIVE_HOMOGENEOUS_OPS = ("relu", "maxpool2d") + LINEAR_OPS


def single_user(graph: Graph, node: Node) -> Node | None:
    """The one node reading ``node``, or None when zero or several read it."""
    users = graph.users(node)
    return users[0] if len(users) == 1 else None
