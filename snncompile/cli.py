"""The ``snncompile`` command line: inspect (models and .nir files), compile (``--nir`` exports), demo.

Errors print one line, ``snncompile: error: ...``, and exit 2 for a usage error (a bad
argument or option, an unknown model or demo, an ``--out`` that cannot be written: checked
before the compile) or 1 for a failure (the model file raised, a pass failed, ...); ``--debug``
adds the traceback.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import traceback

import torch

from .errors import ConfigError, SnnCompileError

__all__ = ["main", "load_model", "ModelFileError"]


class ModelFileError(SnnCompileError):
    """The user's model file (``path/to/file.py:factory``) failed to load or build the model."""


class _UsageError(Exception):
    """argparse found a bad command line (already one line of text)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the usage and exits)
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _run_user_file(path: str, factory: str):
    """Import ``path`` and call ``factory()``; ModelFileError naming the file, line and error."""
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


def _onnx_data(path: str):
    """``(example_input, calibration_data, description)`` for an ONNX file: real MNIST digits when
    its input is one 1x28x28 image per sample, else seeded random inputs of its input shape."""
    from . import from_onnx

    graph = from_onnx(path)  # also refuses an unreadable file before anything else runs
    shape = tuple(graph.inputs[0].shape[1:])
    if shape == (1, 28, 28):
        try:
            from snncompile.models.data import mnist_split
            x_tr = mnist_split()[0]
            return x_tr[:8], x_tr[:512], "512 real MNIST training digits"
        except Exception:
            pass
    x = torch.rand((8,) + shape, generator=torch.Generator().manual_seed(0))
    return x, x, "random inputs (no data known for an ONNX model)"


def load_model(spec: str, pretrained: bool = True):
    """``spec`` is a registry name (models/), ``path/to/file.py:factory`` or ``path/to/model.onnx``.
    Returns ``(model, example_input, calibration_data, description_of_data)``; for an ONNX file
    ``model`` is its path (``snncompile.from_onnx`` reads it)."""
    from snncompile.models import MODELS, checkpoint_path, example_input, get_model

    if spec.lower().endswith(".onnx"):
        if not os.path.isfile(spec):
            raise ConfigError(f"no file {spec!r}; give MODEL as a registry name, path/to/file.py:factory or a .onnx file")
        return (spec,) + _onnx_data(spec)
    if ":" in spec and spec.split(":")[0].endswith(".py"):
        path, factory = spec.rsplit(":", 1)
        if not os.path.isfile(path):
            raise ConfigError(f"no file {path!r}; give MODEL as a registry name or path/to/file.py:factory")
        mod, model = _run_user_file(path, factory)
        shape = getattr(model, "input_shape", None) or getattr(mod, "INPUT_SHAPE", None)
        if shape is None:
            raise ConfigError(f"{path}: set INPUT_SHAPE = (C, H, W) in the file (or model.input_shape) so "
                              "snncompile knows the example input")
        x = torch.rand((8,) + tuple(shape), generator=torch.Generator().manual_seed(0))
        return model, x, x, "random inputs (no data known for a user model)"
    if spec.endswith(".py"):
        raise ConfigError(f"give a model file as {spec}:factory (the function in it that returns the model)")
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


def _print_after(value):
    """``--print-after``: None (the environment's), "none" (nothing), "all" or pass names."""
    return () if value is not None and value.strip().lower() == "none" else value


def _cmd_inspect(a) -> int:
    from .convert import conversion_pipeline
    from .frontend.fx import trace
    from .pipeline import PassContext, Pipeline

    if a.model.lower().endswith(".nir"):
        from .export.nir_show import inspect_nir_file
        inspect_nir_file(a.model)
        return 0
    model, x, calib, what = load_model(a.model)
    if isinstance(model, str):  # an ONNX file
        from . import from_onnx
        graph = from_onnx(model)
    else:
        graph = trace(model, x)
    pa = _print_after(a.print_after) if a.print_after is not None else "all"
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


def _check_writable(out: str, option: str = "--out", example: str = "snn.safetensors") -> None:
    """ConfigError unless a file can be written at ``out`` (checked before a long compile)."""
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


def _cmd_compile(a) -> int:
    from .convert import compile as compile_snn

    if a.out:
        _check_writable(a.out)
    if a.nir:
        from .export.nir import require_nir
        require_nir()  # before the compile: a missing or unsupported nir is known now
        _check_writable(a.nir, "--nir", "snn.nir")
    model, x, calib, what = load_model(a.model)
    snn = compile_snn(model, calib, T=a.T, normalize=a.normalize, percentile=a.percentile,
                      granularity=a.granularity, v_init=a.v_init, backend=a.backend,
                      print_after=_print_after(a.print_after), dump_dir=a.dump)
    print(f"// {a.model} compiled (calibration: {what}); pipeline {snn.pipeline}")
    print("// the SNN (the stage before lowering: what exporters and analyses read)")
    print(snn.semantic_graph)
    print("// lowered for the runtime (hoist-static, fusions): what runs")
    print(snn.graph)
    print(snn.code)
    if a.out:
        snn.save(a.out)
        print(f"saved the SNN to {a.out} (load it with snncompile.load({a.out!r}))")
    if a.nir:
        from .export.nir import export_nir
        graph = export_nir(snn, a.nir, form=a.nir_form)
        print(f"wrote the SNN as NIR to {a.nir} ({len(graph.nodes)} nodes, {len(graph.edges)} edges, form "
              f"{a.nir_form}; snncompile.from_nir({a.nir!r}) or 'snncompile inspect {a.nir}' reads it)")
    return 0


def _cmd_demo(a) -> int:
    from .demo import run_demo, run_low_latency_demo

    if a.low_latency:
        run_low_latency_demo(a.model, backend=a.backend)
    else:
        run_demo(a.model, backend=a.backend)
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of time steps") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of time steps")
    return value


