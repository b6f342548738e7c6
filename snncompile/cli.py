"""The ``snncompile`` command line: inspect (models and .nir files), compile (``--nir`` exports),
demo, report.

Every model command takes the user's own data: ``--calib FILE`` (the calibration inputs) and
``--data FILE`` (inputs and labels to measure accuracy on), each a .npy, .npz or .pt file or a
folder of images (``snncompile.cli_data`` reads them and checks them against the model's input
shape). Without ``--calib`` a registry model calibrates on its real data and a model file or ONNX
model on random inputs, with a warning. Progress bars (tqdm) appear on a terminal only.

Errors print one line, ``snncompile: error: ...``, and exit 2 for a usage error (a bad
argument or option, an unknown model or demo, a missing --calib file, an ``--out`` that cannot
be written: checked before any work) or 1 for a failure (the model file raised, a pass failed,
...); ``--debug`` adds the traceback. Nothing heavy (torch) is imported before a command runs,
so ``snncompile --help`` is quick.
"""
from __future__ import annotations

import os
import sys

from .cli_models import Loaded as _Loaded
from .cli_models import ModelFileError, load_model
from .cli_models import calibration as _calibration
from .cli_models import check_data_options as _check_data_options
from .cli_models import check_out_dir as _check_out_dir
from .cli_models import check_writable as _check_writable
from .cli_models import load as _load
from .cli_models import read_data as _read_data
from .cli_models import registry_name as _registry_name
from .cli_models import say as _say
from .cli_parser import BACKENDS, CALIBRATIONS, NORMALIZE_MODES, REPORT_TS, SURROGATES, UsageError, build_parser
from .errors import ConfigError, SnnCompileError

__all__ = ["main", "load_model", "ModelFileError", "BACKENDS", "NORMALIZE_MODES", "CALIBRATIONS", "SURROGATES",
           "REPORT_TS"]


def _print_after(value):
    """``--print-after``: None (the environment's), "none" (nothing), "all" or pass names."""
    return () if value is not None and value.strip().lower() == "none" else value


def _cmd_inspect(a) -> int:
    """``snncompile inspect``: print a .nir file, or trace MODEL and print the graph after each pass."""
    if a.model.lower().endswith(".nir"):
        if a.calib or a.data:
            raise ConfigError("--calib and --data apply to models; a .nir file is printed as it is")
        from .export.nir_show import inspect_nir_file
        inspect_nir_file(a.model)
        return 0
    _check_data_options(a)
    from .convert import conversion_pipeline
    from .frontend.fx import trace
    from .pipeline import PassContext, Pipeline

    loaded = _load(a.model, real_data=a.calib is None)
    calib, data = _read_data(a, loaded)
    calib_x, x, what, warning = _calibration(a.model, loaded, calib, data)
    if isinstance(loaded.model, str):  # an ONNX file
        from . import from_onnx
        graph = from_onnx(loaded.model)
    else:
        graph = trace(loaded.model, x)
    if warning:
        _say("warning", warning)
    pa = _print_after(a.print_after) if a.print_after is not None else "all"
    if a.passes:
        pipe = Pipeline(a.passes, print_after=pa, dump_dir=a.dump)
    elif a.train:
        from .trainable import training_pipeline
        pipe = training_pipeline(neuron=a.neuron, surrogate=a.surrogate, print_after=pa, dump_dir=a.dump)
    else:
        pipe = conversion_pipeline(print_after=pa, dump_dir=a.dump)
    print(f"// {a.model}: pipeline {pipe}\n// calibration: {what}")
    pipe.run(graph, PassContext(calibration_data=calib_x))
    print("// pass timings\n" + pipe.timing_table())
    return 0


def _eval_steps(a) -> tuple[int, ...]:
    """--eval-T, else 1, 2, 4, ... up to --T, and --T."""
    if a.eval_T:
        return a.eval_T
    steps, t = {a.T}, 1
    while t < a.T:
        steps.add(t)
        t *= 2
    return tuple(sorted(steps))


