"""Model-zoo conversions: randomly initialised torchvision and timm classifiers through compile.

Each entry of ``ZOO`` states one fact once: the constructor, the input (small for a 2-core CPU,
valid for the architecture) and what compile must do: convert (the SNN's logits approach the
ANN's as T grows; ``convergence``) or refuse with an snncompile error naming the activation or
op and its module (``compile_defaults``). ``snncompile.recipes.models_table`` prints both for every
entry; ``tests/models/test_zoo.py`` asserts them.

torchvision's PyPI wheels are CUDA builds: next to a CPU torch their C extension does not load and
``import torchvision`` fails registering fake kernels for two detection ops. ``import_torchvision``
then declares those two schemas first, so the model definitions import (the ops would raise if
called; no classifier calls them).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import time
from dataclasses import dataclass, field
from types import ModuleType

import torch
import torch.nn as nn

import snncompile
from snncompile.errors import SnnCompileError

__all__ = ["ZooEntry", "ZOO", "Convergence", "import_torchvision", "import_timm", "paired_torchvision",
           "get_entry", "build", "make_inputs", "relative_error", "convergence", "DefaultCompile", "compile_defaults"]

NUM_CLASSES = 10
_SHIM: list = []  # the torch.library.Library holding the two schemas; it must stay alive
_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def paired_torchvision(torch_version: str | None = None) -> str:
    """The torchvision release built against ``torch_version`` (default: this torch's), as text:
    torch 2.m.p pairs with torchvision 0.(m+15).p, e.g. "2.13.0+cpu" -> "0.28.0"; other major
    versions give a placeholder."""
    parts = (torch_version or torch.__version__).split("+")[0].split(".")
    nums = [int("".join(c for c in part if c.isdigit()) or 0) for part in (parts + ["0", "0"])[:3]]
    return f"0.{nums[1] + 15}.{nums[2]}" if nums[0] == 2 else "<the release paired with your torch>"


def _install_hint() -> str:
    return (f"pip install torchvision=={paired_torchvision()} (the release paired with torch {torch.__version__}; "
            "with a CPU torch, add --index-url https://download.pytorch.org/whl/cpu for a matching CPU build)")


def _extension_loads(spec) -> bool:
    """Whether torchvision's C extension (``_C`` next to its ``__init__``) loads into this torch."""
    for folder in spec.submodule_search_locations or ():
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "_C" + suffix)
            if os.path.exists(path):
                try:
                    torch.ops.load_library(path)
                    return True
                except (OSError, RuntimeError):
                    return False
    return False


def _declare_missing_schemas() -> None:
    """Define the schemas of torchvision::nms and ::qnms where nothing has defined them yet."""
    missing = [s for s in _SCHEMAS if not hasattr(torch.ops.torchvision, s.split("(")[0])]
    if missing:
        lib = torch.library.Library("torchvision", "FRAGMENT")
        for schema in missing:
            lib.define(schema)
        _SHIM.append(lib)


def import_torchvision() -> ModuleType:
    """Import and return torchvision, making it importable next to a torch its C extension was not
    built for (see the module docstring). Does nothing extra when torchvision is already imported
    or its extension loads. Raises ImportError with the install command when torchvision is not
    installed or still does not import."""
    if sys.modules.get("torchvision") is not None:
        return sys.modules["torchvision"]
    try:
        spec = importlib.util.find_spec("torchvision")
    except ValueError:  # sys.modules holds None for it: imports of it are blocked
        spec = None
    if spec is None:
        raise ImportError(f"torchvision is not installed: {_install_hint()}")
    if not _extension_loads(spec):
        _declare_missing_schemas()
    try:
        import torchvision
    except Exception as e:  # a version mismatch surfaces as RuntimeError or AttributeError
        sys.modules.pop("torchvision", None)
        raise ImportError(f"torchvision {getattr(spec, 'name', '')} does not import with torch {torch.__version__} "
                          f"({type(e).__name__}: {e}): {_install_hint()}") from e
    return torchvision


