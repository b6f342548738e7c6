"""What an ONNX op handler sees of one node: its attributes, its inputs as graph tensors (IR
Nodes) or constants (numpy arrays), their per-sample shapes, and errors that name the node.

Values in the importer's environment are one of: an IR ``Node`` (a graph tensor computed from
the input), a numpy array (an initializer, a ``Constant``, or folded), or a ``Dynamic`` (known
only at run time: a non-float graph input, or shape arithmetic on the batch size). Shape values
computed from a graph tensor (``Shape(x)``) are numpy *object* arrays whose first entry is
``BATCH``: the batch size, unknown at import time but carried so ``x.view(x.size(0), -1)``
folds to a per-sample reshape.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from onnx import helper

from ..errors import TraceError, UnsupportedOpError
from ..ir import Node

__all__ = ["OnnxImportError", "BATCH", "UNKNOWN", "Dynamic", "OnnxNode", "as_param", "has_marker"]


class OnnxImportError(TraceError):
    """An ONNX model could not be read into the IR (the file, its opset, its inputs, a shape
    known only at run time); node-level gaps are UnsupportedOpError."""


class _Marker:
    """A symbolic entry of a shape value; arithmetic on it gives UNKNOWN (a dim that depends on
    the batch size in a way a per-sample graph cannot express)."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def _unknown(self, *_):
        return UNKNOWN

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _unknown
    __floordiv__ = __rfloordiv__ = __truediv__ = __rtruediv__ = __mod__ = __neg__ = _unknown


BATCH = _Marker("N")
UNKNOWN = _Marker("?")


class Dynamic:
    """A value known only at run time; ``origin`` says where it came from, for the error."""

    def __init__(self, origin: str):
        self.origin = origin

    def __repr__(self) -> str:
        return f"<run-time value from {self.origin}>"


def has_marker(a) -> bool:
    """True for an object array holding BATCH or UNKNOWN (a shape computed from a graph tensor)."""
    return isinstance(a, np.ndarray) and a.dtype == object and any(isinstance(v, _Marker) for v in a.flat)


def as_param(a) -> torch.Tensor:
    """A float32 torch tensor (its own memory) from a numpy constant: a parameter of an IR node."""
    return torch.from_numpy(np.array(a, dtype=np.float32, copy=True))


_MISSING = object()


class OnnxNode:
    """One ONNX node as its handler reads it. ``env`` maps value names to values; ``uses`` counts
    the readers of each value (graph outputs count); ``shapes`` holds ONNX-inferred shapes
    (per-step, batch as None)."""

    def __init__(self, proto, env: dict, uses: dict, shapes: dict, opset: int, index: int, batch: int | None = None):
        self.proto, self.env, self.uses, self.shapes, self.opset = proto, env, uses, shapes, opset
        self.batch = batch  # the inputs' batch size when the model fixes it, else None
        self.op_type = proto.op_type
        # a node without a name (onnx.helper graphs) is named by its first output, which is unique
        self.name = proto.name or (proto.output[0] if proto.output else f"#{index}")
        self.attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}

    # messages -------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"from_onnx: {self.op_type} node {self.name!r}"

    def unsupported(self, what: str, todo: str = "") -> UnsupportedOpError:
        """An UnsupportedOpError ``<where> <what> — <todo>`` to raise."""
        return UnsupportedOpError(f"{self.where} {what}" + (f" — {todo}" if todo else ""))

    # attributes -----------------------------------------------------------------------------
    def attr(self, key: str, default: Any = None) -> Any:
        """The attribute's Python value (bytes as str), or ``default`` when absent."""
        v = self.attrs.get(key, default)
        return v.decode() if isinstance(v, bytes) else v

    def ints(self, key: str, default) -> tuple[int, ...]:
        """An int-list attribute as a tuple (``default`` when absent)."""
        return tuple(int(v) for v in self.attrs.get(key, default))

    # inputs ---------------------------------------------------------------------------------
    def has_input(self, i: int) -> bool:
        """Whether optional input ``i`` is given (an empty name means left out)."""
        return i < len(self.proto.input) and self.proto.input[i] != ""

    def value(self, i: int):
        """The environment's value of input ``i``: a Node, a numpy array or a Dynamic."""
        name = self.proto.input[i]
        if name not in self.env:
            raise TraceError(f"{self.where} reads {name!r}, which no earlier node, initializer or graph input "
                             "defines — the ONNX graph is not topologically sorted or is incomplete (run "
                             "onnx.checker.check_model on it)")
        return self.env[name]

    def is_tensor(self, i: int) -> bool:
        """Whether input ``i`` is a graph tensor (computed from the model's input)."""
        return self.has_input(i) and isinstance(self.value(i), Node)

    def tensor(self, i: int = 0) -> Node:
        """Input ``i`` as a graph tensor; UnsupportedOpError when it is a constant."""
        v = self.value(i)
        if not isinstance(v, Node):
            raise self.unsupported(f"takes a constant (or run-time value) as input {i} ({self.proto.input[i]!r}) "
                                   "where snncompile needs a tensor computed from the model's input")
        return v

    def const(self, i: int, what: str, default: Any = _MISSING) -> np.ndarray:
        """Input ``i`` as a constant numpy array (``default`` when the optional input is left
        out); an error naming ``what`` when it is computed from the input or known only at run time."""
        if not self.has_input(i):
            if default is _MISSING:
                raise self.unsupported(f"has no {what} (input {i})", "the ONNX model is malformed")
            return default
        v = self.value(i)
        if isinstance(v, np.ndarray) and not has_marker(v):
            return v
        if isinstance(v, Node):
            raise self.unsupported(f"computes its {what} from the model's input ({self.proto.input[i]!r} is a graph "
                                   "tensor)", "snncompile needs it to be a constant (an initializer or Constant)")
        origin = v.origin if isinstance(v, Dynamic) else "the batch size"
        raise OnnxImportError(f"{self.where}: its {what} ({self.proto.input[i]!r}) comes from {origin}, known only at "
                              "run time — snncompile needs a constant here; export the model with a fixed value "
                              "(for a reshape: x.flatten(1) or x.view(x.size(0), -1) keep the batch first)")

    def shape(self, i: int = 0) -> tuple[int, ...]:
        """The per-sample shape (no batch dim) of graph-tensor input ``i``."""
        node = self.tensor(i)
        if node.shape is None or any(d is None for d in node.shape[1:]):
            raise self.unsupported(f"reads {self.proto.input[i]!r}, whose shape is not known",
                                   "export the model with fixed (non-batch) input dims")
        return tuple(node.shape[1:])

    # outputs --------------------------------------------------------------------------------
    def used(self, k: int) -> bool:
        """Whether output ``k`` is read by any node or is a graph output."""
        return k < len(self.proto.output) and self.uses.get(self.proto.output[k], 0) > 0

    def out_shape(self, k: int = 0) -> tuple | None:
        """Output ``k``'s shape from ONNX shape inference, batch as None; None when unknown."""
        return self.shapes.get(self.proto.output[k]) if k < len(self.proto.output) else None