def _parser() -> argparse.ArgumentParser:
    debug = _Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the Python traceback of an error")
    ap = _Parser(prog="snncompile", description="Compile trained ANNs into spiking networks.", parents=[debug])
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    i = sub.add_parser("inspect", help="trace a model and print the graph after each pass", parents=[debug])
    i.add_argument("model", help="registry name (e.g. mnist_cnn), path/to/file.py:factory, path/to/model.onnx, or "
                   "path/to/graph.nir (prints the NIR graph and what snncompile reads from it)")
    i.add_argument("--passes", help="pipeline spec, e.g. 'canonicalize,fold-batchnorm' (default: conversion)")
    i.add_argument("--print-after", default=None, help="'all' (default), 'none' or comma-separated pass names")
    i.add_argument("--dump", default=None, help="write NN-pass.txt for every stage into this folder")
    i.add_argument("--train", action="store_true", help="the direct-training pipeline (insert-surrogate) "
                   "instead of the conversion pipeline")
    i.add_argument("--neuron", default="lif", choices=["if", "lif"], help="with --train: the neuron")
    i.add_argument("--surrogate", default="atan", help="with --train: the surrogate")
    i.set_defaults(fn=_cmd_inspect)
    c = sub.add_parser("compile", help="convert a model to an SNN and print it", parents=[debug])
    c.add_argument("model", help="registry name, path/to/file.py:factory or path/to/model.onnx")
    c.add_argument("--T", type=_positive_int, default=32)
    c.add_argument("--normalize", default="percentile", choices=["max", "percentile", "fixed"])
    c.add_argument("--percentile", type=float, default=99.9)
    c.add_argument("--granularity", default="channel", choices=["layer", "channel"])
    c.add_argument("--v-init", type=float, default=0.5)
    c.add_argument("--backend", default="auto")
    c.add_argument("--print-after", default=None, help="'all', 'none' or comma-separated pass names")
    c.add_argument("--dump", default=None)
    c.add_argument("--out", default=None, help="save the SNN here (snn.save: safetensors + JSON; "
                   "snncompile.load reads it)")
    c.add_argument("--nir", default=None, metavar="OUT.nir", help="also write the SNN as a NIR graph (needs "
                   "snncompile[nir]); snncompile.from_nir reads it back")
    c.add_argument("--nir-form", default="subtract", choices=["subtract", "if"], help="with --nir: 'subtract' keeps "
                   "reset by subtraction exactly (integrator + threshold + feedback); 'if' writes plain IF nodes")
    c.set_defaults(fn=_cmd_compile)
    d = sub.add_parser("demo", help="the main job: MNIST accuracy per T", parents=[debug])
    d.add_argument("model", nargs="?", default="mnist", help="mnist (default), vgg_mnist or resnet20_mnist")
    d.add_argument("--backend", default="auto")
    d.add_argument("--low-latency", action="store_true", help="the few-step report instead (MNIST CNN only): "
                   "accuracy at T=1..32 for each training-free technique on every checkpoint (a few minutes)")
    d.set_defaults(fn=_cmd_demo)
    return ap


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``snncompile`` command; returns the exit status (0 done, 1 a failure,
    2 a usage error, 130 interrupted)."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        a = _parser().parse_args(args)
    except _UsageError as e:
        print(f"snncompile: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    debug = getattr(a, "debug", False)
    try:
        return a.fn(a)
    except KeyboardInterrupt:
        print("snncompile: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            traceback.print_exc()
        usage = isinstance(e, ConfigError)
        what = _one_line(e) if isinstance(e, SnnCompileError) else f"{type(e).__name__}: {_one_line(e)}"
        hint = "" if debug or isinstance(e, SnnCompileError) else " (run with --debug for the traceback)"
        print(f"snncompile: error: {what}{hint}", file=sys.stderr)
        return 2 if usage else 1


if __name__ == "__main__":
    sys.exit(main())
