"""Direct training in one call: an ANN definition (or a converted SNN) -> a trainable SpikingModule.

    snn = snncompile.to_trainable(model, T=4, neuron="lif", surrogate="atan")
    opt = torch.optim.Adam(snn.parameters())   # fine before the first call, even when built lazily
    loss = snncompile.losses.ce_rate_loss(snn.run_sequence(x), y); loss.backward()

The forward runs all T steps (stateless ops on T folded into the batch, each neuron looping over
T) and gradients flow back through time (BPTT) through the surrogate of every spike. When the
input shape is not known (no ``example_input``, none to infer) the SNN is a ``LazySpikingModule``
that traces the model at its first call and then is the SpikingModule the eager path builds.
"""
from __future__ import annotations

import copy
import warnings
from typing import Any, Sequence

import torch
import torch.nn as nn

from .convert import (check_model, check_runnable, check_steps, choose_backend, encoding_spec, example_on,
                      forward_input_names, graph_of, leaf_types, model_device)
from .errors import ConfigError
from .frontend.fx import trace
from .ir import Graph
from .ops import has_trait
from .pipeline import PassContext, Pipeline, get_pass
from .runtime import SpikingModule

__all__ = ["training_pipeline", "to_trainable", "infer_example_input", "build_trainable", "LazySpikingModule"]


def training_pipeline(*, neuron: str = "lif", surrogate: str = "atan", alpha: float | None = None,
                      tau: float | None = None, beta: float | None = None, threshold: float = 1.0, v_init: float = 0.0,
                      detach_reset: bool = False, learn_threshold: bool = False, learn_leak: bool = False,
                      encoding: str | Sequence[str] = "direct", readout: str = "mean", hoist: bool = True,
                      **instruments) -> Pipeline:
    """The direct-training pipeline; ``instruments`` go to Pipeline (print_after, dump_dir...).
    ``encoding`` is a method, or a list of methods, one per input."""
    encoding = encoding_spec(encoding, "training_pipeline")
    passes = [
        # one spelling per op; dropout stays because it acts while training
        get_pass("canonicalize", keep_dropout=True),
        # no normalization and no BN folding: the weights are learned with the neurons
        get_pass("insert-surrogate", neuron=neuron, surrogate=surrogate, alpha=alpha, tau=tau, beta=beta,
                 threshold=threshold, v_init=v_init, detach_reset=detach_reset,
                 learn_threshold=learn_threshold, learn_leak=learn_leak),
        get_pass("encode-input", method=encoding),
        get_pass("readout", mode=readout),
    ]
    if hoist and set(encoding.split(";")) == {"direct"}:
        # the layers before the first neuron see the same image every step: run them once
        # (batch norm's batch statistics are the same over N as over T*N copies)
        passes.append(get_pass("hoist-static"))
    # a neuron and the k x k average pool reading its spikes become one op: on the CPU the
    # training kernels then never store the spikes and fold the pool's backward into BPTT
    passes.append(get_pass("fuse-neuron-sumpool", avgpool=True))
    return Pipeline(passes, **instruments)


def infer_example_input(model: nn.Module) -> torch.Tensor:
    """A zero input batch of 2 for ``model``: from its ``input_shape`` attribute, else from its
    first module when that is an ``nn.Linear``; ConfigError asking for ``example_input`` otherwise."""
    shape = getattr(model, "input_shape", None)
    if shape is None:
        first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))), None)
        if isinstance(first, nn.Linear):
            shape = (first.in_features,)
    if shape is None:
        raise ConfigError(f"cannot tell the input shape of {type(model).__name__}; pass example_input= "
                          "(one batch of inputs, one step's shape for a sequence model) or give the model an "
                          "input_shape attribute")
    return torch.zeros((2,) + tuple(shape))


