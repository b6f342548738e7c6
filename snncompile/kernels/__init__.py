"""Neuron kernels: backend dispatch for the neuron layers.

``run_neuron`` is the one entry point the neuron modules call. Backends: ``"torch"`` (the
reference in neurons.py), ``"cupy"`` (fused CUDA kernels, kernels/cuda_*.py) and ``"cpu"``
(a fused C loop, kernels/cpu.py). Nothing outside this package knows CuPy.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ..neurons import neuron_reference
from .abi import sum_pool_steps

__all__ = ["run_neuron", "sum_pool_steps", "BACKENDS"]

BACKENDS = ("torch", "cupy", "cpu")


def run_neuron(x: torch.Tensor, threshold: torch.Tensor, spec, T: int, v: torch.Tensor | None,
               backend: str, sumpool: int | None = None, leak: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one neuron layer over T steps; returns ``(spikes [T, N, ...], final v)``.

    ``x`` is ``[T, N, ...]`` or, for a static-input spec, ``[N, ...]``. All backends compute
    exactly the equations of ``snncompile.neurons`` (spikes element for element). With
    ``sumpool=k`` the spikes come back summed over k x k windows (stride k): ``[T, N, C, H//k, W//k]``.
    A learned ``leak`` tensor (see ``neuron_reference``) runs on the torch reference on every
    backend: the kernels take the leak as a compile-time constant.
    """
    if leak is not None:
        backend = "torch"
    if backend == "cpu":
        from .cpu import run_cpu
        return run_cpu(x, threshold, spec, T, v, sumpool=sumpool)
    if backend == "cupy":
        from .cuda_launch import run_cupy
        return run_cupy(x, threshold, spec, T, v, sumpool=sumpool)  # fused on the device
    if backend != "torch":
        raise ConfigError(f"unknown neuron backend {backend!r}; use one of {', '.join(BACKENDS)}")
    s, v = neuron_reference(x, threshold, spec, T, v, leak=leak)
    return (s if sumpool is None else sum_pool_steps(s, sumpool)), v
