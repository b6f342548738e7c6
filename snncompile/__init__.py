"""snncompile: a graph compiler from trained ANNs to spiking neural networks.

    snn = snncompile.compile(model, calibration_data, T=32)            # convert a trained ANN
    snn = snncompile.to_trainable(model, T=4, neuron="lif", surrogate="atan")   # train directly

Trace a model into the IR (``trace``), run passes on it (``Pipeline``), emit a runnable module
(``emit``). ``snn.save(path)`` and ``snncompile.load(path)`` keep a compiled SNN (safetensors and
JSON, no pickle). See README.md for a tour.
"""
from __future__ import annotations

from . import errors, layers, losses
from .convert import compile, conversion_pipeline
from .emit import emit, run_graph
from .errors import SnnCompileError
from .frontend.fx import trace
from .ir import Graph, Node
from .neurons import NeuronFamily, NeuronSpec, Param, get_family, neuron_families, register_family
from .pipeline import PassContext, Pipeline, get_pass, register_pass
from .runtime import SpikingModule, load
from .serialize import SerializationError
from .trainable import to_trainable, training_pipeline

__all__ = ["compile", "load", "SerializationError", "conversion_pipeline", "to_trainable", "training_pipeline", "layers", "losses", "SpikingModule", "trace", "emit", "run_graph", "Graph", "Node", "Pipeline", "PassContext", "register_pass",
           "get_pass", "errors", "SnnCompileError",
           "neuron_families", "register_family", "get_family", "NeuronFamily", "NeuronSpec", "Param"]
__version__ = "0.1.0"
