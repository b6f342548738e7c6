"""Reference ANN models for conversion tests and benchmarks.

``MODELS`` maps a name to a :class:`ModelEntry`; :func:`get_model` builds one
(optionally with the trained checkpoint shipped in ``checkpoints/``) and
:func:`example_input` gives a deterministic input of the right shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .mlp import MLP
from .mnist_cnn import MnistCNN
from .resnet import resnet18, resnet20
from .vgg import VGG, vgg11_bn, vgg16_bn, vgg_mnist

__all__ = [
    "CHECKPOINT_DIR",
    "MODELS",
    "ModelEntry",
    "MLP",
    "MnistCNN",
    "VGG",
    "CHECKPOINT_VARIANTS",
    "checkpoint_path",
    "example_input",
    "get_model",
    "resnet18",
    "resnet20",
    "vgg11_bn",
    "vgg16_bn",
    "vgg_mnist",
]

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: how to build it and what one input sample looks like."""

    name: str
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    checkpoint: str | None
    description: str


def _entries(*entries: ModelEntry) -> dict[str, ModelEntry]:
    return {e.name: e for e in entries}


MODELS: dict[str, ModelEntry] = _entries(
    ModelEntry("mnist_cnn", MnistCNN, (1, 28, 28), "mnist_cnn.pt",
               "SpikingJelly ann2snn tutorial CNN (conv-BN-ReLU-avgpool x3, Linear)"),
    ModelEntry("mlp", MLP, (1, 28, 28), "mlp.pt",
               "784-256-128-10 MLP with ReLU"),
    ModelEntry("vgg_mnist", vgg_mnist, (1, 28, 28), "vgg_mnist.pt",
               "small VGG [32,M,64,M,128,M] with BN and max pooling"),
    ModelEntry("vgg11_bn", vgg11_bn, (3, 32, 32), None,
               "VGG-11 with BN, CIFAR shape, untrained"),
    ModelEntry("vgg16_bn", vgg16_bn, (3, 32, 32), None,
               "VGG-16 with BN, CIFAR shape, untrained"),
    ModelEntry("resnet20", resnet20, (3, 32, 32), None,
               "CIFAR ResNet-20 (16/32/64, option-B shortcuts), untrained"),
    ModelEntry("resnet20_mnist", partial(resnet20, in_channels=1), (1, 28, 28),
               "resnet20_mnist.pt", "ResNet-20 with a 1-channel stem for MNIST"),
    ModelEntry("resnet18", resnet18, (3, 32, 32), None,
               "ResNet-18 with a CIFAR 3x3 stem, untrained"),
)


#: other checkpoints of the trained architectures (other seeds and recipes, see
#: ``snncompile.recipes.train.VARIANTS``): a figure on one checkpoint is not a figure.
#: ``get_model(name, pretrained=True, variant="s1")`` loads ``checkpoints/<name>_s1.pt``.
CHECKPOINT_VARIANTS: dict[str, tuple[str, ...]] = {
    "mnist_cnn": ("s1", "r2"),
    "vgg_mnist": ("s1", "r2"),
    "resnet20_mnist": ("s1", "r2"),
}


def _entry(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise KeyError(f"unknown model {name!r}; known models: {known}") from None


def checkpoint_path(name: str, variant: str | None = None) -> Path | None:
    """Return where ``name``'s checkpoint (or its ``variant``: one of ``CHECKPOINT_VARIANTS[name]``)
    lives, or None if it has none; the file may not exist yet."""
    entry = _entry(name)
    if entry.checkpoint is None:
        return None
    if variant is None:
        return CHECKPOINT_DIR / entry.checkpoint
    if variant not in CHECKPOINT_VARIANTS.get(name, ()):
        known = ", ".join(CHECKPOINT_VARIANTS.get(name, ())) or "none"
        raise KeyError(f"model {name!r} has no checkpoint variant {variant!r}; its variants: {known}")
    return CHECKPOINT_DIR / f"{name}_{variant}.pt"


def get_model(name: str, pretrained: bool = False, variant: str | None = None) -> nn.Module:
    """Build registry model ``name`` in eval mode.

    With ``pretrained=True`` the float32 state_dict from
    ``models/checkpoints/<name>.pt`` (``<name>_<variant>.pt`` for a ``variant``) is loaded
    (``weights_only=True``).
    Raises KeyError for an unknown name, ValueError if the model has no
    checkpoint, FileNotFoundError (naming the training command) if the file
    is missing.  Without ``pretrained`` weights are PyTorch's default init
    under whatever RNG state the caller has.
    """
    entry = _entry(name)
    model = entry.factory()
    if pretrained:
        path = checkpoint_path(name, variant)
        if path is None:
            raise ValueError(f"model {name!r} has no pretrained checkpoint")
        if not path.is_file():
            how = f" --variant {variant}" if variant else ""
            raise FileNotFoundError(
                f"checkpoint {path} not found; train it with "
                f"`python -m snncompile.recipes.train {name}{how}`"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model.eval()


def example_input(name: str, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Return a deterministic float32 tensor [batch, *input_shape] in [0, 1) for ``name``.

    Uses a private generator, so the global RNG state is untouched.
    """
    entry = _entry(name)
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *entry.input_shape), generator=gen)