def to_trainable(model: Any, T: int = 4, neuron: str = "lif", surrogate: str = "atan", *,
                 example_input: Any = None, alpha: float | None = None, tau: float | None = None,
                 beta: float | None = None, threshold: float = 1.0, v_init: float = 0.0,
                 detach_reset: bool = False, learn_threshold: bool = False, learn_leak: bool = False,
                 encoding: str | Sequence[str] = "direct", readout: str = "mean", backend: str = "auto",
                 hoist: bool = True, pipeline: Pipeline | str | None = None, device: Any = None,
                 print_after=None, leaf_modules: Any = ()) -> SpikingModule:
    """Turn an ANN definition into a spiking network trained with surrogate gradients.

    Takes a model (never modified; or an ONNX model: a path ending in ".onnx" or an
    ``onnx.ModelProto``) whose ReLUs become IF or LIF neurons (``neuron``) with the given
    surrogate (see ``insert-surrogate`` for the neuron options; stateful layers from
    snncompile.layers keep theirs), the number of steps T, the input ``encoding`` ("direct",
    "poisson", or "sequence" for inputs given as ``[T, N, ...]``; or one per input) and the
    ``readout`` ("mean" over T or the "last" step). ``example_input`` is one batch (a tuple of
    tensors for a forward of several inputs; one step's shape for sequence models); when absent
    it is inferred (see ``infer_example_input``), and when it cannot be, the SNN is built at its
    first call (see ``LazySpikingModule``: its ``parameters()`` are usable for an optimizer at
    once). ``leaf_modules`` (nn.Module subclasses) go to ``trace``.

    Given a SpikingModule from ``snncompile.compile`` instead, returns a copy of it whose
    neurons get the surrogate (the hybrid: converted weights as the start of a fine-tune); the
    neuron kind, thresholds and the rest of the conversion stay.

    Returns a SpikingModule in train mode; ``snn.run_sequence(x)`` gives ``[T, N, ...]`` for the
    losses in snncompile.losses, ``snn(x)`` the mean (or last) output.
    """
    T = check_steps(T, "to_trainable")
    if isinstance(model, LazySpikingModule):
        raise ConfigError("to_trainable: this SNN is not built yet (to_trainable builds it at its first call); run "
                          "a batch through it first, or pass example_input= when making it")
    if isinstance(model, SpikingModule):
        return _fine_tunable(model, T, surrogate, alpha, detach_reset, learn_threshold, backend)
    onnx = check_model(model, "to_trainable")
    leaves = leaf_types(leaf_modules, "to_trainable")
    opts = dict(neuron=neuron, surrogate=surrogate, alpha=alpha, tau=tau, beta=beta, threshold=threshold,
                v_init=v_init, detach_reset=detach_reset, learn_threshold=learn_threshold, learn_leak=learn_leak,
                encoding=encoding_spec(encoding, "to_trainable"), readout=readout, hoist=hoist)
    if pipeline is not None and not isinstance(pipeline, (Pipeline, str)):
        raise ConfigError(f"to_trainable: pipeline must be a Pipeline or a spec string, got {type(pipeline).__name__}")
    pipe = training_pipeline(**opts, print_after=print_after) if pipeline is None else \
        pipeline if isinstance(pipeline, Pipeline) else Pipeline(pipeline, print_after=print_after)
    device = model_device(model, device, onnx)
    build = dict(T=T, pipe=pipe, backend=backend, leaves=leaves, encoding=opts["encoding"])
    if onnx:
        return build_trainable(graph_of(model, None, leaves, "to_trainable"), device, **build)
    names = forward_input_names(model)
    if example_input is None and len(names) == 1:
        try:
            example_input = infer_example_input(model)
        except ConfigError:
            pass
    if example_input is None:
        if pipeline is None:
            _dry_run(opts)
        return LazySpikingModule(model, device, names, build)
    graph = graph_of(model, example_on(example_input, device, names, "to_trainable"), leaves, "to_trainable")
    return build_trainable(graph, device, **build)


def build_trainable(graph: Graph, device: torch.device, *, T: int, pipe: Pipeline, backend: str,
                    leaves: tuple = (), encoding: str = "direct") -> SpikingModule:
    """Run the training pipeline ``pipe`` on the traced ``graph``; the SpikingModule in train mode
    on ``device`` (``leaves`` and ``encoding`` are what the graph was traced with)."""
    snn_graph = pipe.run(graph, PassContext(T=T, device=device))
    check_runnable(snn_graph, pipe, "to_trainable")
    snn = SpikingModule(snn_graph, T, backend=choose_backend(backend, device), pipeline=pipe, trainable=True)
    return snn.to(device).train()


def _dry_run(opts: dict) -> None:
    """Run the training pipeline with ``opts`` on a one-ReLU graph, so that a bad option is refused
    now and not at a lazy SNN's first call."""
    methods = get_pass("encode-input", method=opts["encoding"]).methods()
    tiny = trace(nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1)), torch.zeros(2, 1))
    quiet = dict(snapshots=False, print_after=(), dump_dir="")  # no $SNNCOMPILE_PRINT_AFTER / _DUMP_DIR output
    training_pipeline(**(opts | {"encoding": methods[0]}), **quiet).run(tiny, PassContext(T=1))


