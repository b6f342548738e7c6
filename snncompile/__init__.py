"""snncompile: a graph compiler from trained ANNs to spiking neural networks.

    snn = snncompile.compile(model, calibration_data, T=32)            # convert a trained ANN
    snn = snncompile.to_trainable(model, T=4, neuron="lif", surrogate="atan")   # train directly

Trace a model into the IR (``trace``; ``from_onnx`` reads an ONNX file), run passes on it
(``Pipeline``), emit a runnable module (``emit``). ``snn.save(path)`` and ``snncompile.load(path)``
keep a compiled SNN (safetensors and JSON, no pickle); ``export_nir(snn, path)`` and ``from_nir(path)``
take it to and from NIR (other simulators, neuromorphic chips); ``analyze(snn, data)`` counts its
spikes, synaptic operations and energy. See README.md for a tour.

The names are imported on first use (PEP 562): ``import snncompile`` (and so the ``snncompile``
command's ``--help``) does not import torch; the first attribute that needs it imports everything
as before.
"""
from __future__ import annotations

import importlib
import sys
import types

# name -> the submodule it comes from (every public name; the first use of one imports them all)
_NAMES = {
    "compile": ".convert", "conversion_pipeline": ".convert",
    "FEW_STEPS": ".few_steps", "few_step_choice": ".few_steps",
    "emit": ".emit", "run_graph": ".emit",
    "SnnCompileError": ".errors",
    "export_nir": ".export", "from_nir": ".export", "to_nir": ".export",
    "trace": ".frontend.fx",
    "Graph": ".ir", "Node": ".ir",
    "NeuronFamily": ".neurons", "NeuronSpec": ".neurons", "Param": ".neurons", "get_family": ".neurons",
    "neuron_families": ".neurons", "register_family": ".neurons",
    "PassContext": ".pipeline", "Pipeline": ".pipeline", "get_pass": ".pipeline", "register_pass": ".pipeline",
    "SpikingModule": ".runtime", "load": ".runtime",
    "SerializationError": ".serialize",
    "to_trainable": ".trainable", "training_pipeline": ".trainable",
    "analyze": ".analyze", "Analysis": ".analyze", "EnergyConstants": ".analyze",
}
_MODULES = ("errors", "layers", "losses")


def _load_all() -> None:
    """Import what ``import snncompile`` used to import eagerly (the submodules register their
    leaf modules, neuron families and passes), and bind every public name."""
    g = globals()
    for name in _MODULES:
        g[name] = importlib.import_module(f".{name}", __name__)
    for name, module in _NAMES.items():
        g[name] = getattr(importlib.import_module(module, __name__), name)


class _Package(types.ModuleType):
    """The package's module type: importing the submodule ``snncompile/emit.py`` for the first time
    must not replace the function ``snncompile.emit`` (the eager imports bound it after the module)."""

    def __setattr__(self, name, value):
        if name in _NAMES and isinstance(value, types.ModuleType):
            return  # the submodule stays in sys.modules; the name is the function (bound on first use)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    """A public name imports everything the eager ``import snncompile`` imported; a submodule's
    name (``snncompile.neurons``...) imports that submodule, as ``import snncompile.neurons`` does."""
    if name in _NAMES or name in _MODULES:
        _load_all()
        return globals()[name]
    if not name.startswith("_"):
        import importlib.util

        try:
            spec = importlib.util.find_spec(f"{__name__}.{name}")
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def from_onnx(model, **kwargs) -> "Graph":
    """Read an ONNX model (a .onnx path, its bytes or an onnx.ModelProto) into the canonical IR
    Graph that ``trace`` gives for the same network; see snncompile.frontend.onnx.from_onnx.
    Needs the ``onnx`` package (``pip install snncompile[onnx]``), imported only here."""
    try:
        from .frontend.onnx import from_onnx as _from_onnx
    except ImportError as e:
        if getattr(e, "name", None) not in ("onnx", "onnx.reference") and "onnx" not in str(e):
            raise
        from .errors import ConfigError
        raise ConfigError(f"from_onnx needs the onnx package ({e}); install it with pip install 'snncompile[onnx]'") from e
    return _from_onnx(model, **kwargs)


__all__ = ["compile", "analyze", "Analysis", "EnergyConstants", "export_nir", "to_nir", "from_nir", "few_step_choice", "FEW_STEPS", "load", "from_onnx", "SerializationError", "conversion_pipeline", "to_trainable", "training_pipeline", "layers", "losses", "SpikingModule", "trace", "emit", "run_graph", "Graph", "Node", "Pipeline", "PassContext", "register_pass",
           "get_pass", "errors", "SnnCompileError",
           "neuron_families", "register_family", "get_family", "NeuronFamily", "NeuronSpec", "Param"]
__version__ = "0.1.0"
