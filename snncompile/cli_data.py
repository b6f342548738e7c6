"""The user's own data for the command line (``--calib FILE``, ``--data FILE``).

``load_data(path, option="--calib", input_shape=(1, 28, 28))`` reads

* ``.npy``: one array of inputs (``np.save``; never pickled objects);
* ``.npz``: arrays named ``x``/``inputs``/``images`` (the inputs) and optionally ``y``/``labels``/
  ``targets`` (integer class indices), or exactly one array (inputs) or two (inputs, labels);
* ``.pt``/``.pth``: a tensor, a tuple or list ``(x, y)``, or a dict with such keys, read with
  ``torch.load(path, weights_only=True)`` (tensors only: a file that needs pickled code is refused);
* a folder of images (png, jpg, bmp, gif, tif, webp, ppm/pgm): its sub-folders are the classes,
  labelled 0, 1, ... by sorted folder name (as torchvision's ImageFolder), or images directly in
  it (no labels); read with Pillow, converted to the model's channels (1: grayscale, 3: RGB),
  resized to the model's input size and scaled to float32 in [0, 1].

Integer inputs (uint8 images) become float32 in [0, 1] (a note says so); labels must be integers.
The inputs are checked against the model's per-sample input shape; a missing channel axis is the
one difference added automatically (a note says so); any other mismatch is a ConfigError that
says what the file holds, what the model takes and what to do. Nothing heavy is imported at
module import (numpy, torch and Pillow are imported when a file is read), so ``check_data_path``
runs before the command line loads torch.
"""
from __future__ import annotations

import math
import os
from typing import Any, NamedTuple, Sequence

from .cli_images import IMAGE_SUFFIXES, read_image_folder
from .errors import ConfigError

__all__ = ["UserData", "load_data", "check_data_path", "DATA_SUFFIXES", "IMAGE_SUFFIXES", "INPUT_KEYS", "LABEL_KEYS"]

#: the file kinds ``load_data`` reads (besides a folder of images)
DATA_SUFFIXES = (".npy", ".npz", ".pt", ".pth")
#: names of the inputs in a .npz file or a .pt dict (case-insensitive), in the order they are looked for
INPUT_KEYS = ("x", "inputs", "input", "images", "image", "data", "samples", "features")
#: names of the labels in a .npz file or a .pt dict (case-insensitive)
LABEL_KEYS = ("y", "labels", "label", "targets", "target", "classes")


class UserData(NamedTuple):
    """Inputs read from the user's file: ``x`` float32 ``[N, *input_shape]``, ``y`` int64 ``[N]``
    or None, ``source`` (e.g. ``"--calib digits.npy"``), ``notes`` (what was converted), and
    ``classes`` (the class folder names of an image folder, else None)."""

    x: Any
    y: Any
    source: str
    notes: tuple[str, ...] = ()
    classes: tuple[str, ...] | None = None

    def describe(self) -> str:
        """One line: where the data comes from, how many inputs of which shape, and the labels."""
        per = _fmt(tuple(self.x.shape[1:]), batch=False)
        if self.y is None:
            return f"{self.source}: {len(self.x)} inputs of {per}, no labels"
        if self.classes is not None:
            names = ", ".join(self.classes[:5]) + (", ..." if len(self.classes) > 5 else "")
            classes = f"{len(self.classes)} classes: {names}"
        else:
            classes = f"{int(self.y.max()) + 1 if len(self.y) else 0} classes"
        return f"{self.source}: {len(self.x)} inputs of {per} with labels ({classes})"


def _fmt(shape: Sequence[int], batch: bool = True) -> str:
    dims = (["N"] if batch else []) + [str(int(d)) for d in shape]
    return "[" + ", ".join(dims) + "]"


