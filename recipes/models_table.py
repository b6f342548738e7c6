"""Every zoo model through snncompile.compile, as one markdown table.

    python -m snncompile.recipes.models_table                        # all entries of ZOO
    python -m snncompile.recipes.models_table --only resnet18 --T 16 64 128

One row a model: model | library | input | result | compile seconds. The result is
"converts: error 0.49 at T=16 → 0.18 at T=128" (relative error of mean-centred logits against
the ANN, ``snncompile.recipes.zoo.convergence``), "refused: <first line of the snncompile
error>", "CRASH: <type>: <first line>" for any other exception, or "TIME LIMIT" when a model
takes longer than --time-limit seconds. A result that is not the entry's expectation says so;
one that changed the user's model says what changed. One model's failure never stops the run.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
import traceback
import warnings

import torch

from snncompile.errors import SnnCompileError

from .zoo import ZOO, ZooEntry, compile_defaults, convergence

__all__ = ["ZooTimeLimit", "time_limit", "first_line", "run_entry", "table", "select", "main"]


class ZooTimeLimit(BaseException):
    """A zoo model ran past its time limit. A BaseException, so that no ``except Exception`` on
    the way (a tracer that records failures, say) turns it into another error."""


def _raise_time_limit(seconds: float):
    raise ZooTimeLimit(f"still running after {seconds:g} s")


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise ZooTimeLimit in the block after ``seconds`` (SIGALRM; a no-op where there is no
    SIGALRM, off the main thread, or when ``seconds`` is None); the previous handler is restored."""
    usable = seconds and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return
    old = signal.signal(signal.SIGALRM, lambda signum, frame: _raise_time_limit(seconds))
    # the alarm repeats every 0.1 s: a raise that lands where Python swallows it (a __del__ or a
    # weakref callback during garbage collection: "Exception ignored in ...") comes again
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.1)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its type name when the message is empty)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _converts_text(errors: dict[int, float]) -> str:
    return "converts: error " + " → ".join(f"{e:.2f} at T={t}" for t, e in sorted(errors.items()))


def run_entry(entry: ZooEntry, T_list: tuple[int, ...] = (16, 128), n_images: int = 2,
              limit_s: float = 300.0, held_out: bool = False) -> tuple[str, float | None]:
    """Run one entry (``convergence``, with ``held_out``, for a "converts" entry; ``compile_defaults`` for
    a "refused" one) within ``limit_s`` seconds. Returns the result text of its row and the compile seconds
    (None where compile did not finish). Never raises for the model's sake: snncompile errors,
    other exceptions and the time limit all become result text."""
    compile_s: float | None = None
    changes: list[str] = []
    note = ""
    t0 = time.perf_counter()
    try:
        with time_limit(limit_s):
            if entry.expect == "converts":
                res = convergence(entry, T_list=T_list, n_images=n_images, held_out=held_out)
                text, compile_s, changes = _converts_text(res.errors), res.compile_s, res.changes
            else:
                res = compile_defaults(entry)
                err, compile_s, changes = res.error, res.compile_s, res.changes
                if err is None:
                    text, note = "converts", f" (expected a refusal naming {' / '.join(entry.refused)})"
                else:
                    text = f"refused: {first_line(err)}"
                    if problems := entry.refusal_problems(str(err)):
                        note = f" (the message names {' and '.join(problems)})"
    except SnnCompileError as err:  # a "converts" entry refused
        text, note = f"refused: {first_line(err)}", " (expected: converts)"
    except ZooTimeLimit:
        text = f"TIME LIMIT: still running after {time.perf_counter() - t0:.0f} s"
    except Exception as err:  # noqa: BLE001 -- the table records every other failure as a crash
        frame = traceback.extract_tb(err.__traceback__)[-1]
        text = f"CRASH: {type(err).__name__}: {first_line(err)} ({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})"
    if changes:
        note += f"; MODIFIED the user's model: {', '.join(changes[:3])}{' ...' if len(changes) > 3 else ''}"
    return text + note, compile_s


def table(entries: list[ZooEntry], T_list: tuple[int, ...] = (16, 128), n_images: int = 2,
          limit_s: float = 300.0, held_out: bool = False, out=None) -> list[tuple[str, str, str, str, str]]:
    """Print the markdown table of ``entries`` to ``out`` (default stdout), a row as soon as it
    is measured (``run_entry``'s options); returns the rows (model, library, input, result,
    compile seconds) as text."""
    out = out or sys.stdout
    rows = []
    print("| model | library | input | result | compile s |", file=out)
    print("|---|---|---|---|---|", file=out, flush=True)
    for entry in entries:
        text, compile_s = run_entry(entry, T_list, n_images, limit_s, held_out)
        secs = "-" if compile_s is None else f"{compile_s:.1f}"
        row = (entry.arch, entry.library, "x".join(map(str, entry.input_shape)), text.replace("|", "\\|"), secs)
        rows.append(row)
        print("| " + " | ".join(row) + " |", file=out, flush=True)
    return rows


def select(names: list[str] | None) -> list[ZooEntry]:
    """The entries named in ``names`` (a full ``library/arch`` name, or an arch matching every
    library that has it); all of ZOO when ``names`` is empty. SystemExit on an unknown name."""
    if not names:
        return list(ZOO)
    picked = []
    for n in names:
        hits = [e for e in ZOO if n in (e.name, e.arch)]
        if not hits:
            raise SystemExit(f"models_table: no zoo entry {n!r}; known: {', '.join(e.name for e in ZOO)}")
        picked += [e for e in hits if e not in picked]
    return picked


def main(argv: list[str] | None = None) -> list[tuple[str, str, str, str, str]]:
    """Parse the command line (--only NAME ..., --T T ..., --images N, --time-limit S, --held-out, --threads N),
    print the table and return its rows."""
    ap = argparse.ArgumentParser(prog="python -m snncompile.recipes.models_table", description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="library/arch or arch (default: every entry)")
    ap.add_argument("--T", nargs="+", type=int, default=[16, 128], help="time steps to measure (default: 16 128)")
    ap.add_argument("--images", type=int, default=2, help="test images per model (default: 2)")
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds per model (default: 300)")
    ap.add_argument("--held-out", action="store_true", help="measure on images other than the calibration images")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if any(t < 1 for t in args.T):
        ap.error("--T takes positive ints")
    if args.threads:
        torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return table(select(args.only), tuple(sorted(set(args.T))), args.images, args.time_limit, args.held_out)


if __name__ == "__main__":
    main()
