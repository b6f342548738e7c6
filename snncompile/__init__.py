"""snncompile: a graph compiler from trained ANNs to spiking neural networks.

    snn = snncompile.compile(model, calibration_data, T=32)            # convert a trained ANN
    snn = snncompile.to_trainable(model, T=4, neuron="lif", surrogate="atan")   # train directly

Trace a model into the IR (``trace``; ``from_onnx`` reads an ONNX file), run passes on it
(``Pipeline``), emit a runnable module (``emit``). ``snn.save(path)`` and ``snncompile.load(path)``
keep a compiled SNN (safetensors and JSON, no pickle); ``export_nir(snn, path)`` and ``from_nir(path)``
take it to and from NIR (other simulators, neuromorphic chips). See README.md for a tour.
"""
from __future__ import annotations

from . import errors, layers, losses
from .convert import compile, conversion_pipeline
from .few_steps import FEW_STEPS, few_step_choice
from .emit import emit, run_graph
from .errors import SnnCompileError
from .export import export_nir, from_nir, to_nir
from .frontend.fx import trace
from .ir import Graph, Node
from .neurons import NeuronFamily, NeuronSpec, Param, get_family, neuron_families, register_family
from .pipeline import PassContext, Pipeline, get_pass, register_pass
from .runtime import SpikingModule, load
from .serialize import SerializationError
from .trainable import to_trainable, training_pipeline


def from_onnx(model, **kwargs) -> Graph:
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


__all__ = ["compile", "export_nir", "to_nir", "from_nir", "few_step_choice", "FEW_STEPS", "load", "from_onnx", "SerializationError", "conversion_pipeline", "to_trainable", "training_pipeline", "layers", "losses", "SpikingModule", "trace", "emit", "run_graph", "Graph", "Node", "Pipeline", "PassContext", "register_pass",
           "get_pass", "errors", "SnnCompileError",
           "neuron_families", "register_family", "get_family", "NeuronFamily", "NeuronSpec", "Param"]
__version__ = "0.1.0"
