"""fuse-neuron-sumpool: the neuron writes window sums; the SNN computes exactly the same."""
from __future__ import annotations

import torch
import torch.nn as nn

import snncompile
from snncompile import SpikingModule


def _net(pool, flat):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), pool, nn.Conv2d(4, 4, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(flat, 3)).eval()


def test_fused_neuron_prints_sumpool_and_matches_the_unfused_snn():
    model = _net(nn.AvgPool2d(2), 4 * 2 * 2)
    x = torch.rand(6, 1, 10, 10)
    snn = snncompile.compile(model, x, T=16, backend="torch", normalize="percentile", calibrate="none")
    text = str(snn.graph)
    assert " = sumpool2d(" not in text and not snn.graph.find("sumpool2d")
    (first,) = snn.graph.find("neuron_sumpool2d")
    assert first.attrs["family"] == "if" and first.attrs["kernel_size"] == 2
    assert first.format().startswith("%2 = neuron_sumpool2d(%1) family=if threshold=1 v_init=0.5 ")
    assert "kernel_size=2" in first.format() and first.shape == (None, 4, 4, 4)
    pipe = snncompile.conversion_pipeline().remove("fuse-neuron-sumpool")
    unfused = snncompile.compile(model, x, T=16, backend="torch", pipeline=pipe)
    assert " = sumpool2d(" in str(unfused.graph) and not unfused.graph.find("neuron_sumpool2d")
    with torch.no_grad():
        assert torch.equal(snn(x, return_all_steps=True), unfused(x, return_all_steps=True))
    # firing rates count every neuron once per step, fused or not
    assert snn.firing_rates(x) == unfused.firing_rates(x)


def test_pool_with_other_stride_is_not_fused():
    model = _net(nn.AvgPool2d(3, stride=2), 4 * 3 * 3)
    snn = snncompile.compile(model, torch.rand(4, 1, 13, 13), T=4, backend="torch")
    assert " = sumpool2d(" in str(snn.graph)
    assert not snn.graph.find("neuron_sumpool2d") and len(snn.graph.find("neuron")) == 2


def test_floor_pool_is_fused_and_the_outputs_stay_exact():
    model = _net(nn.AvgPool2d(2), 4 * 2 * 2)
    x = torch.rand(4, 1, 11, 11)  # 9x9 planes: the pool drops a row and a column
    snn = snncompile.compile(model, x, T=8, backend="torch", normalize="percentile", calibrate="none")
    assert " = sumpool2d(" not in str(snn.graph) and not snn.graph.find("sumpool2d")
    (fused,) = snn.graph.find("neuron_sumpool2d")
    assert fused.shape == (None, 4, 4, 4)
    pipe = snncompile.conversion_pipeline().remove("fuse-neuron-sumpool")
    unfused = snncompile.compile(model, x, T=8, backend="torch", pipeline=pipe)
    with torch.no_grad():
        assert torch.equal(snn(x, return_all_steps=True), unfused(x, return_all_steps=True))


def test_training_pipeline_fuses_average_pools_and_trains_the_same():
    """In the training pipeline (avgpool=True) a neuron + 2x2 average pool becomes the fused
    neuron_sumpool2d (kernel_size=2) and a mul_const of 1/4; outputs equal the unfused SNN exactly
    and gradients to float rounding, on both the torch reference and the C training kernels."""
    model = _net(nn.AvgPool2d(2), 4 * 2 * 2)
    x = torch.rand(6, 1, 10, 10)
    unfused_pipe = snncompile.training_pipeline().remove("fuse-neuron-sumpool")
    for backend in ("torch", "cpu"):
        snn = snncompile.to_trainable(model, T=4, example_input=x, backend=backend)
        (fused,) = snn.graph.find("neuron_sumpool2d")
        assert fused.attrs["family"] == "lif" and fused.attrs["kernel_size"] == 2
        (scale,) = snn.graph.users(fused)
        assert scale.op == "mul_const" and scale.attrs["value"] == 0.25 and not snn.graph.find("avgpool2d")
        assert 0 < max(snn.firing_rates(x * 4.0).values()) < 1  # the fused layer spikes
        ref = snncompile.to_trainable(model, T=4, example_input=x, backend=backend, pipeline=unfused_pipe)
        assert ref.graph.find("avgpool2d")
        outs, grads = [], []
        for m in (snn, ref):
            seq = m.run_sequence(x * 4.0)
            seq.sum().backward()
            outs.append(seq.detach())
            grads.append([p.grad for p in m.parameters()])
        assert torch.equal(outs[0], outs[1])
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
