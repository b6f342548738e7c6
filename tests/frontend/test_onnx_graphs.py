"""ONNX graphs built with onnx.helper (forms torch.onnx.export does not write): each becomes the
expected canonical ops, and the emitted module matches onnxruntime (max abs diff <= 1e-4)."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_cases import check_ort, make_model, ops, rand, x_in

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper as h  # noqa: E402

I64 = np.int64


def _gemm():
    return make_model([h.make_node("Gemm", ["x", "B", "C"], ["y"], transB=0, alpha=0.5, beta=2.0)], (6,),
                      inits={"B": rand(6, 4), "C": rand(1, 4, seed=2)}), (3, 6), ["linear"]


def _gemm_scalar_c():
    return make_model([h.make_node("Gemm", ["x", "B", "C"], ["y"], transB=1, alpha=1.5, beta=-1.0)], (6,),
                      inits={"B": rand(4, 6), "C": np.array([0.25], np.float32)}), (3, 6), ["linear"]


def _clip_attrs(opset, lo, hi, want):
    kw = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
    return lambda: (make_model([h.make_node("Clip", ["x"], ["y"], **kw)], (3, 4, 4), opset=opset), (2, 3, 4, 4), want)


def _clip_inputs(lo, hi, want):
    inits = {k: np.array(v, np.float32) for k, v in (("lo", lo), ("hi", hi)) if v is not None}
    ins = ["x", "lo" if lo is not None else "", "hi" if hi is not None else ""]
    return lambda: (make_model([h.make_node("Clip", ins, ["y"])], (3, 4, 4), inits=inits), (2, 3, 4, 4), want)


def _conv(pads=None, auto_pad=None, strides=(1, 1), size=9):
    kw = {"pads": pads} if pads else {"auto_pad": auto_pad}
    node = h.make_node("Conv", ["x", "W", "b"], ["y"], kernel_shape=[3, 3], strides=list(strides), **kw)
    want = ["pad", "conv2d"] if pads and pads[:2] != pads[2:] or auto_pad == "SAME_UPPER" else ["conv2d"]
    return lambda: (make_model([node], (3, size, size), inits={"W": rand(4, 3, 3, 3), "b": rand(4, seed=3)}),
                    (2, 3, size, size), want)


def _grouped_conv():
    node = h.make_node("Conv", ["x", "W"], ["y"], kernel_shape=[3, 3], group=2, dilations=[2, 2], pads=[2, 2, 2, 2])
    return make_model([node], (4, 9, 9), inits={"W": rand(6, 2, 3, 3)}), (2, 4, 9, 9), ["conv2d"]


def _matmul_add(rank):
    shape = (5, 6) if rank == 3 else (6,)
    nodes = [h.make_node("MatMul", ["x", "W"], ["m"]), h.make_node("Add", ["m", "b"], ["y"])]
    return lambda: (make_model(nodes, shape, inits={"W": rand(6, 4), "b": rand(4, seed=4)}), (3, *shape), ["linear"])


def _matmul_alone():
    return make_model([h.make_node("MatMul", ["x", "W"], ["y"])], (6,), inits={"W": rand(6, 4)}), (3, 6), ["linear"]


def _flatten_axis2():
    nodes = [h.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3]), h.make_node("Flatten", ["c"], ["y"], axis=2)]
    return make_model(nodes, (3, 6, 6), inits={"W": rand(1, 3, 3, 3)}), (2, 3, 6, 6), ["conv2d", "flatten"]


def _reshape(target):
    return lambda: (make_model([h.make_node("Reshape", ["x", "s"], ["y"])], (4, 6), inits={"s": np.array(target, I64)}),
                    (3, 4, 6), ["reshape"])


def _split_concat(opset):
    if opset < 13:
        split = [h.make_node("Split", ["x"], ["a", "b"], axis=1, split=[1, 3])]
        inits = {}
    elif opset < 18:
        split, inits = [h.make_node("Split", ["x", "parts"], ["a", "b"], axis=1)], {"parts": np.array([1, 3], I64)}
    else:
        split, inits = [h.make_node("Split", ["x"], ["a", "b"], axis=-3, num_outputs=2)], {}
    nodes = split + [h.make_node("Relu", ["b"], ["rb"]), h.make_node("Concat", ["rb", "a"], ["y"], axis=1)]
    return lambda: (make_model(nodes, (4, 3, 3), inits=inits, opset=opset), (2, 4, 3, 3), ["slice", "slice", "relu", "cat"])


def _channel_shuffle():
    nodes = [h.make_node("Reshape", ["x", "s1"], ["r"]), h.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
             h.make_node("Reshape", ["t", "s2"], ["y"])]
    inits = {"s1": np.array([0, 2, 3, 4, 4], I64), "s2": np.array([-1, 6, 4, 4], I64)}
    return make_model(nodes, (6, 4, 4), inits=inits), (2, 6, 4, 4), ["reshape", "permute", "reshape"]


def _avgpool(count_include_pad, ceil_mode, pads=(1, 1, 1, 1)):
    node = h.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=list(pads),
                       count_include_pad=count_include_pad, ceil_mode=ceil_mode)
    want = ["pad", "avgpool2d"] if pads[:2] != pads[2:] else ["avgpool2d"]
    return lambda: (make_model([node], (2, 8, 8)), (2, 2, 8, 8), want)


def _maxpool(ceil_mode, dilations=(1, 1)):
    node = h.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                       dilations=list(dilations), ceil_mode=ceil_mode)
    return lambda: (make_model([node], (2, 8, 8), opset=12), (2, 2, 8, 8), ["maxpool2d"])


def _conv1d_maxpool():
    nodes = [h.make_node("Conv", ["x", "W", "b"], ["c"], kernel_shape=[3], pads=[1, 1]),
             h.make_node("Relu", ["c"], ["r"]), h.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2], strides=[2])]
    return make_model(nodes, (3, 20), inits={"W": rand(4, 3, 3), "b": rand(4, seed=5)}), (2, 3, 20), \
        ["conv1d", "relu", "reshape", "maxpool2d", "reshape"]


def _avgpool1d_asym():
    node = h.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3], strides=[2], pads=[0, 1], count_include_pad=1)
    return make_model([node], (3, 10)), (2, 3, 10), ["pad", "reshape", "avgpool2d", "reshape"]


def _batchnorm(opset):
    node = h.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)
    inits = {"s": rand(3) + 1, "b": rand(3, seed=2), "m": rand(3, seed=3), "v": np.abs(rand(3, seed=4)) + 0.5}
    return lambda: (make_model([node], (3, 5, 5), inits=inits, opset=opset), (2, 3, 5, 5), ["batchnorm"])


def _global_pools(opset):
    axes = {"axes": [2, 3]} if opset < 18 else {}
    ins = ["r"] if opset < 18 else ["r", "ax"]
    inits = {} if opset < 18 else {"ax": np.array([-2, -1], I64)}
    nodes = [h.make_node("GlobalAveragePool", ["x"], ["g"]), h.make_node("Relu", ["x"], ["r"]),
             h.make_node("ReduceMean", ins, ["y"], keepdims=0, **axes)]
    return lambda: (make_model(nodes, (3, 4, 4), ("g", "y"), inits=inits, opset=opset), (2, 3, 4, 4),
                    ["adaptive_avgpool2d", "relu", "adaptive_avgpool2d", "reshape"])


def _scales_and_bias():
    nodes = [h.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[1, 1]), h.make_node("Sub", ["c", "k"], ["s"]),
             h.make_node("Mul", ["two", "s"], ["m"]), h.make_node("Div", ["m", "four"], ["y"])]
    inits = {"W": rand(4, 3, 1, 1), "k": rand(1, 4, 1, 1, seed=6), "two": np.array(2.0, np.float32),
             "four": np.array([4.0], np.float32)}
    return make_model(nodes, (3, 5, 5), inits=inits), (2, 3, 5, 5), ["conv2d", "mul_const", "mul_const"]


def _pad_residual():
    nodes = [h.make_node("Pad", ["x", "p"], ["pd"], mode="constant"),
             h.make_node("Conv", ["pd", "W"], ["c"], kernel_shape=[3, 3]), h.make_node("Add", ["c", "x"], ["y"])]
    inits = {"p": np.array([0, 0, 1, 0, 0, 0, 1, 2], I64), "W": rand(3, 3, 3, 3, scale=0.3)}
    return make_model(nodes, (3, 6, 6), inits=inits), (2, 3, 6, 6), ["pad", "conv2d", "add"]


def _shape_chain():
    nodes = [h.make_node("Shape", ["x"], ["sh"]), h.make_node("Gather", ["sh", "zero"], ["n"], axis=0),
             h.make_node("Unsqueeze", ["n", "ax"], ["n1"]), h.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             h.make_node("Reshape", ["x", "target"], ["y"])]
    inits = {"zero": np.array(0, I64), "ax": np.array([0], I64), "minus1": np.array([-1], I64)}
    return make_model(nodes, (2, 3, 4), inits=inits), (3, 2, 3, 4), ["reshape"]


def _slices_and_squeeze():
    nodes = [h.make_node("Slice", ["x", "st", "en", "axs", "stp"], ["s"]),
             h.make_node("Unsqueeze", ["s", "u"], ["us"]), h.make_node("Squeeze", ["us", "u"], ["y"])]
    inits = {"st": np.array([1, 0], I64), "en": np.array([-1, 100], I64), "axs": np.array([1, 3], I64),
             "stp": np.array([1, 2], I64), "u": np.array([2], I64)}
    return make_model(nodes, (4, 3, 6), inits=inits), (2, 4, 3, 6), ["slice", "slice", "reshape", "reshape"]


def _two_outputs_dropout():
    nodes = [h.make_node("Dropout", ["x"], ["d"], ratio=0.3), h.make_node("Identity", ["d"], ["y1"]),
             h.make_node("Relu", ["d"], ["y2"])]
    return make_model(nodes, (5,), ("y1", "y2"), opset=10), (3, 5), ["dropout", "identity", "relu"]


def _min_max():
    nodes = [h.make_node("Max", ["x", "zero"], ["r"]), h.make_node("Min", ["cap", "r"], ["y"])]
    inits = {"zero": np.array(0.0, np.float32), "cap": np.array([0.5], np.float32)}
    return make_model(nodes, (3, 4), inits=inits), (2, 3, 4), ["relu", "clamp"]


def _float_cast():
    nodes = [h.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT), h.make_node("Relu", ["c"], ["y"])]
    return make_model(nodes, (4,)), (3, 4), ["identity", "relu"]


def _maxpool_end_pads():
    """Opset 9 has no ceil_mode: exporters write it as extra end pads."""
    node = h.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1])
    return make_model([node], (2, 7, 7), opset=9), (2, 2, 7, 7), ["maxpool2d"]


CASES = {
    "gemm_transB0_alpha_beta": _gemm, "gemm_scalar_C": _gemm_scalar_c,
    "clip_attrs_opset7": _clip_attrs(7, -0.5, 0.5, ["clamp"]), "clip_attrs_opset10_min_only": _clip_attrs(10, 0.0, None, ["relu"]),
    "clip_inputs_opset13": _clip_inputs(0.0, 6.0, ["clamp"]), "clip_inputs_min_only": _clip_inputs(0.0, None, ["relu"]),
    "clip_inputs_max_only": _clip_inputs(None, 0.3, ["clamp"]),
    "conv_asymmetric_pads": _conv(pads=[0, 1, 2, 1]), "conv_same_upper_stride2": _conv(auto_pad="SAME_UPPER", strides=(2, 2), size=8),
    "conv_valid": _conv(auto_pad="VALID"), "conv_groups_dilations": _grouped_conv,
    "matmul_add": _matmul_add(2), "matmul_add_3d": _matmul_add(3), "matmul_alone": _matmul_alone,
    "flatten_axis2": _flatten_axis2, "reshape_0_and_-1": _reshape([0, -1, 3]), "reshape_-1_first": _reshape([-1, 24]),
    "split_attr_concat": _split_concat(11), "split_input_concat": _split_concat(13),
    "split_num_outputs_concat": _split_concat(18), "channel_shuffle": _channel_shuffle,
    "avgpool_count_pad_ceil": _avgpool(1, 1), "avgpool_exclude_pad_ceil": _avgpool(0, 1),
    "avgpool_asymmetric_pads": _avgpool(1, 0, (0, 1, 2, 1)), "maxpool_pads_ceil": _maxpool(1),
    "maxpool_dilated": _maxpool(0, (2, 2)), "conv1d_maxpool1d": _conv1d_maxpool, "avgpool1d_asymmetric": _avgpool1d_asym,
    "batchnorm_opset9": _batchnorm(9), "batchnorm_opset15": _batchnorm(15),
    "global_pools_opset13": _global_pools(13), "global_pools_opset18": _global_pools(18),
    "sub_bias_mul_div": _scales_and_bias, "pad_conv_residual": _pad_residual, "shape_chain_reshape": _shape_chain,
    "slice_unsqueeze_squeeze": _slices_and_squeeze, "two_outputs_dropout": _two_outputs_dropout,
    "max_min_constants": _min_max, "maxpool_end_pads_as_ceil": _maxpool_end_pads, "float_cast": _float_cast,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hand_built_graph_matches_onnxruntime(case):
    model, shape, want = CASES[case]()
    graph, diff, _ = check_ort(model, x_in(*shape))
    assert ops(graph) == want, graph.format()


def test_folded_bias_is_the_sum_of_both_biases():
    nodes = [h.make_node("Gemm", ["x", "B", "C"], ["g"], transB=1), h.make_node("Add", ["bias2", "g"], ["y"])]
    model = make_model(nodes, (6,), inits={"B": rand(4, 6), "C": rand(4, seed=2), "bias2": rand(4, seed=3)})
    graph, _, _ = check_ort(model, x_in(3, 6))
    (lin,) = graph.find("linear")
    np.testing.assert_allclose(lin.params["bias"].numpy(), rand(4, seed=2) + rand(4, seed=3), rtol=1e-6)


def test_fixed_batch_model_and_literal_batch_in_reshape():
    nodes = [h.make_node("Reshape", ["x", "s"], ["y"])]
    model = make_model(nodes, (4, 6), inits={"s": np.array([2, 24], I64)}, batch=2)
    graph, _, _ = check_ort(model, x_in(2, 4, 6))
    assert graph.find("reshape")[0].attrs["shape"] == (24,)


def test_non_float_input_unused_by_the_network_is_left_out():
    extra = h.make_tensor_value_info("ids", TensorProto.INT64, ["N"])
    model = make_model([h.make_node("Relu", ["x"], ["y"])], (3,), extra_inputs=[extra])
    from snncompile.frontend.onnx import from_onnx
    assert [n.op for n in from_onnx(model).nodes] == ["input", "relu", "output"]