def check_data_path(path: str, option: str = "--calib") -> str:
    """``path`` when it names a readable .npy/.npz/.pt/.pth file or a folder; ConfigError saying what
    to give otherwise. Reads nothing but the file system (the command line runs it first)."""
    what = f"{option} {path}"
    if not os.path.exists(path):
        raise ConfigError(f"{what}: no such file or folder; give a .npy, .npz or .pt file or a folder of images")
    if os.path.isdir(path):
        if not os.access(path, os.R_OK | os.X_OK):
            raise ConfigError(f"{what}: the folder cannot be read (permission denied)")
        return path
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in DATA_SUFFIXES:
        hint = " (an image: put the images in a folder and give the folder)" if suffix in IMAGE_SUFFIXES else ""
        raise ConfigError(f"{what}: {suffix or 'a file without an extension'} is not a data file snncompile reads"
                          f"{hint}; give a .npy file (np.save('inputs.npy', x)), a .npz file "
                          "(np.savez('data.npz', x=inputs, y=labels)), a .pt file (torch.save((x, y), 'data.pt')) "
                          "or a folder of images")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{what}: the file cannot be read (permission denied)")
    return path


def load_data(path: str, *, option: str = "--calib", input_shape: Sequence[int] | None = None,
              max_images: int | None = None) -> UserData:
    """Read the inputs (and labels, when the file has them) in ``path`` for a model whose one input
    sample has shape ``input_shape`` (None: not checked); see the module docstring for the formats.
    Returns a ``UserData`` (torch tensors); ConfigError naming ``option`` and the file, and saying
    what to do, for anything it cannot use. ``max_images`` stops reading an image folder there."""
    check_data_path(path, option)
    what = f"{option} {path}"
    shape = None if input_shape is None else tuple(int(d) for d in input_shape)
    notes: list[str] = []
    classes = None
    if os.path.isdir(path):
        x, y, classes = read_image_folder(path, what, shape, notes, max_images)
    else:
        suffix = os.path.splitext(path)[1].lower()
        if suffix == ".npy":
            x, y = _read_npy(path, what), None
        elif suffix == ".npz":
            x, y = _read_npz(path, what, notes)
        else:
            x, y = _read_pt(path, what, notes)
    x = _as_inputs(x, what, notes)
    x = _fit_shape(x, what, shape, notes)
    y = None if y is None else _as_labels(y, len(x), what)
    import torch

    xt = torch.from_numpy(x)
    yt = None if y is None else torch.from_numpy(y)
    return UserData(xt, yt, what, tuple(notes), classes)


# ------------------------------------------------------------------------------------------
# the file formats


def _read_npy(path: str, what: str):
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise ConfigError(f"{what}: the array holds Python objects (it needs pickle, which snncompile does not "
                              "load); save a numeric array: np.save(path, np.asarray(x, dtype=np.float32))") from None
        raise ConfigError(f"{what}: not a readable .npy file ({e})") from None
    except OSError as e:
        raise ConfigError(f"{what}: not a readable .npy file ({e})") from None


def _read_npz(path: str, what: str, notes: list[str]):
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise ConfigError(f"{what}: an array in it holds Python objects (it needs pickle, which snncompile does "
                              "not load); save numeric arrays: np.savez(path, x=inputs, y=labels)") from None
        raise ConfigError(f"{what}: not a readable .npz file ({e})") from None
    except Exception as e:  # OSError, EOFError, zipfile.BadZipFile...
        raise ConfigError(f"{what}: not a readable .npz file ({type(e).__name__}: {e})") from None
    return _split_named(arrays, what, "arrays", notes, "np.savez(path, x=inputs, y=labels)")


