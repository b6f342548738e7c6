"""What every neuron kernel (C and CUDA) is handed, defined once: the family's float parameters
as value / fp32-reciprocal pairs, and the k x k sum pool that the fused kernels compute."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["param_vector", "sum_pool_steps"]


def param_vector(spec) -> np.ndarray:
    """The float parameters of ``spec``'s family, in the family's order, as the kernels take them:
    for parameter k, ``[2k]`` its value and ``[2k+1]`` its fp32 reciprocal (computed in fp32 as
    torch does; inf for 0, harmless for a parameter nothing divides by). The CUDA kernels divide
    by multiplying with the reciprocal, as torch's CUDA division by a scalar does; the C kernels
    divide for real, as torch does on the CPU."""
    vals = []
    with np.errstate(divide="ignore", over="ignore"):
        for p in spec.family.float_params:
            v = np.float32(getattr(spec, p.name))
            vals += [v, np.float32(1) / v]
    return np.asarray(vals or [0.0], dtype=np.float32)


def sum_pool_steps(s: torch.Tensor, k: int) -> torch.Tensor:
    """Sum ``[T, N, C, H, W]`` over k x k windows, stride k, floor: ``[T, N, C, H//k, W//k]``
    (what the fused neuron + sum pool kernels return, here from stored spikes)."""
    if s.dim() != 5:
        from ..errors import ConfigError
        raise ConfigError(f"a neuron fused with sum pooling needs steps of shape [N, C, H, W], got {list(s.shape[1:])}")
    T, N, C, H, W = s.shape
    if s.numel() == 0:
        return s.new_zeros((T, N, C, H // k, W // k))
    p = F.avg_pool2d(s.reshape(T * N, C, H, W), k, k, divisor_override=1)
    return p.reshape(T, N, C, H // k, W // k)
