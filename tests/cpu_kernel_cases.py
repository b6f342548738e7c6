"""Cases the CPU kernel test modules share: the neuron kinds, resets and inputs, specs, inputs,
and the fixture that leaves no broken kernel state behind."""
from __future__ import annotations

import pytest
import torch

from snncompile.kernels import cpu_library
from snncompile.neurons import NeuronSpec

KINDS = [("if", "spikingjelly"), ("lif", "spikingjelly"), ("lif", "snntorch"), ("signed_if", "spikingjelly")]
RESETS = ["subtract", "value"]
INPUTS = ["sequence", "static"]


@pytest.fixture(autouse=True)
def _fresh_kernel_state():
    """Tests that break the build leave no trace for the next test."""
    yield
    if cpu_library._state["lib"] is None:
        cpu_library.reset_library_state()


def _spec(kind, form, reset, input_kind, v_init=0.5):
    if kind == "signed_if" and reset == "value":
        pytest.skip("a signed neuron resets by subtraction only")
    lif = dict(form=form, tau=3.7, beta=0.93, v_rest=0.1) if kind == "lif" else {}
    vr = {} if kind == "signed_if" else {"v_reset": -0.125}
    return NeuronSpec(kind=kind, reset=reset, input_kind=input_kind, v_init=v_init, **vr, **lif)


def _input(input_kind, T, step, gen, dtype=torch.float32):
    shape = step if input_kind == "static" else (T,) + step
    # Quarter steps make the membrane land exactly on the threshold now and then (tests >=).
    x = torch.randint(-2, 6, shape, generator=gen).float() * 0.25
    x += torch.randn(shape, generator=gen) * (torch.rand(shape, generator=gen) < 0.5)
    return x.to(dtype)