def _read_pt(path: str, what: str, notes: list[str]):
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        import re

        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found is None:
            raise ConfigError(f"{what}: not a readable .pt file (a safe load, torch.load(weights_only=True), cannot "
                              "read it); save it with torch.save((x, y), path)") from None
        raise ConfigError(f"{what}: holds Python objects ({found.group(1)}) that a safe load "
                          "(torch.load(weights_only=True)) refuses; snncompile never runs pickled code — save tensors "
                          "only: torch.save((x, y), path) or torch.save({'x': x, 'y': y}, path)") from None
    except Exception as e:  # a truncated or foreign file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(f"{what}: not a readable .pt file ({type(e).__name__}: {first}); save it with "
                          "torch.save((x, y), path)") from None
    if _is_array(obj):
        return obj, None
    if isinstance(obj, (tuple, list)):
        items = list(obj)
        if not items or not all(_is_array(t) for t in items):
            kinds = ", ".join(type(t).__name__ for t in items[:4]) or "nothing"
            raise ConfigError(f"{what}: holds a {type(obj).__name__} of {kinds}; give a tensor of inputs, (inputs, "
                              "labels) or {'x': inputs, 'y': labels}")
        if len(items) == 1:
            return items[0], None
        if len(items) == 2 and tuple(items[0].shape) != tuple(items[1].shape):
            return items[0], items[1]
        raise ConfigError(f"{what}: holds a {type(obj).__name__} of {len(items)} tensors of shape "
                          f"{list(items[0].shape)}; give one tensor [N, ...] of inputs (torch.stack(items)) or a pair "
                          "(inputs, labels)")
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise ConfigError(f"{what}: holds a dict whose keys are not all strings; give {{'x': inputs, 'y': labels}}")
        arrays = {k: v for k, v in obj.items() if _is_array(v)}
        others = sorted(k for k in obj if k not in arrays)
        if others:
            notes.append(f"{what}: ignored the entries that are not tensors: {', '.join(others)}")
        return _split_named(arrays, what, "tensors", notes, "torch.save({'x': inputs, 'y': labels}, path)")
    raise ConfigError(f"{what}: holds a {type(obj).__name__}; give a tensor of inputs, (inputs, labels) or "
                      "{'x': inputs, 'y': labels}")


def _is_array(obj) -> bool:
    import numpy as np
    import torch

    return isinstance(obj, (torch.Tensor, np.ndarray))


def _split_named(arrays: dict, what: str, kind: str, notes: list[str], how: str):
    """(inputs, labels or None) from named arrays: by name (INPUT_KEYS, LABEL_KEYS), else one array
    (inputs) or two (the 1-D one, or else the second, is the labels)."""
    lower = {k.lower(): k for k in arrays}
    xk = next((lower[n] for n in INPUT_KEYS if n in lower), None)
    yk = next((lower[n] for n in LABEL_KEYS if n in lower), None)
    names = ", ".join(arrays) or "nothing"
    if xk is not None:
        rest = [k for k in arrays if k not in (xk, yk)]
        if rest:
            notes.append(f"{what}: read the inputs from {xk!r}{f' and the labels from {yk!r}' if yk else ''}; "
                         f"ignored {', '.join(rest)}")
        return arrays[xk], None if yk is None else arrays[yk]
    if yk is not None and len(arrays) == 2:
        xk = next(k for k in arrays if k != yk)
        return arrays[xk], arrays[yk]
    if len(arrays) == 1:
        return next(iter(arrays.values())), None
    if len(arrays) == 2:
        (k1, a1), (k2, a2) = arrays.items()
        if _ndim(a1) == 1 and _ndim(a2) > 1:
            return a2, a1
        return a1, a2
    if not arrays:
        raise ConfigError(f"{what}: holds no {kind}; save the inputs (and labels) with {how}")
    raise ConfigError(f"{what}: holds the {kind} {names}, none named as inputs ({', '.join(INPUT_KEYS[:4])}); name "
                      f"them: {how}")


def _ndim(a) -> int:
    return len(a.shape)


def _numpy(a, what: str):
    """A numpy array from a numpy array or a CPU torch tensor (low-precision floats to float32)."""
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        if a.is_complex():
            raise ConfigError(f"{what}: the inputs are complex ({a.dtype}); give real numbers")
        if a.dtype in (torch.float16, torch.bfloat16):
            a = a.float()
        a = a.numpy()
    return np.asarray(a)


# ------------------------------------------------------------------------------------------
# checks and conversions


