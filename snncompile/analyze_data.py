"""The data ``analyze`` (and the report) run on: input batches with their labels, checked."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from .errors import ConfigError

__all__ = ["batches_with_labels"]


def _is_labels(y, x) -> bool:
    """An integer vector beside a float batch: labels (their count is checked later)."""
    return isinstance(y, torch.Tensor) and not y.is_floating_point() and y.dim() == 1 and x.is_floating_point()


def _items(data, batch_size: int, where: str):
    if isinstance(data, torch.Tensor):
        if data.dim() == 0 or data.shape[0] == 0:
            raise ConfigError(f"{where}: the input tensor is empty; give at least one input row [N, ...]")
        return ((x, None) for x in data.split(batch_size))
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor) \
            and isinstance(data[1], torch.Tensor) and _is_labels(data[1], data[0]):
        x, y = data
        if x.dim() == 0 or x.shape[0] == 0:
            raise ConfigError(f"{where}: the input tensor is empty; give at least one input row [N, ...]")
        if y.shape[0] != x.shape[0]:
            raise ConfigError(f"{where}: {y.shape[0]} labels for {x.shape[0]} inputs; give one integer class index "
                              "per input row")
        return zip(x.split(batch_size), y.split(batch_size))
    if isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Iterable):
        raise ConfigError(f"{where}: data has type {type(data).__name__}; give an input tensor [N, ...], an "
                          "(inputs, labels) pair of tensors, or an iterable (a list, a DataLoader) of such batches")
    return (_one(item, where) for item in data)


def _one(item, where: str):
    if isinstance(item, torch.Tensor):
        return item, None
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        y = item[1] if len(item) > 1 else None
        return item[0], (y if isinstance(y, torch.Tensor) else None)
    raise ConfigError(f"{where}: a batch has type {type(item).__name__}; each batch must be an input tensor or an "
                      "(inputs, labels) pair of tensors")


def _check(x: torch.Tensor, y, k: int, step_shape, where: str):
    if not x.is_floating_point():
        raise ConfigError(f"{where}: batch {k} has dtype {x.dtype}; the SNN takes floating-point inputs (convert and "
                          "scale them as the model was trained, e.g. x.float() / 255 for 8-bit images)")
    if step_shape is not None and tuple(x.shape[1:]) != tuple(step_shape):
        raise ConfigError(f"{where}: batch {k} has shape {list(x.shape)} but the SNN was traced for inputs "
                          f"[N, {', '.join(map(str, step_shape))}]; pass inputs of that shape (a batch dimension "
                          "first)")
    if x.shape[0] == 0:
        raise ConfigError(f"{where}: batch {k} is empty; give at least one input row")
    if not bool(torch.isfinite(x).all()):
        raise ConfigError(f"{where}: batch {k} holds NaN or infinite values; clean the inputs")
    x = x.float()
    if y is None:
        return x, None
    if y.is_floating_point() or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ConfigError(f"{where}: the labels of batch {k} have shape {list(y.shape)} and dtype {y.dtype}; give "
                          f"one integer class index per input row ({x.shape[0]} here), e.g. a LongTensor [N]")
    if y.numel() and int(y.min()) < 0:
        raise ConfigError(f"{where}: batch {k} has a negative label ({int(y.min())}); labels are class indices "
                          "0..C-1")
    return x, y.long()


def batches_with_labels(data, batch_size: int, input_shape, where: str = "analyze"):
    """Yield ``(x, y)`` batches (``y`` None without labels) from ``data``: an input tensor, an
    ``(inputs, labels)`` pair (labels: an integer tensor with one entry per row), or an iterable of
    tensors or such pairs. ``input_shape`` is the graph input's shape (batch first: the rest is
    checked). Inputs are float32. ConfigError naming the batch for data of the wrong type, dtype
    or shape, NaN or Inf, labels that are not one class index per row, or no data at all."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"{where}: batch_size must be a positive int, got {batch_size!r}")
    if data is None:
        raise ConfigError(f"{where}: no data; give input tensors [N, ...] (and labels for the accuracy)")
    step_shape = None
    if input_shape is not None and all(isinstance(d, int) for d in input_shape[1:]):
        step_shape = tuple(input_shape[1:])
    n = 0
    for x, y in _items(data, batch_size, where):
        yield _check(x, y, n, step_shape, where)
        n += 1
    if n == 0:
        raise ConfigError(f"{where}: the data yielded no batches; give at least one input batch")
