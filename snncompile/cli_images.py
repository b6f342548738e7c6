"""A folder of images as inputs (``--calib DIR``, ``--data DIR``): one sub-folder per class
(labels by sorted folder name, as torchvision's ImageFolder) or the images directly in it (no
labels); read with Pillow (imported when a folder is read), converted to the model's channels,
resized to its input size and scaled to float32 in [0, 1]. ``snncompile.cli_data`` calls it."""
from __future__ import annotations

import os

from .errors import ConfigError

__all__ = ["read_image_folder", "IMAGE_SUFFIXES"]

#: the image files a folder may hold
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")


def _shape_text(shape) -> str:
    return "[" + ", ".join(["N"] + [str(int(d)) for d in shape]) + "]"


def read_image_folder(root: str, what: str, shape, notes: list[str], max_images: int | None = None):
    """``(x, labels, classes)`` from a folder of images: x uint8-scaled float32 [N, C, H, W] in
    [0, 1]; with sub-folders, labels 0, 1, ... by sorted folder name (``classes``), else None. The
    images are converted to the channels of ``shape`` (C, H, W: 1 grayscale, 3 RGB) and resized to
    its H x W; without ``shape`` they keep their size (one for all) and mode. What was converted
    goes into ``notes``; ConfigError (starting with ``what``) for what cannot be read."""
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError(f"{what}: reading a folder of images needs Pillow (pip install pillow); or save the "
                          "images as an array: np.save('inputs.npy', x)") from None
    import numpy as np

    from .progress import progress

    def images_in(folder: str, recursive: bool) -> list[str]:
        found = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [os.path.join(dirpath, f) for f in sorted(filenames)
                      if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
            if not recursive:
                break
        return found

    classes = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
    files: list[tuple[str, int | None]] = []
    if classes:
        for label, name in enumerate(classes):
            found = images_in(os.path.join(root, name), True)
            if not found:
                notes.append(f"{what}: the class folder {name!r} holds no images (label {label} is kept for it)")
            files += [(f, label) for f in found]
        loose = images_in(root, False)
        if loose:
            notes.append(f"{what}: ignored {len(loose)} images directly in the folder (the sub-folders are the "
                         "classes)")
    else:
        files = [(f, None) for f in images_in(root, False)]
    if not files:
        kinds = ", ".join(s.lstrip(".") for s in IMAGE_SUFFIXES[:6])
        raise ConfigError(f"{what}: no images found ({kinds}, ...); put them in the folder, or in one sub-folder "
                          "per class")
    if max_images is not None:
        files = files[:max_images]

    if shape is not None and (len(shape) != 3 or shape[0] not in (1, 3)):
        raise ConfigError(f"{what}: a folder of images gives [N, C, H, W] inputs with 1 or 3 channels; the model "
                          f"takes {_shape_text(shape)} — save the inputs as an array instead (np.save('inputs.npy', x))")
    mode = None if shape is None else ("L" if shape[0] == 1 else "RGB")
    size = None if shape is None else (shape[2], shape[1])  # PIL: (width, height)
    arrays, resized, converted, first_size = [], 0, 0, None
    for path, _ in progress(files, desc="reading images"):
        try:
            with Image.open(path) as img:
                img.load()
                m = mode or ("L" if img.mode in ("L", "1", "I;16", "I", "F", "LA") else "RGB")
                if img.mode != m:
                    converted += 1
                    img = img.convert(m)
                if size is None:
                    first_size = first_size or img.size
                    if img.size != first_size:
                        raise ConfigError(f"{what}: {path} is {img.size[0]}x{img.size[1]}, the first image "
                                          f"{first_size[0]}x{first_size[1]}; all images must have one size (the "
                                          "model does not say its input size)")
                elif img.size != size:
                    resized += 1
                    img = img.resize(size, Image.BILINEAR)
                arrays.append(np.asarray(img, dtype=np.uint8))
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(f"{what}: cannot read the image {path} ({type(e).__name__}: {e}); remove or "
                              "replace it") from None
    if mode is None:  # no model shape: one mode for all (RGB when any image has colour)
        if any(a.ndim == 3 for a in arrays) and any(a.ndim == 2 for a in arrays):
            arrays = [np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a for a in arrays]
    x = np.stack(arrays)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)
    n = len(arrays)
    if resized:
        notes.append(f"{what}: resized {resized} of {n} images to {size[1]}x{size[0]} (the model's input size, height "
                     "x width)")
    if converted:
        notes.append(f"{what}: converted {converted} of {n} images to {'grayscale' if x.shape[1] == 1 else 'RGB'} "
                     f"({x.shape[1]} channel{'s' if x.shape[1] > 1 else ''}, as the model takes)")
    labels = None if not classes else np.asarray([label for _, label in files], dtype=np.int64)
    return x, labels, (tuple(classes) if classes else None)
