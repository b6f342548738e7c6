"""Bad ONNX input: each is a snncompile error whose message says what was found (naming the file
or the ONNX node, its op type and the opset) and what to do."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_cases import make_model, rand

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper as h  # noqa: E402

from snncompile.errors import ConfigError, SnnCompileError, UnsupportedOpError  # noqa: E402
from snncompile.frontend.onnx import MIN_OPSET, SUPPORTED_OPS, OnnxImportError, from_onnx  # noqa: E402

I64 = np.int64


def _conv_model():
    return make_model([h.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], name="conv0"),
                       h.make_node("Relu", ["c"], ["y"], name="relu0")], (1, 8, 8), inits={"W": rand(4, 1, 3, 3)})


def _raises(model, cls, *words):
    with pytest.raises(cls) as e:
        from_onnx(model)
    assert isinstance(e.value, SnnCompileError)
    for w in words:
        assert w in str(e.value), str(e.value)
    return str(e.value)


def test_truncated_file(tmp_path):
    data = _conv_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    _raises(path, OnnxImportError, str(path), "not a readable ONNX model", "truncated")


@pytest.mark.parametrize("content", [b"hello, this is not a network\n" * 4, b"", b"\x80\x02}q\x00."])
def test_not_an_onnx_file(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    msg = _raises(path, OnnxImportError, str(path))
    assert "not a readable ONNX model" in msg or "is not an ONNX model" in msg


def test_missing_file_and_wrong_argument_type(tmp_path):
    _raises(str(tmp_path / "nope.onnx"), OnnxImportError, "no file", "nope.onnx")
    _raises(12, ConfigError, "expected a .onnx path")


def test_unknown_op_names_node_op_opset_and_the_supported_list():
    model = make_model([h.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3]),
                        h.make_node("Sigmoid", ["c"], ["y"], name="gate")], (1, 8, 8), inits={"W": rand(4, 1, 3, 3)})
    msg = _raises(model, UnsupportedOpError, "'gate'", "Sigmoid", "opset 13", "supported ONNX op types")
    for op in ("Conv", "Gemm", "Relu", "Reshape", "MaxPool", "Split", "Transpose"):
        assert op in msg and op in SUPPORTED_OPS


def test_op_of_another_domain_is_unknown():
    model = make_model([h.make_node("Gelu", ["x"], ["y"], domain="com.microsoft", name="g")], (4,),
                       opsets={"com.microsoft": 1})
    _raises(model, UnsupportedOpError, "'g'", "Gelu", "com.microsoft")


def test_reshape_to_a_shape_given_at_run_time():
    shape_in = h.make_tensor_value_info("shape", TensorProto.INT64, [3])
    model = make_model([h.make_node("Reshape", ["x", "shape"], ["y"], name="r")], (4, 6), extra_inputs=[shape_in])
    _raises(model, OnnxImportError, "Reshape node 'r'", "graph input 'shape'", "known only at run time")


def test_reshape_with_batch_arithmetic_is_refused():
    nodes = [h.make_node("Shape", ["x"], ["sh"]), h.make_node("Gather", ["sh", "zero"], ["n"]),
             h.make_node("Mul", ["n", "two"], ["n2"]), h.make_node("Unsqueeze", ["n2", "ax"], ["n3"]),
             h.make_node("Concat", ["n3", "m1"], ["t"], axis=0), h.make_node("Reshape", ["x", "t"], ["y"], name="r")]
    inits = {"zero": np.array(0, I64), "two": np.array(2, I64), "ax": np.array([0], I64), "m1": np.array([-1], I64)}
    _raises(make_model(nodes, (4, 6), inits=inits), UnsupportedOpError, "Reshape node 'r'", "batch size")


def test_missing_external_data_file(tmp_path):
    model = _conv_model()
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    assert from_onnx(path).find("conv2d")  # it reads when the data file is there
    (tmp_path / "weights.bin").unlink()
    _raises(path, OnnxImportError, "external data file 'weights.bin'", "'W'")


def test_in_memory_model_with_external_data(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save(_conv_model(), str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    _raises(onnx.load(str(path), load_external_data=False), OnnxImportError, "external data", ".onnx path")


def test_opset_too_old():
    model = make_model([h.make_node("Relu", ["x"], ["y"])], (4,), opset=6)
    _raises(model, OnnxImportError, "opset 6", f"opset {MIN_OPSET} and newer", "convert_version")


def test_model_without_inputs():
    const = h.make_node("Constant", [], ["y"], value=onnx.numpy_helper.from_array(rand(3)))
    graph = h.make_graph([const], "g", [], [h.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    _raises(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)]), OnnxImportError, "no float inputs")


def test_input_with_symbolic_spatial_dims():
    model = make_model([h.make_node("Relu", ["x"], ["y"])], ("H", 4))
    _raises(model, OnnxImportError, "input 'x'", "[N,?,4]", "fixed")


def test_output_that_does_not_depend_on_the_input():
    model = make_model([h.make_node("Relu", ["x"], ["y"]), h.make_node("Identity", ["k"], ["z"])], (4,), ("y", "z"),
                       inits={"k": rand(4)})
    _raises(model, OnnxImportError, "output 'z'", "not computed from the model's input")


def _one(op, shape, inputs=("x",), inits=None, opset=13, **attrs):
    return make_model([h.make_node(op, list(inputs), ["y"], name="n", **attrs)], shape, inits=inits, opset=opset)


@pytest.mark.parametrize("model, words", [
    (lambda: _one("Cast", (4,), to=TensorProto.INT64), ["Cast node 'n'", "INT64"]),
    (lambda: _one("Gemm", (6,), ("x", "B"), {"B": rand(6, 4)}, transA=1), ["Gemm node 'n'", "transA=1"]),
    (lambda: _one("Flatten", (3, 4), axis=0), ["Flatten node 'n'", "axis=0"]),
    (lambda: _one("Flatten", (3, 4, 4), axis=2), ["axis=2", "fold into the batch"]),
    (lambda: _one("Transpose", (3, 4), perm=[1, 0, 2]), ["Transpose node 'n'", "perm=[1, 0, 2]"]),
    (lambda: _one("Reshape", (4, 6), ("x", "s"), {"s": np.array([-1, 8], I64)}), ["Reshape node 'n'", "batch"]),
    (lambda: _one("Reshape", (4, 6), ("x", "s"), {"s": np.array([6, 4, 6], I64)}), ["first dim 6 is not the batch"]),
    (lambda: _one("Add", (4,), ("x", "k"), {"k": rand(4)}), ["Add node 'n'", "bias of the Conv/Gemm/MatMul"]),
    (lambda: _one("Concat", (4,), ("x", "x"), axis=0), ["Concat node 'n'", "batch dim"]),
    (lambda: _one("Split", (4,), axis=0), ["Split node 'n'", "batch dim"]),
    (lambda: _one("MaxPool", (2, 8, 8), kernel_shape=[2, 2], pads=[0, 0, 1, 1]), ["MaxPool node 'n'", "asymmetric"]),
    (lambda: _one("Mul", (4,), ("x", "k"), {"k": rand(4)}), ["Mul node 'n'", "shape [4]"]),
    (lambda: _one("Mul", (4,), ("x", "x")), ["multiplies two graph tensors"]),
    (lambda: _one("Pad", (2, 4, 4), ("x", "p"), {"p": np.array([0, 1, 0, 0, 0, 1, 0, 0], I64)}), ["channel dim"]),
    (lambda: _one("Conv", (1, 4, 4, 4, 4), ("x", "W"), {"W": rand(2, 1, 3, 3, 3, 3)}, kernel_shape=[3, 3, 3, 3]),
     ["4-D"]),
    (lambda: _one("MatMul", (6,), ("x", "x")), ["MatMul node 'n'", "two graph tensors"]),
    (lambda: _one("BatchNormalization", (3, 2, 2), ("x", "s", "s", "s", "s"), {"s": np.ones(3, np.float32)},
                  opset=15, training_mode=1), ["training mode"]),
    (lambda: _one("ReduceMean", (3, 4, 4), axes=[1]), ["ReduceMean node 'n'", "global average pool"]),
], ids=["cast_to_int", "gemm_transA", "flatten_axis0", "flatten_axis2_channels", "transpose_batch", "reshape_mixes_batch",
        "reshape_literal_batch", "add_constant_without_layer", "concat_axis0", "split_axis0", "maxpool_asym",
        "mul_per_channel", "mul_two_tensors", "pad_channels", "conv4d", "matmul_two_tensors", "bn_training",
        "reducemean_channels"])
def test_forms_the_op_table_cannot_express(model, words):
    _raises(model(), UnsupportedOpError, *words)


def test_printed_graph_and_errors_point_at_the_onnx_node():
    graph = from_onnx(_conv_model())
    conv = graph.find("conv2d")[0]
    assert (conv.source.module_path, conv.source.code) == ("conv0", "Conv")
    assert "# conv0  [N,4,6,6]" in conv.format() and conv.describe() == f"node %{conv.id} conv2d (conv0)"