def _fine_tunable(snn: SpikingModule, T: int, surrogate: str, alpha, detach_reset: bool,
                  learn_threshold: bool, backend: str) -> SpikingModule:
    pass_ = get_pass("insert-surrogate", surrogate=surrogate, alpha=alpha, detach_reset=detach_reset)
    graph = pass_(snn.graph.copy(), PassContext(T=T))
    for n in graph.nodes:
        if has_trait(n, "neuron"):
            n.attrs["detach_reset"] = bool(detach_reset)
            n.attrs["learn_threshold"] = bool(learn_threshold)
    graph.verify()
    device = next((b.device for b in snn.buffers()), torch.device("cpu"))
    new = SpikingModule(graph, T, backend=choose_backend(backend, device) if backend != "auto" else snn.backend,
                        pipeline=snn.pipeline, max_chunk_bytes=snn.max_chunk_bytes, trainable=True,
                        allow_nonfinite=snn.allow_nonfinite)
    # the weights as they are now (the graph holds them as converted; snn may have been tuned since)
    missing, unexpected = new.module.load_state_dict(snn.module.state_dict(), strict=False)
    if unexpected or missing:
        raise ConfigError(f"to_trainable: the converted SNN's state does not match its graph "
                          f"(missing {missing}, unexpected {unexpected})")
    return new.to(device).train()


_NEEDS_GRAPH = {"graph", "semantic_graph", "pipeline", "module", "backend", "readout_mode", "sequence_input",
                "trainable", "code", "neurons", "_graph_inputs", "_seq", "_input_names", "_per_sample"}


