"""The count-gated spike max pool: converges to the window's max rate; streaming = multi-step."""
from __future__ import annotations

import torch

from snncompile.spike_pool import SpikeMaxPool2d


def _trains(T=400, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    rates = torch.rand(n, 2, 4, 4, generator=g)
    spikes = (torch.rand(T, n, 2, 4, 4, generator=g) < rates).float()
    return rates, spikes


def test_output_rate_converges_to_the_window_max_rate():
    rates, spikes = _trains()
    T = spikes.shape[0]
    out = SpikeMaxPool2d(2)(spikes.reshape(T * 3, 2, 4, 4), T).reshape(T, 3, 2, 2, 2)
    want = torch.nn.functional.max_pool2d(spikes.mean(0), 2)  # max of the empirical rates
    got = out.mean(0)
    assert (got - want).abs().max() < 0.03
    # a plain max of spikes (an OR) overestimates clearly: the gate matters
    orpool = torch.nn.functional.max_pool2d(spikes.reshape(T * 3, 2, 4, 4), 2).reshape(T, 3, 2, 2, 2).mean(0)
    assert (orpool - want).mean() > 0.1


def test_output_is_a_spike_of_the_chosen_neuron():
    _, spikes = _trains(T=20)
    out = SpikeMaxPool2d(2)(spikes.reshape(60, 2, 4, 4), 20)
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_streaming_steps_equal_one_multi_step_call():
    _, spikes = _trains(T=30)
    pool = SpikeMaxPool2d(2)
    whole = pool(spikes.reshape(90, 2, 4, 4), 30)
    pool.reset()
    steps = torch.cat([pool(spikes[t], 1) for t in range(30)])
    assert torch.equal(whole, steps)
