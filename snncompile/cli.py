"""The ``snncompile`` command line: inspect, compile, demo."""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import torch

from .errors import ConfigError, SnnCompileError

__all__ = ["main", "load_model"]


def load_model(spec: str, pretrained: bool = True):
    """``spec`` is a registry name (models/) or ``path/to/file.py:factory``.
    Returns ``(model, example_input, calibration_data, description_of_data)``."""
    from snncompile.models import MODELS, checkpoint_path, example_input, get_model

    if ":" in spec and spec.split(":")[0].endswith(".py"):
        path, factory = spec.rsplit(":", 1)
        if not os.path.exists(path):
            raise ConfigError(f"no file {path!r}; give MODEL as a registry name or path/to/file.py:factory")
        mod_spec = importlib.util.spec_from_file_location("_snncompile_user_model", path)
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)
        if not hasattr(mod, factory):
            raise ConfigError(f"{path} has no {factory!r}; give path/to/file.py:factory where factory() returns a model")
        model = getattr(mod, factory)().eval()
        shape = getattr(model, "input_shape", None) or getattr(mod, "INPUT_SHAPE", None)
        if shape is None:
            raise ConfigError(f"{path}: set INPUT_SHAPE = (C, H, W) in the file (or model.input_shape) so "
                              "snncompile knows the example input")
        x = torch.rand((8,) + tuple(shape), generator=torch.Generator().manual_seed(0))
        return model, x, x, "random inputs (no data known for a user model)"
    from .demo import ALIASES

    spec = ALIASES.get(spec, spec)
    if spec not in MODELS:
        raise ConfigError(f"unknown model {spec!r}; known: {', '.join(MODELS)} (or path/to/file.py:factory)")
    entry = MODELS[spec]
    ckpt = checkpoint_path(spec)
    has_ckpt = pretrained and ckpt is not None and ckpt.exists()
    model = get_model(spec, pretrained=has_ckpt)
    if tuple(entry.input_shape) == (1, 28, 28):
        try:
            from snncompile.models.data import mnist_split
            x_tr = mnist_split()[0]
            return model, x_tr[:8], x_tr[:512], "512 real MNIST training digits"
        except Exception:
            pass
    x = example_input(spec, batch=8)
    return model, x, x, "random inputs"


def _cmd_inspect(a) -> int:
    from .convert import conversion_pipeline
    from .frontend.fx import trace
    from .pipeline import PassContext, Pipeline

    model, x, calib, what = load_model(a.model)
    graph = trace(model, x)
    pa = a.print_after if a.print_after is not None else "all"
    if a.passes:
        pipe = Pipeline(a.passes, print_after=pa, dump_dir=a.dump)
    elif a.train:
        from .trainable import training_pipeline
        pipe = training_pipeline(neuron=a.neuron, surrogate=a.surrogate, print_after=pa, dump_dir=a.dump)
    else:
        pipe = conversion_pipeline(print_after=pa, dump_dir=a.dump)
    print(f"// {a.model}: pipeline {pipe}\n// calibration: {what}")
    pipe.run(graph, PassContext(calibration_data=calib))
    print("// pass timings\n" + pipe.timing_table())
    return 0


def _cmd_compile(a) -> int:
    from .convert import compile as compile_snn

    model, x, calib, what = load_model(a.model)
    snn = compile_snn(model, calib, T=a.T, normalize=a.normalize, percentile=a.percentile,
                      granularity=a.granularity, v_init=a.v_init, backend=a.backend,
                      print_after=a.print_after, dump_dir=a.dump)
    print(f"// {a.model} compiled (calibration: {what}); pipeline {snn.pipeline}")
    print("// the SNN (the stage before lowering: what exporters and analyses read)")
    print(snn.semantic_graph)
    print("// lowered for the runtime (hoist-static, fusions): what runs")
    print(snn.graph)
    print(snn.code)
    if a.out:
        torch.save(snn, a.out)
        print(f"saved the SpikingModule to {a.out}")
    return 0


def _cmd_demo(a) -> int:
    from .demo import run_demo

    run_demo(a.model, backend=a.backend)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``snncompile`` command; returns the exit status."""
    ap = argparse.ArgumentParser(prog="snncompile", description="Compile trained ANNs into spiking networks.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("inspect", help="trace a model and print the graph after each pass")
    i.add_argument("model", help="registry name (e.g. mnist_cnn) or path/to/file.py:factory")
    i.add_argument("--passes", help="pipeline spec, e.g. 'canonicalize,fold-batchnorm' (default: conversion)")
    i.add_argument("--print-after", default=None, help="'all' or comma-separated pass names (default all)")
    i.add_argument("--dump", default=None, help="write NN-pass.txt for every stage into this folder")
    i.add_argument("--train", action="store_true", help="the direct-training pipeline (insert-surrogate) "
                   "instead of the conversion pipeline")
    i.add_argument("--neuron", default="lif", choices=["if", "lif"], help="with --train: the neuron")
    i.add_argument("--surrogate", default="atan", help="with --train: the surrogate")
    i.set_defaults(fn=_cmd_inspect)
    c = sub.add_parser("compile", help="convert a model to an SNN and print it")
    c.add_argument("model")
    c.add_argument("--T", type=int, default=32)
    c.add_argument("--normalize", default="percentile", choices=["max", "percentile", "fixed"])
    c.add_argument("--percentile", type=float, default=99.9)
    c.add_argument("--granularity", default="channel", choices=["layer", "channel"])
    c.add_argument("--v-init", type=float, default=0.5)
    c.add_argument("--backend", default="auto")
    c.add_argument("--print-after", default=None)
    c.add_argument("--dump", default=None)
    c.add_argument("--out", default=None, help="torch.save the SpikingModule here")
    c.set_defaults(fn=_cmd_compile)
    d = sub.add_parser("demo", help="the main job: MNIST accuracy per T")
    d.add_argument("model", nargs="?", default="mnist", help="mnist (default), vgg_mnist or resnet20_mnist")
    d.add_argument("--backend", default="auto")
    d.set_defaults(fn=_cmd_demo)
    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except (SnnCompileError, FileNotFoundError) as e:
        print(f"snncompile: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