class LazySpikingModule(SpikingModule):
    """A trainable SNN whose graph is made at its first call, from the shapes of those inputs.

    Until then it holds a private copy of the model as ``self.model``: ``parameters()`` are that
    copy's (make the optimizer at once), ``.to()``, ``.train()``/``.eval()`` and
    ``load_state_dict`` of the model's state (keys ``model.`` + the model's) act on it. The first
    ``snn(x)``/``run_sequence``/``step``/``firing_rates`` traces the copy with those inputs, runs
    the training pipeline, and makes the SNN use the copy's Parameter objects wherever the graph
    keeps a weight unchanged (so the optimizer trains what the SNN computes with); from then on
    the object is a plain SpikingModule, with the eager one's state_dict keys. Before it,
    anything that needs the graph (``graph``, ``pipeline``, ``code``, ``save``, ...) is a
    ConfigError. ``learn_threshold``/``learn_leak`` are refused: those parameters exist only
    after the build, so an optimizer made before it would miss them.
    """

    def __init__(self, model: nn.Module, device: torch.device, names: list[str], build: dict):
        nn.Module.__init__(self)
        if any(getattr(p, "learn_threshold", False) or getattr(p, "learn_leak", False) for p in build["pipe"].passes):
            raise ConfigError("to_trainable: learn_threshold/learn_leak add parameters that exist only once the SNN is "
                              "built, which an optimizer made before its first call would miss — pass example_input= "
                              "(one batch) so the SNN is built now")
        try:
            held = copy.deepcopy(model)
        except Exception as e:
            raise ConfigError(f"to_trainable: could not copy {type(model).__name__} ({type(e).__name__}: {e}); pass "
                              "example_input= so the model is traced now") from None
        odd = {str(p.dtype) for p in held.parameters() if p.is_floating_point() and p.dtype != torch.float32}
        if odd:
            warnings.warn(f"snncompile: the model's parameters are {', '.join(sorted(odd))}; it is trained as a "
                          "float32 copy — pass model.float() to silence this", stacklevel=3)
            held = held.float()
        self.model = held.to(device)
        self.T, self.max_chunk_bytes, self.allow_nonfinite = build["T"], 64 << 20, False
        self._names, self._build_options = names, build
        self.train()

    def __getattr__(self, name: str):
        if name in _NEEDS_GRAPH:
            raise ConfigError(f"snn.{name} needs the SNN's graph, which to_trainable makes at the first call (the "
                              "model's input shape was not known) — run a batch through it first (snn(x)), or pass "
                              "example_input= (one batch) to to_trainable")
        return super().__getattr__(name)

    def extra_repr(self) -> str:
        return "not built yet: the model is traced at the first call"

    @property
    def code(self) -> str:
        """ConfigError: there is no emitted code before the first call."""
        return self.__getattr__("code")

    def neurons(self):
        """ConfigError: there are no neuron layers before the first call."""
        return self.__getattr__("neurons")

    def reset(self) -> None:
        """Nothing to reset before the first call."""

    def save(self, path) -> None:
        """ConfigError: there is no graph to save before the first call."""
        self.__getattr__("graph")

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load the model's state (keys ``model.`` + the model's) before the first call."""
        if any(not k.startswith("model.") for k in state_dict):
            raise ConfigError("this SNN is not built yet, so its state is the model copy's (keys 'model.' + the "
                              "model's own); an SNN's state loads after its first call: run a batch through it first")
        return super().load_state_dict(state_dict, strict, assign)

    def forward(self, *args, **kwargs):
        """Build (see the class), then run as ``SpikingModule.forward``."""
        return self._built(args).forward(*args, **kwargs)

    def run_sequence(self, *args, **kwargs):
        """Build (see the class), then run as ``SpikingModule.run_sequence``."""
        return self._built(args).run_sequence(*args, **kwargs)

    def step(self, *args):
        """Build (see the class), then run as ``SpikingModule.step``."""
        return self._built(args).step(*args)

    def firing_rates(self, *args, **kwargs):
        """Build (see the class), then run as ``SpikingModule.firing_rates``."""
        return self._built(args).firing_rates(*args, **kwargs)

    def _built(self, args: tuple) -> SpikingModule:
        xs = [a for a in args[:len(self._names)] if isinstance(a, torch.Tensor)]
        if len(xs) != len(self._names):
            raise ConfigError(f"the model's forward takes {len(self._names)} input(s) ({', '.join(self._names)}); call "
                              f"the SNN with one tensor for each (got {len(xs)})")
        device = next((p.device for p in self.model.parameters()), xs[0].device)
        for nm, x in zip(self._names, xs):
            if x.device != device:
                raise ConfigError(f"SpikingModule input {nm!r} is on {x.device} but the model's parameters are on "
                                  f"{device}; move the input (x.to('{device}')) or the SNN (snn.to('{x.device}'))")
        opts = self._build_options
        methods = opts["encoding"].split(";")
        example = tuple(x[0] if methods[min(k, len(methods) - 1)] == "sequence" else x for k, x in enumerate(xs))
        graph = graph_of(self.model, example if len(example) > 1 else example[0], opts["leaves"], "to_trainable")
        snn = build_trainable(graph, device, **opts)
        _share_parameters(snn, self.model)
        snn.train(self.training)
        snn.max_chunk_bytes, snn.allow_nonfinite, snn.T = self.max_chunk_bytes, self.allow_nonfinite, self.T
        hooks = {k: v for k, v in self.__dict__.items() if "hook" in k}
        self.__dict__.clear()
        self.__dict__.update(snn.__dict__, **hooks)
        self.__class__ = SpikingModule  # from now on exactly the eager SNN
        return self


def _share_parameters(snn: SpikingModule, held: nn.Module) -> None:
    """Make ``snn`` use ``held``'s Parameter objects where it holds a parameter of the same
    values (the one of the same module path and name first, else any unused one), so an optimizer
    made on ``held.parameters()`` trains the SNN; ConfigError naming a trainable SNN parameter
    the model has no copy of (an optimizer made before the build would not train it)."""
    own, ir_names = dict(held.named_parameters()), getattr(snn.module, "ir_names", {})
    guess: dict[str, str] = {}
    for n in snn.graph.nodes:
        path = n.source.module_path if n.source is not None else ""
        for p in n.params:
            for emitted in (f"{ir_names.get(n.id)}_{p}", f"{ir_names.get(n.id)}.{p}"):
                guess[emitted] = f"{path}.{p}" if path else p
    used, unmatched = set(), []
    for full, p in list(snn.module.named_parameters(remove_duplicate=False)):
        name = guess.get(full)
        if name not in own or not _same(own[name], p):
            name = next((k for k, q in own.items() if k not in used and _same(q, p)), None)
        if name is None:
            unmatched += [full] if p.requires_grad else []
            continue
        used.add(name)
        owner, _, attr = full.rpartition(".")
        setattr(snn.module.get_submodule(owner), attr, own[name])
    if unmatched:
        raise ConfigError(f"to_trainable: the SNN has trainable parameters the model does not hold unchanged "
                          f"({', '.join(unmatched)}), so an optimizer made before the first call would not train "
                          "them — pass example_input= (one batch) to to_trainable and make the optimizer after it")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a.detach(), b.detach())