def import_timm() -> ModuleType:
    """Import and return timm (torchvision first, through ``import_torchvision``, since timm imports
    it). Raises ImportError with an install hint when either does not import."""
    import_torchvision()
    try:
        import timm
    except ImportError as e:
        raise ImportError(f"timm does not import ({e}): pip install timm") from e
    return timm


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: the constructor (``library``, ``arch``, keyword arguments ``kwargs``), one
    sample's ``input_shape`` and the expectation. ``refused`` is empty when compile must convert
    the model; else the words of which the refusal must name one (the activation or op, compared
    lower-case without spaces or underscores), and ``modules`` the module paths of which it must
    name one (where the first such op sits)."""
    library: str
    arch: str
    input_shape: tuple[int, int, int] = (3, 64, 64)
    kwargs: dict = field(default_factory=dict, hash=False, compare=False)
    refused: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """``library/arch``, the entry's unique key."""
        return f"{self.library}/{self.arch}"

    @property
    def expect(self) -> str:
        """"converts" or "refused"."""
        return "refused" if self.refused else "converts"

    def refusal_problems(self, message: str) -> list[str]:
        """What ``message`` fails to name of this entry's refusal (empty: it names both an op
        of ``refused`` and a module of ``modules``)."""
        flat = message.lower().replace("_", "").replace(" ", "")
        out = [] if any(w in flat for w in self.refused) else [f"none of the ops {self.refused}"]
        return out + ([] if any(m in message for m in self.modules) else [f"none of the modules {self.modules}"])


_TV, _TIMM = "torchvision", "timm"
_VIT0 = "encoder.layers.encoder_layer_0."
ZOO: tuple[ZooEntry, ...] = (
    ZooEntry(_TV, "resnet18"),
    ZooEntry(_TV, "resnet34"),
    ZooEntry(_TV, "resnet50"),
    # VGGs and AlexNet end in an adaptive pool to 7x7 / 6x6; at 64 pixels it upsamples (2x2 or 1x1)
    ZooEntry(_TV, "vgg11_bn"),
    ZooEntry(_TV, "vgg16"),
    ZooEntry(_TV, "alexnet"),
    ZooEntry(_TV, "googlenet", kwargs={"aux_logits": False, "init_weights": True}),
    ZooEntry(_TV, "squeezenet1_1"),
    ZooEntry(_TV, "densenet121"),
    ZooEntry(_TV, "mobilenet_v2"),
    ZooEntry(_TV, "shufflenet_v2_x0_5"),
    ZooEntry(_TV, "regnet_x_400mf"),
    ZooEntry(_TV, "resnext50_32x4d"),
    ZooEntry(_TIMM, "resnet18"),
    ZooEntry(_TIMM, "mobilenetv2_100"),
    # timm's VGG head is a 7x7 conv; below 224 pixels it adaptive-pools its input up to 7x7 first
    ZooEntry(_TIMM, "vgg11"),
    ZooEntry(_TV, "mobilenet_v3_small", refused=("hardswish",), modules=("features.0.2",)),
    ZooEntry(_TV, "efficientnet_b0", refused=("silu",), modules=("features.0.2",)),
    ZooEntry(_TV, "convnext_tiny", refused=("gelu", "layernorm"),
             modules=("features.0.1", "features.1.0.block.2", "features.1.0.block.4")),
    # vit_b_16 takes image_size (default 224): 32 is 2x2 patches of 16 pixels
    ZooEntry(_TV, "vit_b_16", (3, 32, 32), kwargs={"image_size": 32}, refused=("gelu", "layernorm", "attention"),
             modules=(_VIT0 + "ln_1", _VIT0 + "self_attention", _VIT0 + "mlp.1")),
)


def get_entry(name: str) -> ZooEntry:
    """The entry called ``name`` (``library/arch``); KeyError listing the names otherwise."""
    hits = [e for e in ZOO if e.name == name]
    if hits:
        return hits[0]
    raise KeyError(f"no zoo entry {name!r}; known: {', '.join(e.name for e in ZOO)}")


def make_inputs(entry: ZooEntry, n: int, seed: int = 0, stream: int = 0) -> torch.Tensor:
    """``n`` deterministic images ``[n, *entry.input_shape]`` uniform in [0, 1), from a generator
    seeded by ``seed`` and ``stream`` (different streams give disjoint-looking data); the global
    RNG is not touched."""
    gen = torch.Generator().manual_seed(1000 * seed + stream)
    return torch.rand((n, *entry.input_shape), generator=gen)


def _calibrate_batchnorm(model: nn.Module, data: torch.Tensor, batch: int = 4) -> None:
    """Give every batch norm the running statistics of ``data`` (their cumulative average over
    batches of ``batch``, in train mode under no_grad, dropout kept off); the model ends in eval."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: the exact statistics of the batches seen
        m.train()
    with torch.no_grad():
        for xb in data.split(batch):
            model(xb)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.eval()


def build(entry: ZooEntry, seed: int = 0) -> nn.Module:
    """The entry's model with random initialisation (seeded by ``seed``; the global RNG state is
    restored), ``NUM_CLASSES`` outputs, batch norms calibrated on 8 images of stream 9, in eval
    mode. Raises ImportError when its library does not import."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if entry.library == _TV:
            model = getattr(import_torchvision().models, entry.arch)(weights=None, num_classes=NUM_CLASSES,
                                                                     **entry.kwargs)
        elif entry.library == _TIMM:
            model = import_timm().create_model(entry.arch, pretrained=False, num_classes=NUM_CLASSES,
                                               **entry.kwargs)
        else:
            raise ValueError(f"{entry.name}: unknown library {entry.library!r}")
    _calibrate_batchnorm(model, make_inputs(entry, 8, seed, stream=9))
    return model


