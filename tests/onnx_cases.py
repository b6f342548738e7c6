"""Helpers the ONNX frontend tests share: exporting a torch model (TorchScript or dynamo exporter),
building graphs with onnx.helper, and ``check_ort``: from_onnx -> emit -> run, compared with
onnxruntime on the same inputs (fp32, max abs diff <= 1e-4)."""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from fx_cases import _randomize

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from snncompile import run_graph  # noqa: E402
from snncompile.frontend.onnx import from_onnx  # noqa: E402

TOL = 1e-4


def export(model: nn.Module, x: torch.Tensor, path, opset: int, dynamo: bool, **kw) -> str:
    """Write ``model`` (eval mode) to ``path`` with a dynamic batch dim; returns the path.
    ``dynamo=False`` is the TorchScript exporter, ``True`` the torch.export-based one."""
    model = model.eval()
    path = str(path)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        if dynamo:
            torch.onnx.export(model, (x,), path, dynamo=True, opset_version=opset, input_names=["x"],
                              dynamic_shapes=({0: torch.export.Dim("N")},), **kw)
        else:
            torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset, input_names=["x"],
                              dynamic_axes={"x": {0: "N"}}, **kw)
    return path


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN running stats and affine params (so an untrained BN is not the identity), eval mode."""
    return _randomize(model, seed)


def ort_run(model, *xs: torch.Tensor) -> list[np.ndarray]:
    """onnxruntime's outputs for a path or ModelProto on the given inputs."""
    src = model if isinstance(model, str) else model.SerializeToString()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {k: x.numpy() for k, x in zip(names, xs)})


def check_ort(model, *xs: torch.Tensor, tol: float = TOL):
    """from_onnx -> run the emitted module -> compare every output with onnxruntime's.
    Returns ``(graph, max abs diff, the emitted module's outputs)``."""
    graph = from_onnx(model)
    got = run_graph(graph, *[x.clone() for x in xs])
    got = list(got) if isinstance(got, tuple) else [got]
    want = ort_run(model, *xs)
    assert len(got) == len(want)
    diff = 0.0
    for g, w in zip(got, want):
        assert tuple(g.shape) == w.shape, f"shape {tuple(g.shape)} vs onnxruntime {w.shape}\n{graph}"
        diff = max(diff, float(np.abs(g.numpy() - w).max()))
    assert diff <= tol, f"differs from onnxruntime by {diff}\n{graph}"
    return graph, diff, got


def rand(*shape, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """A deterministic float32 array (weights of hand-built graphs)."""
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def make_model(nodes, x_shape, out_names=("y",), inits: dict | None = None, opset: int = 13, batch="N",
               extra_inputs=(), opsets: dict | None = None) -> onnx.ModelProto:
    """A model from onnx.helper nodes: input ``x`` of per-sample ``x_shape`` (dim 0 = ``batch``),
    float initializers from ``inits`` (numpy arrays; int64 ones stay int64), outputs by name
    with shapes left to inference; ``opsets`` adds other domains' opsets."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *x_shape])] + list(extra_inputs)
    outputs = [helper.make_value_info(o, onnx.TypeProto()) for o in out_names]
    tensors = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    graph = helper.make_graph(nodes, "g", inputs, outputs, tensors)
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(k, v) for k, v in (opsets or {}).items()]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = min(model.ir_version, 8)  # onnxruntime reads IR versions up to its own
    return onnx.shape_inference.infer_shapes(model)


def x_in(*shape, seed: int = 1) -> torch.Tensor:
    """A deterministic input batch."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def ops(graph) -> list[str]:
    """The graph's ops without the input and output nodes."""
    return [n.op for n in graph.nodes if n.op not in ("input", "output")]
