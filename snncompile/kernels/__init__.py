"""Neuron kernels: backend dispatch for the neuron layers.

``run_neuron`` is the one entry point the neuron modules call. Backends: ``"torch"`` (the
reference in neurons.py), ``"cupy"`` (fused CUDA kernels, kernels/cuda_*.py) and ``"cpu"``
(a fused C loop, kernels/cpu.py). Nothing outside this package knows CuPy.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError

__all__ = ["run_neuron", "BACKENDS"]

BACKENDS = ("torch", "cupy", "cpu")


def run_neuron(x: torch.Tensor, threshold: torch.Tensor, spec, T: int, v: torch.Tensor | None,
               backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one neuron layer over T steps; returns ``(spikes [T, N, ...], final v)``.

    ``x`` is ``[T, N, ...]`` or, for a static-input spec, ``[N, ...]``. All backends compute
    exactly the equations of ``snncompile.neurons`` (spikes element for element).
    """
    if backend == "torch":
        from ..neurons import neuron_reference
        return neuron_reference(x, threshold, spec, T, v)
    if backend == "cpu":
        from .cpu import run_cpu
        return run_cpu(x, threshold, spec, T, v)
    if backend == "cupy":
        from .cuda_launch import run_cupy
        return run_cupy(x, threshold, spec, T, v)
    raise ConfigError(f"unknown neuron backend {backend!r}; use one of {', '.join(BACKENDS)}")