def _ann_predictions(model, x, batch_size: int = 500):
    """The ANN's argmax per input (an nn.Module, or an ONNX path run through snncompile's IR)."""
    import torch

    if isinstance(model, str):
        from . import from_onnx
        from .emit import emit
        model = emit(from_onnx(model))
    preds = []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            out = model(x[s:s + batch_size])
            preds.append(out.reshape(out.shape[0], -1).argmax(-1))
    return torch.cat(preds)


def _print_accuracy(model, snn, data, Ts: tuple[int, ...], T: int) -> dict:
    """--data's accuracy (or, without labels, agreement with the ANN) of the ANN and of the SNN at
    every T in ``Ts`` (one simulation of max(Ts) steps, in batches with a progress bar)."""
    from .demo import accuracy_by_T

    ann = _ann_predictions(model, data.x)
    if data.y is not None:
        target, what = data.y, "accuracy"
        ann_acc = 100.0 * (ann == data.y).float().mean().item()
        head = f"// accuracy on {data.describe()}: ANN {ann_acc:.2f}%"
    else:
        target, what, ann_acc = ann, "agreement with the ANN's predictions", None
        head = f"// {data.source} has no labels: the SNN's agreement with the ANN's predictions on its {len(ann)} inputs"
    acc, secs = accuracy_by_T(snn, data.x, target, Ts, batch_size=256, desc="simulating")
    print(head)
    print(f"// SNN {what} (%) after T steps (compiled for T={T}; {len(data.x)} inputs x T={max(Ts)} in {secs:.2f}s):")
    print("//  " + "".join(f"{'T=' + str(t):>9}" for t in Ts))
    print("//  " + "".join(f"{acc[t]:>9.2f}" for t in Ts))
    return {"ann": ann_acc, "snn": acc}


def _cmd_compile(a) -> int:
    """``snncompile compile``: convert MODEL, print the SNN (and --data's accuracy per T), save it."""
    if a.out:
        _check_writable(a.out, "--out/-o")
    if a.nir:
        _check_writable(a.nir, "--nir", "snn.nir")
    _check_data_options(a)
    if a.eval_T and not a.data:
        raise ConfigError("--eval-T reads --data's accuracy; give --data FILE too")
    if a.nir:
        from .export.nir import require_nir
        require_nir()  # before the compile: a missing or unsupported nir is known now
    from .convert import compile as compile_snn

    loaded = _load(a.model, real_data=a.calib is None)
    calib, data = _read_data(a, loaded)
    calib_x, _, what, warning = _calibration(a.model, loaded, calib, data)
    snn = compile_snn(loaded.model, calib_x, T=a.T, normalize=a.normalize, calibrate=a.calibrate,
                      percentile=a.percentile, granularity=a.granularity, scale=a.scale, v_init=a.v_init,
                      max_spikes=a.max_spikes, backend=a.backend, print_after=_print_after(a.print_after),
                      dump_dir=a.dump)
    if warning:
        _say("warning", warning)
    print(f"// {a.model} compiled (calibration: {what}); pipeline {snn.pipeline}")
    print("// the SNN (the stage before lowering: what exporters and analyses read)")
    print(snn.semantic_graph)
    print("// lowered for the runtime (hoist-static, fusions): what runs")
    print(snn.graph)
    print(snn.code)
    if data is not None:
        _print_accuracy(loaded.model, snn, data, _eval_steps(a), a.T)
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
    """``snncompile demo``: the MNIST accuracy table (or --low-latency), on the user's data if given."""
    _check_data_options(a)
    from . import demo

    key = demo._demo_key(a.model)
    kwargs: dict = {"backend": a.backend}
    if a.calib or a.data:
        from snncompile.models import MODELS

        loaded = _Loaded(key, None, None, "", tuple(MODELS[key].input_shape), True)
        calib, data = _read_data(a, loaded)
        if data is not None and data.y is None:
            raise ConfigError(f"{data.source} has no labels; the demo measures accuracy: give a file with labels "
                              "(.npz with x and y, a .pt (x, y) or a folder with one sub-folder per class)")
        for d in (calib, data):
            if d is not None:
                print(f"// {d.describe()}")
        if a.low_latency:
            x_tr = calib.x if calib is not None else None
            x_te, y_te = (data.x, data.y) if data is not None else (None, None)
            if x_tr is None or x_te is None:
                from snncompile.models.data import mnist_split
                split = mnist_split()
                x_tr = split[0] if x_tr is None else x_tr
                x_te, y_te = (split[2], split[3]) if x_te is None else (x_te, y_te)
            kwargs.update(data=(x_tr, None, x_te, y_te), n_calib=len(x_tr))
        else:
            if calib is not None:
                kwargs["calib"] = calib.x
            if data is not None:
                kwargs["data"] = (data.x, data.y)
    if a.low_latency:
        demo.run_low_latency_demo(a.model, **kwargs)
    else:
        demo.run_demo(a.model, **kwargs)
    return 0


