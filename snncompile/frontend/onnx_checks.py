"""Reading an ONNX model for the frontend, and refusing what it cannot read with one clear error:
a missing, truncated or non-ONNX file, tensors in a missing external-data file, an opset older
than ``MIN_OPSET``, a graph with no inputs, inputs without a fixed per-sample shape.
"""
from __future__ import annotations

import math
import os
import warnings

import onnx
from onnx import TensorProto, external_data_helper, helper

from ..errors import ConfigError
from .onnx_node import OnnxImportError

__all__ = ["MIN_OPSET", "read_model", "model_opset", "input_specs", "inferred_shapes"]

# onnxruntime guarantees opset 7 and up; before 7, Add/Mul/Gemm broadcast by attributes
MIN_OPSET = 7
_FLOATS = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}


def read_model(model) -> tuple[onnx.ModelProto, str]:
    """``model`` (a path, bytes, or an onnx.ModelProto) -> ``(ModelProto with its external data
    loaded, a name for messages)``. Raises OnnxImportError for a file that is not a readable ONNX
    model (missing, truncated, another format) or whose external data file is missing."""
    if isinstance(model, onnx.ModelProto):
        proto, what, base = model, "the ONNX model", None
    elif isinstance(model, (bytes, bytearray)):
        proto, what, base = _parse(lambda: onnx.load_from_string(bytes(model)), "the ONNX bytes"), "the ONNX bytes", None
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise OnnxImportError(f"from_onnx: no file {path!r} — give the path of a .onnx file")
        what, base = path, os.path.dirname(os.path.abspath(path))
        proto = _parse(lambda: onnx.load(path, load_external_data=False), path)
    else:
        raise ConfigError(f"from_onnx: expected a .onnx path, bytes or an onnx.ModelProto, got {type(model).__name__}")
    if not proto.HasField("graph") or proto.ir_version == 0 or not proto.opset_import:
        raise OnnxImportError(f"from_onnx: {what} is not an ONNX model (no graph, IR version or opset) — give a "
                              "file written by torch.onnx.export or onnx.save")
    _load_external(proto, base, what)
    return proto, what


def _parse(load, what: str) -> onnx.ModelProto:
    try:
        return load()
    except Exception as e:  # protobuf's DecodeError and friends: not a readable ModelProto
        raise OnnxImportError(f"from_onnx: {what} is not a readable ONNX model ({type(e).__name__}: {e}); the file "
                              "may be truncated or in another format (a .pt checkpoint?) — export it again with "
                              "torch.onnx.export") from None


def _load_external(proto: onnx.ModelProto, base: str | None, what: str) -> None:
    """Load tensors kept in external data files, first checking each file is there."""
    g = proto.graph
    every = list(g.initializer) + [a.t for n in g.node for a in n.attribute if a.HasField("t")]
    tensors = [t for t in every if external_data_helper.uses_external_data(t)]
    if not tensors:
        return
    if base is None:
        raise OnnxImportError(f"from_onnx: {what} keeps {len(tensors)} tensor(s) (e.g. {tensors[0].name!r}) in external "
                              "data files, which an in-memory model cannot find — give the .onnx path instead")
    for t in tensors:
        loc = {e.key: e.value for e in t.external_data}.get("location", "")
        if not os.path.isfile(os.path.join(base, loc)):
            raise OnnxImportError(f"from_onnx: {what} keeps tensor {t.name!r} in the external data file {loc!r}, which "
                                  f"is not in {base} — copy it next to the .onnx file")
    try:
        external_data_helper.load_external_data_for_model(proto, base)
    except Exception as e:
        raise OnnxImportError(f"from_onnx: {what}: could not read its external data ({type(e).__name__}: {e}) — the "
                              "data file may be truncated; export the model again") from None


def model_opset(proto: onnx.ModelProto, what: str) -> int:
    """The model's ai.onnx opset; OnnxImportError below MIN_OPSET."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise OnnxImportError(f"from_onnx: {what} imports no standard ONNX opset (only "
                              f"{', '.join(o.domain for o in proto.opset_import)}) — snncompile reads ai.onnx ops")
    if opset < MIN_OPSET:
        raise OnnxImportError(f"from_onnx: {what} uses opset {opset}; snncompile reads opset {MIN_OPSET} and newer — "
                              f"upgrade it: onnx.version_converter.convert_version(model, {max(MIN_OPSET, 13)})")
    return opset


def input_specs(proto: onnx.ModelProto, what: str) -> list[tuple[str, bool, tuple | None, int | None]]:
    """The graph inputs that are not initializers: ``(name, is_float, per-step shape with the
    batch as None, the fixed batch size or None)``. OnnxImportError when there are none, or a
    float input lacks a batch dim or a fixed per-sample shape."""
    inits = {t.name for t in proto.graph.initializer}
    specs, cast = [], set()
    for vi in proto.graph.input:
        if vi.name in inits:
            continue  # old exporters list initializers as inputs too: they are weights
        tt = vi.type.tensor_type
        if tt.elem_type not in _FLOATS:
            specs.append((vi.name, False, None, None))
            continue
        if tt.elem_type != TensorProto.FLOAT:
            cast.add(TensorProto.DataType.Name(tt.elem_type).lower())
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim] if tt.HasField("shape") else None
        if dims is None or len(dims) < 2 or any(d is None for d in dims[1:]):
            shown = "unknown" if dims is None else "[" + ",".join(
                ("N" if k == 0 else "?") if d is None else str(d) for k, d in enumerate(dims)) + "]"
            raise OnnxImportError(f"from_onnx: input {vi.name!r} of {what} has shape {shown}; snncompile needs a batch "
                                  "dim first and fixed sizes for the others — export with a fixed-size example "
                                  "(only the batch may be dynamic)")
        specs.append((vi.name, True, (None,) + tuple(dims[1:]), dims[0] or None))
    if not any(f for _, f, _, _ in specs):
        raise OnnxImportError(f"from_onnx: {what} has no float inputs (graph inputs: "
                              f"{[s[0] for s in specs] or 'none'}) — a network needs an input tensor to convert")
    if cast:
        warnings.warn(f"from_onnx: {what} computes in {', '.join(sorted(cast))}; snncompile converts it as float32",
                      stacklevel=3)
    return specs


def _without_weights(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its large initializers turned into typed graph inputs: inference needs
    only their shapes, and a model of many megabytes is copied (serialized) by infer_shapes."""
    g = proto.graph
    big = [t for t in g.initializer if math.prod(t.dims) > 64]
    names = {vi.name for vi in g.input}
    extra = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in big if t.name not in names]
    small = [t for t in g.initializer if math.prod(t.dims) <= 64]  # shape constants: data_prop reads them
    graph = helper.make_graph(g.node, g.name, list(g.input) + extra, g.output, small, value_info=g.value_info)
    light = helper.make_model(graph, opset_imports=proto.opset_import, ir_version=proto.ir_version)
    light.functions.extend(proto.functions)
    return light


def inferred_shapes(proto: onnx.ModelProto) -> dict[str, tuple]:
    """Every value's shape from onnx shape inference, batch as None (values whose non-batch
    dims are not all known are left out); empty when inference fails."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_without_weights(proto), strict_mode=False, data_prop=True)
    except Exception:  # a model inference cannot read: shapes then come from the op table
        return {}
    out = {}
    g = inferred.graph
    for vi in list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if len(dims) >= 1 and all(d is not None for d in dims[1:]):
            out[vi.name] = (None,) + tuple(dims[1:])
    return out
