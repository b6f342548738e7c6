"""The ``snncompile`` command line's parser: every option with its help text, its choices and a
type that refuses a bad value (argparse errors become one line and exit 2, see ``_Parser``).
Imports nothing heavy: ``snncompile --help`` runs without torch."""
from __future__ import annotations

import argparse

__all__ = ["build_parser", "BACKENDS", "NORMALIZE_MODES", "CALIBRATIONS", "SURROGATES", "REPORT_TS", "UsageError"]

#: ``--backend``: where the neurons run (snncompile.convert.choose_backend)
BACKENDS = ("auto", "torch", "cpu", "cupy")
#: ``--normalize``: the normalize pass's modes and "auto" (snncompile.compile's default)
NORMALIZE_MODES = ("auto", "max", "percentile", "fixed", "mse")
#: ``--calibrate``: snncompile.few_steps.CALIBRATIONS and "auto" (snncompile.compile's default)
CALIBRATIONS = ("auto", "none", "bias", "potential", "both")
#: ``inspect --train --surrogate``: snncompile.surrogate.SURROGATES
SURROGATES = ("sigmoid", "atan", "fast_sigmoid", "triangle")
#: ``report --T``: the default steps
REPORT_TS = (1, 2, 4, 8, 16, 32)


class UsageError(Exception):
    """argparse found a bad command line (already one line of text)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the usage and exits)
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _whole(text: str, unit: str = "") -> int:
    """A whole number >= 1 (``unit`` names what it counts in the message, e.g. "time steps")."""
    of = f" of {unit}" if unit else ""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number{of}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number{of}" if unit else f"{value} is not >= 1")
    return value


def _positive_int(text: str) -> int:
    """A number of time steps: a whole number >= 1."""
    return _whole(text, "time steps")


def _steps(text: str) -> tuple[int, ...]:
    """'1,2,4' as (1, 2, 4): positive, sorted, without repeats."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"{text!r} names no time steps; give e.g. 1,2,4,8")
    return tuple(sorted({_positive_int(p) for p in parts}))


def _count(text: str) -> int:
    """A whole number >= 1."""
    return _whole(text)


def _percent(text: str) -> float:
    """A percentile in (0, 100]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"{value:g} is not a percentile in (0, 100]")
    return value


def _number(text: str) -> float:
    """A float."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


_DATA_FORMATS = ".npy (inputs), .npz (x and optional y), .pt (a tensor, (x, y) or {'x':, 'y':}) or a folder of images " \
                "(one sub-folder per class)"


def _data_options(p: argparse.ArgumentParser, calib_help: str, data_help: str) -> None:
    """--calib FILE and --data FILE, with the command's help for each."""
    p.add_argument("--calib", metavar="FILE", default=None, help=f"{calib_help}: {_DATA_FORMATS}")
    p.add_argument("--data", metavar="FILE", default=None, help=data_help)


def _backend_option(p: argparse.ArgumentParser) -> None:
    """--backend with its choices."""
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="where the neurons run: auto (default: CuPy on CUDA, the fused C loop on the CPU, else torch), "
                        "torch (the reference), cpu, cupy")