def _cmd_report(a) -> int:
    """``snncompile report``: ``snncompile.report.write_report`` into -o DIR; print where it wrote."""
    if a.model.lower().endswith(".onnx"):
        raise ConfigError("report takes a registry name or path/to/file.py:factory, not an ONNX file yet; "
                          "'snncompile compile MODEL.onnx --data FILE' gives its accuracy per T")
    out_dir = _check_out_dir(a.out)
    _check_data_options(a)
    from .report import PICTURES, write_report

    name = _registry_name(a.model)
    if name is not None:  # the report knows the registry's models and their real data (the defaults)
        from snncompile.models import MODELS

        shape = tuple(MODELS[name].input_shape)
        calib, data = _read_data(a, _Loaded(name, None, None, "", shape, True))
        model, calib_x = a.model, (None if calib is None else calib.x)
        what = calib.describe() if calib is not None else "the report's default (the model's real data)"
        if calib is None and data is not None and shape != (1, 28, 28):
            calib_x, what = data.x, f"{data.source}'s inputs (no --calib given)"
    else:
        loaded = _load(a.model, real_data=False)
        calib, data = _read_data(a, loaded)
        calib_x, _, what, warning = _calibration(a.model, loaded, calib, data)
        if warning:
            _say("warning", warning)
        model = loaded.model
    x, y = (None, None) if data is None else (data.x, data.y)
    data_what = data.describe() if data is not None else (
        "the report's default (the model's real test digits)" if name is not None else
        "none: the calibration inputs are analysed, no accuracy (give --data FILE with labels)")
    print(f"// {a.model}: report at T = {', '.join(map(str, a.T))}; calibration: {what}; data: {data_what}")
    summary = write_report(model, out_dir, calib=calib_x, data=x, labels=y, T_values=tuple(a.T), backend=a.backend)
    pictures = [f for f in PICTURES if os.path.isfile(os.path.join(out_dir, f))]
    print(f"wrote the report: {summary}")
    if pictures:
        print(f"pictures ({len(pictures)}) in {out_dir}: {', '.join(pictures)}")
    return 0


_COMMANDS = {"inspect": _cmd_inspect, "compile": _cmd_compile, "demo": _cmd_demo, "report": _cmd_report}


def _parser():
    """The command line's parser (``snncompile.cli_parser.build_parser``)."""
    return build_parser()


def _one_line(e: BaseException) -> str:
    """The error's message on one line (its lines joined by ' | ')."""
    text = str(e).strip() or type(e).__name__
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``snncompile`` command; returns the exit status (0 done, 1 a failure,
    2 a usage error, 130 interrupted)."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        a = _parser().parse_args(args)
    except UsageError as e:
        print(f"snncompile: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    debug = getattr(a, "debug", False)
    try:
        return _COMMANDS[a.cmd](a)
    except KeyboardInterrupt:
        print("snncompile: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            import traceback
            traceback.print_exc()
        usage = isinstance(e, ConfigError)
        what = _one_line(e) if isinstance(e, SnnCompileError) else f"{type(e).__name__}: {_one_line(e)}"
        hint = "" if debug or isinstance(e, SnnCompileError) else " (run with --debug for the traceback)"
        print(f"snncompile: error: {what}{hint}", file=sys.stderr)
        return 2 if usage else 1


if __name__ == "__main__":
    sys.exit(main())