def relative_error(snn_logits: torch.Tensor, ann_logits: torch.Tensor) -> float:
    """||snn - ann|| / ||ann|| over the whole batch, after subtracting each row's mean from both
    (a constant shift of all logits changes no prediction)."""
    a = ann_logits - ann_logits.mean(dim=1, keepdim=True)
    s = snn_logits - snn_logits.mean(dim=1, keepdim=True)
    return float((s - a).norm() / a.norm().clamp_min(1e-12))


def _snapshot(model: nn.Module) -> tuple:
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            [(n, m.training) for n, m in model.named_modules()],
            [(n, p.requires_grad) for n, p in model.named_parameters()])


def _changes(model: nn.Module, before: tuple) -> list[str]:
    """What differs between ``model`` and its snapshot ``before``: state_dict, train flags, requires_grad."""
    state, modes, grads = before
    now = model.state_dict()
    out = [f"state_dict keys {sorted(set(state) ^ set(now))}"] if set(state) != set(now) else []
    out += [f"{k} changed" for k in state if k in now and not torch.equal(state[k], now[k])]
    out += [f"{n or 'the model'}.training {was} -> {m.training}"
            for (n, was), (_, m) in zip(modes, model.named_modules()) if was != m.training]
    out += [f"{n}.requires_grad {was} -> {p.requires_grad}"
            for (n, was), (_, p) in zip(grads, model.named_parameters()) if was != p.requires_grad]
    return out


@dataclass
class Convergence:
    """``convergence``'s result: ``errors[T]`` (relative error of mean-centred logits at T),
    ``compile_s`` and ``sim_s[T]`` in seconds, and ``changes``: what compile did to the user's
    model (empty when it is untouched)."""
    errors: dict[int, float]
    compile_s: float
    sim_s: dict[int, float]
    changes: list[str]


def convergence(entry: ZooEntry, T_list: tuple[int, ...] = (16, 128), n_images: int = 2, seed: int = 0,
                held_out: bool = False) -> Convergence:
    """Build ``entry``'s model, compile it on ``n_images`` deterministic images with max
    normalization (``normalize="percentile", percentile=100``, the other options their
    defaults) and T=max(T_list), then run the SNN at each T of ``T_list`` (``snn(x, T=t)``) on
    the same images, or on ``n_images`` others when ``held_out``, against the ANN's logits.
    On the calibration images nothing clips, so the error of a correct conversion goes to 0
    as T grows; held-out images add a floor that belongs to the calibration set. Returns a
    Convergence; snncompile's errors propagate (SnnCompileError)."""
    model = build(entry, seed)
    calib = make_inputs(entry, n_images, seed, stream=1)
    test = make_inputs(entry, n_images, seed, stream=2) if held_out else calib
    with torch.no_grad():
        ann = model(test)
    before = _snapshot(model)
    t0 = time.perf_counter()
    snn = snncompile.compile(model, calib, T=max(T_list), normalize="percentile", percentile=100)
    compile_s = time.perf_counter() - t0
    changes = _changes(model, before)
    errors, sim_s = {}, {}
    for t in T_list:
        t0 = time.perf_counter()
        with torch.no_grad():
            out = snn(test, T=t)
        sim_s[t] = time.perf_counter() - t0
        errors[t] = relative_error(out, ann)
    return Convergence(errors, compile_s, sim_s, changes)


@dataclass
class DefaultCompile:
    """``compile_defaults``'s result: the SpikingModule (None when compile refused), the
    SnnCompileError (None when it converted), ``compile_s`` and ``changes`` as in Convergence."""
    snn: snncompile.SpikingModule | None
    error: SnnCompileError | None
    compile_s: float
    changes: list[str]


def compile_defaults(entry: ZooEntry, seed: int = 0, n_images: int = 2) -> DefaultCompile:
    """Compile ``entry``'s model with every option at its default on ``n_images`` deterministic
    images (stream 1, as ``convergence``). Returns a DefaultCompile holding the SNN or the
    SnnCompileError compile raised; other exceptions propagate."""
    model = build(entry, seed)
    calib = make_inputs(entry, n_images, seed, stream=1)
    before = _snapshot(model)
    t0 = time.perf_counter()
    snn, err = None, None
    try:
        snn = snncompile.compile(model, calib)
    except SnnCompileError as e:
        err = e
    return DefaultCompile(snn, err, time.perf_counter() - t0, _changes(model, before))
