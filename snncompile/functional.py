"""The small functions the emitted code calls where torch has no single function for an op.

Everything here works on T folded into the batch (``[T*N, ...]``), so one definition serves the
ANN (T absent) and the SNN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sum_pool2d", "flatten_batch", "reshape_batch", "slice_dim", "select_dim", "permute_batch", "pad_zero",
           "clamp", "mul_const", "scale", "identity", "encode", "repeat_time", "unfold_time"]


def sum_pool2d(x: torch.Tensor, kernel_size, stride=None, padding=0) -> torch.Tensor:
    """Sum over each pooling window (an average pool without the 1/k^2)."""
    return F.avg_pool2d(x, kernel_size, stride, padding, divisor_override=1)


def flatten_batch(x: torch.Tensor, start_dim: int = 1, end_dim: int = -1) -> torch.Tensor:
    """torch.flatten that never touches the batch dimension."""
    return torch.flatten(x, start_dim, end_dim)


def reshape_batch(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Reshape each sample to ``shape``, keeping the (possibly time-folded) batch dimension."""
    return x.reshape((x.shape[0],) + tuple(shape))


def slice_dim(x: torch.Tensor, dim: int, start: int, stop: int, step: int = 1) -> torch.Tensor:
    """``x[..., start:stop:step, ...]`` along ``dim`` (never the batch): one result of chunk/split."""
    return x.narrow(dim, start, stop - start) if step == 1 else \
        x[(slice(None),) * (dim % x.dim()) + (slice(start, stop, step),)]


def select_dim(x: torch.Tensor, dim: int, index: int) -> torch.Tensor:
    """``x.select(dim, index)`` (never the batch): one result of unbind."""
    return x.select(dim, index)


def permute_batch(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Permute the per-sample dims (``dims`` names dims 1.., the batch stays first), contiguous."""
    return x.permute((0,) + tuple(dims)).contiguous()


def pad_zero(x: torch.Tensor, pads: tuple[int, ...]) -> torch.Tensor:
    """Zero padding of the trailing dims, in F.pad order (last dim first: left, right, top, bottom...)."""
    return F.pad(x, tuple(pads))


def clamp(x: torch.Tensor, ceiling: torch.Tensor | None = None, min: float | None = None,
          max: float | None = None) -> torch.Tensor:
    """``min(max(x, min), max)``; a ``ceiling`` tensor (per channel, broadcast over one sample) is the max instead."""
    if ceiling is None:
        return torch.clamp(x, min, max)
    x = x if min is None else torch.clamp(x, min=min)
    return torch.minimum(x, ceiling)


def mul_const(x: torch.Tensor, value: float) -> torch.Tensor:
    """``x * value`` for a Python constant."""
    return x * value


def scale(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``x * factor`` where factor broadcasts over one sample (a scalar or per channel)."""
    return x * factor


def identity(x: torch.Tensor) -> torch.Tensor:
    """Return x (dropout and identity at inference)."""
    return x


def encode(x: torch.Tensor, T: int, method: str = "direct", generator: torch.Generator | None = None) -> torch.Tensor:
    """Turn an input into T steps folded into the batch [T*N, ...].

    ``direct``: the static [N, ...] value every step; ``poisson``: Bernoulli spikes with
    probability x drawn independently each step (x must lie in [0, 1]: ConfigError otherwise,
    for values outside it, NaN included, would be clipped into other probabilities); ``sequence``:
    x is already ``[T, N, ...]`` (one input per step) and is only folded.
    """
    if method == "sequence":
        if x.shape[0] != T:
            from .errors import ConfigError
            raise ConfigError(f"a sequence input must be [T, N, ...] with T={T} steps first; got {list(x.shape)}")
        return x.reshape((-1,) + tuple(x.shape[2:]))
    xs = x.unsqueeze(0).expand((T,) + tuple(x.shape))
    if method == "poisson":
        _check_probabilities(x)
        xs = (torch.rand(xs.shape, device=x.device, generator=generator) < xs).to(x.dtype)
    return xs.reshape((-1,) + tuple(x.shape[1:]))


def _check_probabilities(x: torch.Tensor) -> None:
    if x.numel() == 0:
        return
    lo, hi = torch.aminmax(x.detach())
    lo, hi = float(lo), float(hi)
    if not (0.0 <= lo and hi <= 1.0):  # NaN fails both
        from .errors import ConfigError
        nan = int(torch.isnan(x).sum())
        found = f"{nan} NaN values" if nan else f"values in [{lo:.4g}, {hi:.4g}]"
        raise ConfigError(f"poisson encoding: the input has {found}, but Poisson encoding reads each value as a "
                          "firing probability in [0, 1] — scale the inputs to [0, 1] (e.g. pixels / 255, no "
                          "standardization), or convert with encoding='direct'")


def repeat_time(x: torch.Tensor, T: int) -> torch.Tensor:
    """A static value [N, ...] seen by a sequence op: the same value at every step [T*N, ...]."""
    return x.unsqueeze(0).expand((T,) + tuple(x.shape)).reshape((-1,) + tuple(x.shape[1:]))


def unfold_time(x: torch.Tensor, T: int) -> torch.Tensor:
    """[T*N, ...] -> [T, N, ...]: the readout hands the runtime the whole sequence."""
    return x.reshape((T, x.shape[0] // T) + tuple(x.shape[1:]))
