"""NIR export and import: an SNN out to other simulators and neuromorphic chips, and back.

    graph = snncompile.export_nir(snn, "mnist.nir")       # or snncompile.to_nir(snn); nir's own writer
    snn2 = snncompile.from_nir("mnist.nir")               # a runnable SpikingModule

Export reads the stage before lowering (no hoisting or fusions leak out) with the module's current
parameters (a trained SNN's learned weights, thresholds and leaks). The conventions written into
every graph (``graph.metadata["snncompile"]``) are ``CONVENTIONS``. Needs the ``nir`` package
(``pip install 'snncompile[nir]'``), versions ``NIR_VERSIONS``.
"""
from __future__ import annotations

import json
import os
import warnings

from ..errors import ConfigError

__all__ = ["export_nir", "to_nir", "from_nir", "read_nir_file", "require_nir", "NIR_VERSIONS", "CONVENTIONS"]

# 1.0.6 added v_reset to IF/LIF/CubaLIF (before it a reset value could not be written or read);
# 1.1 may change the node set or the file layout: refused until tested
NIR_VERSIONS = ((1, 0, 6), (1, 1, 0))

CONVENTIONS = (
    "discrete time, forward Euler with step dt (metadata dt); per step: every node's input is the sum of its "
    "incoming edges; I: v += dt*r*x; IF: v += dt*r*x, spike when v > v_threshold, then v = v_reset; LI/LIF: "
    "v += dt*(v_leak - v + r*x)/tau (LIF then fires and resets as IF); every state starts at 0; an edge that "
    "closes a cycle carries its source's value from the previous step (0 at the first). Neurons reset by "
    "subtraction are I (or LI) -> Threshold -> Scale(reset) -> back into the I: the spike of step t lowers the "
    "membrane before the current of step t+1 arrives. snncompile's membrane v is written relative to its "
    "starting value v_init*theta, and each threshold as the largest float32 below theta - v_init*theta, so "
    "NIR's strict v > threshold fires where snncompile's v >= theta does. The Input receives the encoded input "
    "every step (encode: direct = the same analog value each step; poisson = spikes the consumer draws with "
    "probability x; sequence = one value per step). A readout I integrates the last layer: snncompile's output "
    "is its state after T steps divided by T.")


def require_nir():
    """The ``nir`` module, after checking its version is in ``NIR_VERSIONS``; ConfigError saying
    what to install otherwise."""
    lo, hi = NIR_VERSIONS
    want = f">={'.'.join(map(str, lo))},<{'.'.join(map(str, hi))}"
    try:
        import nir
    except ImportError as e:
        raise ConfigError(f"NIR export/import needs the nir package ({e}); pip install 'snncompile[nir]' "
                          f"(nir{want})") from None
    version = str(getattr(nir, "version", getattr(nir, "__version__", "0")))
    parts = tuple(int(p) for p in version.split("+")[0].split(".")[:3] if p.isdigit())
    if not lo <= parts < hi:
        raise ConfigError(f"nir {version} is installed but snncompile supports nir{want} (1.0.6 added v_reset to "
                          f"IF/LIF; 1.1 is not yet tested) — pip install 'nir{want}'")
    return nir


def _semantic_now(snn):
    """The stage before lowering with the module's current values, batch norm folded into its layer."""
    from ..live_params import semantic_graph_now
    from ..pipeline import PassContext, get_pass

    return get_pass("fold-batchnorm")(semantic_graph_now(snn), PassContext())


def to_nir(snn, *, form: str = "subtract", dt: float = 1.0):
    """The SNN as a ``nir.NIRGraph``. ``form="subtract"`` (default) keeps reset by subtraction exactly
    (see ``CONVENTIONS``); ``form="if"`` writes plain IF/LIF nodes for consumers that take only those,
    with a warning: they reset the membrane to 0, so what a neuron gets above threshold is lost and
    rates (and accuracy) fall. ``dt`` is the step written (``r = 1/dt``). UnsupportedOpError
    naming the node for anything NIR 1.0 cannot express (max pools, multi-spike neurons, opaque ops)."""
    nir = require_nir()
    from .nir_write import write_graph

    if form not in ("subtract", "if"):
        raise ConfigError(f"to_nir: form must be 'subtract' (exact) or 'if' (plain IF nodes), got {form!r}")
    if not (isinstance(dt, (int, float)) and not isinstance(dt, bool) and dt > 0):
        raise ConfigError(f"to_nir: dt must be a positive number (the step length), got {dt!r}")
    from .. import __version__

    meta = {"snncompile": json.dumps({"version": __version__, "dt": float(dt), "T": int(snn.T), "form": form,
                                      "conventions": CONVENTIONS})}
    graph, plain = write_graph(nir, _semantic_now(snn), dt=dt, form=form, metadata=meta)
    if plain:
        warnings.warn(f"to_nir(form='if'): {len(plain)} neuron layer(s) reset by subtraction (first: {plain[0]}) are "
                      "written as plain NIR IF/LIF nodes that reset the membrane to 0: the part of the "
                      "membrane above threshold is lost at each spike, so firing rates and accuracy drop; use "
                      "form='subtract' (the default) for an exact graph", stacklevel=2)
    return graph


def export_nir(snn, path, *, form: str = "subtract", dt: float = 1.0):
    """Write the SNN to ``path`` with nir's own writer (``nir.write``) and return the graph; see
    ``to_nir`` for ``form`` and ``dt``."""
    nir = require_nir()
    graph = to_nir(snn, form=form, dt=dt)
    nir.write(os.fspath(path), graph)
    return graph


def read_nir_file(path, where: str = "from_nir"):
    """The ``nir.NIRGraph`` in the file at ``path`` (nir's reader, with its type check);
    ConfigError naming ``where`` for a missing file or one nir cannot read."""
    nir = require_nir()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(f"{where}: no such file {path!r}")
    try:
        return nir.read(path)
    except Exception as e:  # h5py / nir raise many kinds
        raise ConfigError(f"{where}: {path!r} is not a NIR file nir {nir.version} can read ({type(e).__name__}: "
                          f"{e})") from None


def from_nir(graph, *, T: int | None = None, dt: float | None = None, backend: str = "auto"):
    """A runnable SpikingModule from a NIR graph (a ``nir.NIRGraph`` or a path to a .nir file),
    written by snncompile or by another tool. ``T``: default steps (the graph's, else 32; a
    sequence input brings its own); ``dt``: the step the graph's time constants are in (the graph's
    metadata, else 1). UnsupportedOpError naming the NIR node for a primitive or parameter
    combination snncompile cannot run exactly."""
    nir = require_nir()
    from .nir_read import read_graph

    where = "from_nir"
    if isinstance(graph, (str, os.PathLike)):
        graph = read_nir_file(graph, where)
    if not isinstance(graph, nir.NIRGraph):
        raise ConfigError(f"{where}: expected a nir.NIRGraph or a path to a .nir file, got {type(graph).__name__}")
    return read_graph(nir, graph, T=T, dt=dt, backend=backend)