def build_parser() -> argparse.ArgumentParser:
    """The ``snncompile`` parser: its sub-commands set ``cmd`` (inspect, compile, demo, report)."""
    debug = _Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the Python traceback of an error")
    ap = _Parser(prog="snncompile", description="Compile trained ANNs into spiking networks. MODEL is a registry name "
                 "(mnist_cnn, mlp, vgg_mnist, ...; 'mnist' is the shipped MNIST CNN), path/to/file.py:factory "
                 "(factory() returns the model; set INPUT_SHAPE in the file) or path/to/model.onnx. Give your own data "
                 "with --calib FILE and --data FILE.", parents=[debug])
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    model_help = "registry name (e.g. mnist_cnn), path/to/file.py:factory or path/to/model.onnx"

    i = sub.add_parser("inspect", help="trace a model and print the graph after each pass", parents=[debug],
                       description="Trace a model and print the graph after each pass of the pipeline.")
    i.add_argument("model", help=f"{model_help}, or path/to/graph.nir (prints the NIR graph and what snncompile reads "
                   "from it)")
    _data_options(i, "the calibration inputs (default: the model's real data for a registry model, random inputs "
                  "otherwise)", "inspect measures no accuracy: its inputs calibrate when --calib is not given and the model "
                  "has no real data")
    i.add_argument("--passes", help="pipeline spec, e.g. 'canonicalize,fold-batchnorm' (default: the conversion "
                   "pipeline)")
    i.add_argument("--print-after", default=None, help="'all' (default), 'none' or comma-separated pass names")
    i.add_argument("--dump", default=None, metavar="DIR", help="write NN-pass.txt for every stage into this folder")
    i.add_argument("--train", action="store_true", help="the direct-training pipeline (insert-surrogate) "
                   "instead of the conversion pipeline")
    i.add_argument("--neuron", default="lif", choices=["if", "lif"], help="with --train: the neuron (default lif)")
    i.add_argument("--surrogate", default="atan", choices=SURROGATES, help="with --train: the surrogate gradient "
                   "(default atan)")

    c = sub.add_parser("compile", help="convert a model to an SNN and print it (--data: its accuracy per T)",
                       parents=[debug], description="Convert a model to a spiking network and print it; with --data, "
                       "the SNN's accuracy after each of a few T.")
    c.add_argument("model", help=model_help)
    _data_options(c, "the calibration inputs (default: the model's real data for a registry model, else --data's "
                  "inputs, else random inputs with a warning)", "inputs (and labels) to measure the ANN's and the "
                  "SNN's accuracy on after a few T (see --eval-T); without labels, the SNN's agreement with the ANN; "
                  "the formats of --calib")
    c.add_argument("--T", type=_positive_int, default=32, help="time steps the SNN runs (default 32)")
    c.add_argument("--eval-T", type=_steps, default=None, metavar="LIST", help="with --data: the steps to read the "
                   "accuracy at, e.g. 1,2,4 (default: 1, 2, 4, ... up to --T, and --T)")
    c.add_argument("--normalize", default="auto", choices=NORMALIZE_MODES,
                   help="how each layer's threshold is set: auto (default, as snncompile.compile: mse at T <= 16, "
                        "else percentile), max, percentile (--percentile), fixed (--scale), mse (chosen for T)")
    c.add_argument("--calibrate", default="auto", choices=CALIBRATIONS,
                   help="layer-by-layer correction after conversion (not the data: that is --calib): auto (default, "
                        "as snncompile.compile: bias at T <= 16, else none), none, bias, potential, both")
    c.add_argument("--percentile", type=_percent, default=99.9, help="with --normalize percentile: the percentile "
                   "of activations that sets a threshold (default 99.9)")
    c.add_argument("--granularity", default="channel", choices=["layer", "channel"],
                   help="one threshold per layer or per channel (default channel)")
    c.add_argument("--scale", type=_number, default=1.0, help="with --normalize fixed: every layer's largest "
                   "expected activation (default 1.0)")
    c.add_argument("--v-init", type=_number, default=0.5, help="initial membrane potential, in thresholds (default 0.5)")
    c.add_argument("--max-spikes", type=_count, default=1, help="spikes a neuron may fire per step: 1 (default, IF "
                   "neurons) or more (multi-spike neurons)")
    _backend_option(c)
    c.add_argument("--print-after", default=None, help="'all', 'none' or comma-separated pass names")
    c.add_argument("--dump", default=None, metavar="DIR", help="write NN-pass.txt for every stage into this folder")
    c.add_argument("-o", "--out", default=None, metavar="FILE", help="save the SNN here (snn.save: safetensors + JSON; "
                   "snncompile.load reads it)")
    c.add_argument("--nir", default=None, metavar="OUT.nir", help="also write the SNN as a NIR graph (needs "
                   "snncompile[nir]); snncompile.from_nir reads it back")
    c.add_argument("--nir-form", default="subtract", choices=["subtract", "if"], help="with --nir: 'subtract' keeps "
                   "reset by subtraction exactly (integrator + threshold + feedback); 'if' writes plain IF nodes")

    d = sub.add_parser("demo", help="the main job: MNIST accuracy per T", parents=[debug],
                       description="Convert a shipped MNIST model with three normalizations and print the SNN's "
                       "accuracy per T (--low-latency: the few-step report).")
    d.add_argument("model", nargs="?", default="mnist", help="mnist (default), mlp, vgg_mnist or resnet20_mnist")
    _data_options(d, "calibration inputs instead of the training digits", "inputs with labels instead of the 1,000 "
                  "test digits; the formats of --calib")
    _backend_option(d)
    d.add_argument("--low-latency", action="store_true", help="the few-step report instead (MNIST CNN only): "
                   "accuracy at T=1..32 for each training-free technique on every checkpoint (a few minutes)")

    r = sub.add_parser("report", help="write a report (summary.md and pictures) of a model's conversion",
                       parents=[debug], description="Convert a model at several T and write a report into a folder: "
                       "summary.md and pictures.")
    r.add_argument("model", help=f"{model_help}; 'mnist' is the shipped MNIST CNN")
    _data_options(r, "the calibration inputs (default: the model's real data for a registry model, else --data's "
                  "inputs, else random inputs with a warning)", "inputs (and labels) to measure accuracy on "
                  "(default: the real test digits of an MNIST registry model); the formats of --calib")
    r.add_argument("--T", type=_steps, default=REPORT_TS, metavar="LIST",
                   help=f"the time steps to report, comma-separated (default {','.join(map(str, REPORT_TS))})")
    _backend_option(r)
    r.add_argument("-o", "--out", required=True, metavar="DIR", help="the folder to write summary.md and the pictures "
                   "into (created when missing)")
    return ap