def _as_inputs(x, what: str, notes: list[str]):
    """float32 numpy inputs; integer (and bool) inputs scaled to [0, 1] with a note."""
    import numpy as np

    x = _numpy(x, what)
    if x.dtype.kind == "f":
        out = x.astype(np.float32, copy=False)
    elif x.dtype.kind == "b":
        out = x.astype(np.float32)
        notes.append(f"{what}: the inputs are booleans; read as float32 0.0 and 1.0")
    elif x.dtype.kind in "iu":
        lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
        if x.dtype == np.uint16 and hi > 255:
            scale = 65535.0
        elif lo >= 0 and hi <= 255:
            scale = 255.0
        else:
            raise ConfigError(f"{what}: the inputs are {x.dtype} integers from {lo} to {hi}, not 0..255 pixel values; "
                              "save them as float32 in the range the model was trained on (x.astype(np.float32))")
        out = x.astype(np.float32) / np.float32(scale)
        notes.append(f"{what}: the inputs are {x.dtype} (values {lo}..{hi}); converted to float32 in [0, 1] (divided by "
                     f"{scale:g}) — save float32 inputs if the model was trained on another range")
    else:
        raise ConfigError(f"{what}: the inputs are of type {x.dtype}; give numbers (float32, or uint8 images)")
    if out.ndim == 0 or (out.ndim >= 1 and out.shape[0] == 0):
        raise ConfigError(f"{what}: holds no inputs (shape {list(out.shape)}); give an array [N, ...] with N >= 1")
    return np.ascontiguousarray(out)


def _fit_shape(x, what: str, shape, notes: list[str]):
    """``x`` [N, *shape]: the channel axis added when it is the only thing missing; ConfigError else."""
    import numpy as np

    if shape is None:
        if x.ndim < 2:
            notes.append(f"{what}: read as {len(x)} inputs of one value each")
            x = x[:, None]
        return x
    per = tuple(x.shape[1:])
    if per == shape:
        return x
    held, takes = _fmt(per), _fmt(shape)
    head = f"{what} holds {held} (N={x.shape[0]}); the model takes {takes}"
    if len(shape) >= 2 and shape[0] == 1 and per == shape[1:]:
        notes.append(f"{what} holds {held}; the model takes {takes}: added the channel axis")
        return np.ascontiguousarray(x[:, None])
    if tuple(x.shape) == shape:
        raise ConfigError(f"{head} — it looks like one input without the batch axis; add it (np.expand_dims(x, 0))")
    if len(shape) == 3 and len(per) == 3 and per == shape[1:] + shape[:1]:
        raise ConfigError(f"{head} — the channels come last; move them to axis 1 (x.transpose(0, 3, 1, 2))")
    if math.prod(per) == math.prod(shape):
        dims = ", ".join(str(d) for d in shape)
        raise ConfigError(f"{head} — the same {math.prod(shape)} values per input in another shape; reshape them "
                          f"(x.reshape(-1, {dims}))")
    if len(per) == len(shape) and len(shape) == 3 and per[0] == shape[0]:
        raise ConfigError(f"{head} — the images are {per[1]}x{per[2]}, the model takes {shape[1]}x{shape[2]}; "
                          "resize them (or give a folder of images: it is resized when read)")
    if len(per) == len(shape) and len(shape) == 3 and per[1:] == shape[1:]:
        raise ConfigError(f"{head} — {per[0]} channels where the model takes {shape[0]}; convert them "
                          f"({'x.mean(1, keepdims=True)' if shape[0] == 1 else 'to ' + str(shape[0]) + ' channels'})")
    raise ConfigError(f"{head} — give inputs of the model's shape")


def _as_labels(y, n: int, what: str):
    """int64 numpy labels [n]; ConfigError for non-integer, negative or misshapen labels."""
    import numpy as np

    y = _numpy(y, what)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2 and y.shape[0] == n and y.shape[1] > 1:
        raise ConfigError(f"{what}: the labels are {list(y.shape)} (one-hot or scores?); give one class index per "
                          "input (y.argmax(1))")
    if y.ndim != 1:
        raise ConfigError(f"{what}: the labels have shape {list(y.shape)}; give one integer class index per input, "
                          f"shape [{n}]")
    if y.dtype.kind not in "iu":
        raise ConfigError(f"{what}: the labels are {y.dtype}; labels are integer class indices — save them as "
                          "integers (y.astype(np.int64))")
    if len(y) != n:
        raise ConfigError(f"{what}: {n} inputs but {len(y)} labels; give one label per input")
    if len(y) and int(y.min()) < 0:
        raise ConfigError(f"{what}: a label is {int(y.min())}; labels are class indices 0, 1, 2, ...")
    return np.ascontiguousarray(y.astype(np.int64))
