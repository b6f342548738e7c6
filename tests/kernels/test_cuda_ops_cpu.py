"""CUDA neuron kernels' CPU side, no GPU needed: the custom ops' torch path against the reference
(autograd, ``opcheck``, ``torch.compile``), the launcher's input errors, the specialisations and
the parameters handed to a kernel.

The kernels themselves run in test_cuda_kernels.py (host emulation) and test_cuda_gpu.py.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cuda_kernel_cases import BWD_SAMPLE, SPECS, inputs, neuron_spec, pool, rel_err
from snncompile.errors import KernelError
from snncompile.kernels import cuda_launch as cl
from snncompile.kernels import custom_ops as co
from snncompile.kernels.cuda_layout import param_args
from snncompile.kernels.cuda_source import Specialisation, kernel_signature
from snncompile.neurons import NeuronSpec, neuron_families, neuron_reference


@pytest.mark.parametrize("with_v", [False, True])
def test_torch_path_of_the_ops_matches_reference_autograd(with_v):
    for ks in [s for s in BWD_SAMPLE if s.h_dtype == "float32"]:
        spec = neuron_spec(ks, detach=with_v)
        step, k = ((2, 3, 5, 7), 2) if ks.pooled else ((3, 4, 5), None)
        x, th, v = inputs(ks, step, 6, "cpu", with_v)
        x.requires_grad_(), th.requires_grad_()
        s, vo = co.neuron(x, th, spec, 6, v, sumpool=k)
        s_ref, v_ref = neuron_reference(x, th, spec, 6, v)
        s_ref = s_ref if k is None else pool(s_ref, k)
        assert torch.equal(s, s_ref) and torch.equal(vo, v_ref), ks
        grads = torch.autograd.grad(s.float().sum() + (vo * vo).sum(), [x, th])
        grads_ref = torch.autograd.grad(s_ref.float().sum() + (v_ref * v_ref).sum(), [x, th])
        tol = {"float32": 1e-5, "float16": 2e-2, "bfloat16": 1e-1}[ks.dtype]
        assert rel_err(grads[0], grads_ref[0]) < tol and rel_err(grads[1], grads_ref[1]) < 1e-4, ks


def test_custom_ops_opcheck_cpu():
    cfg = co.spec_to_config(NeuronSpec("lif", surrogate="atan", v_init=0.5))
    x, th = torch.randn(5, 3, 4, requires_grad=True), torch.rand(4) + 0.5
    for v in (None, torch.randn(3, 4)):
        torch.library.opcheck(torch.ops.snncompile.neuron_train.default, (x, th, v, cfg, 5, "float32", 0))
    torch.library.opcheck(torch.ops.snncompile.neuron_infer.default, (x.detach(), th, None, cfg, 5, 0))
    cfg = co.spec_to_config(NeuronSpec("signed_if", surrogate="atan"))
    xp = torch.randn(4, 2, 4, 5, 7, requires_grad=True)
    torch.library.opcheck(torch.ops.snncompile.neuron_train.default, (xp, th, None, cfg, 4, "float32", 2))
    torch.library.opcheck(torch.ops.snncompile.neuron_infer.default, (xp.detach(), th, None, cfg, 4, 3))


def test_input_errors_are_kernel_errors():
    spec = NeuronSpec()
    with pytest.raises(KernelError, match="CUDA"):
        cl.run_cupy(torch.randn(4, 2, 3), 1.0, spec)
    with pytest.raises(KernelError, match="float32"):
        cl.prepare(torch.zeros(4, 2, 3, dtype=torch.int32), 1.0, spec, require_cuda=False)
    with pytest.raises(KernelError, match="per-channel"):
        cl.prepare(torch.randn(4, 2, 3), torch.ones(5), spec, require_cuda=False)
    with pytest.raises(KernelError, match="broadcast"):
        cl.prepare(torch.randn(4, 2, 3), 1.0, spec, v=torch.zeros(5), require_cuda=False)
    with pytest.raises(KernelError, match="needs T"):
        cl.prepare(torch.randn(2, 3), 1.0, NeuronSpec(input_kind="static"), require_cuda=False)
    for k, shape, words in [(0, (4, 1, 2, 4, 4), "positive int"), (True, (4, 1, 2, 4, 4), "positive int"),
                            (2, (4, 2, 3), r"\[N, C, H, W\]"), (3, (4, 1, 2, 2, 8), "at least 3 x 3")]:
        with pytest.raises(KernelError, match=words):
            cl.prepare(torch.randn(shape), 1.0, spec, sumpool=k, require_cuda=False)


def test_specialisations_name_family_variants():
    ks = Specialisation("lif", {"form": "snntorch"}, "float16", mode="backward", surrogate="atan")
    assert ks.values == {"reset": "subtract", "form": "snntorch"} and ks.h_dtype == "float32"
    assert dataclasses.replace(ks, mode="train", surrogate=None) in SPECS
    assert Specialisation.for_neuron(NeuronSpec("lif", form="snntorch", surrogate="atan"), torch.float16,
                                     False, "backward") == ks
    assert {s.family for s in SPECS} == set(neuron_families()) >= {"if", "lif", "signed_if"}
    for bad in [dict(family="hh"), dict(family="if", variant={"form": "snntorch"}),
                dict(family="lif", variant={"tau": 2.0}), dict(family="signed_if", variant={"reset": "value"}),
                dict(mode="backward"), dict(mode="train", h_dtype="float16")]:
        with pytest.raises(KernelError, match="invalid kernel specialisation"):
            Specialisation(**bad)
    sig = [n for _, n in kernel_signature(ks)]
    assert sig[-10:] == [f"p_{n}{i}" for n in ("v_init", "v_reset", "tau", "beta", "v_rest") for i in ("", "_inv")]


def test_float_parameters_and_fp32_reciprocals_reach_the_kernel():
    args = param_args(NeuronSpec("lif", tau=1.7, v_init=0.5, beta=0.25))
    inv = np.float32(1) / np.float32(1.7)  # torch's CUDA x / 1.7: x * (fp32(1) / fp32(1.7))
    assert inv != np.float32(1 / 1.7) and args[4:6] == (np.float32(1.7), inv) and args[5].dtype == np.float32
    assert args[:4] == (np.float32(0.5), np.float32(2.0), np.float32(0.0), np.float32(np.inf))
    assert len(param_args(NeuronSpec("signed_if"))) == 2


@pytest.mark.skipif(cl.cupy_available(), reason="CuPy is installed")
def test_missing_cupy_is_a_clear_kernel_error():
    with pytest.raises(KernelError, match="pip install cupy"):
        cl.get_kernel(SPECS[0], 0)


def test_custom_op_under_torch_compile_cpu():
    spec = NeuronSpec(kind="lif", surrogate="atan", v_init=0.5)
    fc, th = torch.nn.Linear(4, 4), torch.rand(4) + 0.5

    def f(x):
        s, v = co.neuron(fc(x), th, spec)
        return s.mean(0).sum() + v.sum()

    x = torch.randn(6, 3, 4)
    eager = f(x)
    (g_eager,) = torch.autograd.grad(eager, [fc.weight])
    compiled = torch.compile(f, fullgraph=True)(x)
    (g_comp,) = torch.autograd.grad(compiled, [fc.weight])
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(g_comp, g_eager)
