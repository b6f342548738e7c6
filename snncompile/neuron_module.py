"""SpikingNeuron: a neuron layer in the emitted module, any family, any backend.

It sits above both snncompile.neurons (what a neuron computes) and snncompile.kernels (how it
runs), so neither of those imports the other's user.
"""
from __future__ import annotations

import zlib

import torch

from .errors import ConfigError
from .kernels import run_neuron
from .neurons import NeuronSpec, ParamView
from .stateful import PerThread, PerThreadState

__all__ = ["SpikingNeuron", "leak_start", "backend_for"]


def leak_start(spec: NeuronSpec) -> float:
    """The value a learnable leak starts from (``1/tau`` or ``beta`` for LIF); ConfigError for a
    family without a leak."""
    fam = spec.family
    if fam.leak is None:
        raise ConfigError(f"a learnable leak needs a leaky neuron such as LIF ({fam.name!r} neurons do not leak)")
    name, reciprocal = fam.leak(ParamView(spec.params()))
    value = getattr(spec, name)
    return 1.0 / value if reciprocal else value


def backend_for(backend: str, device: torch.device) -> str:
    """``backend`` when it runs on ``device``, else (or for "auto") the fastest that does there
    (the fused CUDA kernels on a GPU, the C loop on a CPU, the torch reference when neither is
    available)."""
    if backend != "auto" and (backend == "torch" or (backend == "cupy") == (device.type == "cuda")):
        return backend
    if device.type == "cuda":
        from .kernels.cuda_kernels import cupy_available
        return "cupy" if cupy_available() else "torch"
    from .kernels.cpu import cpu_kernel_available
    return "cpu" if cpu_kernel_available() else "torch"


class SpikingNeuron(PerThreadState, torch.nn.Module):
    """A neuron layer in the emitted module: ``forward(x, T)`` on T folded into the batch.

    Takes ``[T*N, ...]`` (sequence) or ``[N, ...]`` (static input) and returns ``[T*N, ...]``
    spikes, or with ``sumpool=k`` (the fused neuron + sum pool op) their k x k window sums.
    Keeps its membrane between calls (``reset()`` clears it) so streaming ``step()`` works, and
    counts spikes for firing rates when ``record_rates`` is on (by value: a signed spike counts as
    one, a multi-spike count of k as k, so a rate can exceed 1 per step);
    the membrane, the counts and ``record_rates`` are per thread.

    ``state_dict()`` carries the neuron's settings beside the threshold: the ``settings`` buffer
    codes the family and its parameter values exactly (int64, so ``.half()`` leaves it alone),
    and loading the state of a layer with other settings (say ``v_init=0`` into one with
    ``v_init=0.5``) is a ConfigError naming the layer and the values.
    """

    v = PerThread()
    record_rates = PerThread(False)
    spike_count = PerThread(0.0)
    neuron_steps = PerThread(0)

    def __init__(self, spec: NeuronSpec, threshold: torch.Tensor, backend: str = "torch",
                 sumpool: int | None = None, learn_threshold: bool = False, learn_leak: bool = False):
        super().__init__()
        self.spec = spec
        self.sumpool = sumpool
        th = torch.as_tensor(threshold).detach().clone().float()
        if learn_threshold:
            self.threshold = torch.nn.Parameter(th)
        else:
            self.register_buffer("threshold", th)
        self.leak_logit: torch.nn.Parameter | None = None
        if learn_leak:
            k = leak_start(spec)
            if not 0.0 < k < 1.0:
                raise ConfigError(f"a learnable leak starts from 1/tau or beta in (0, 1), got {k:g}")
            # PLIF parameterisation: the leak stays in (0, 1) whatever the optimiser does
            self.leak_logit = torch.nn.Parameter(torch.logit(torch.tensor(k, dtype=torch.float32)))
        self.backend = backend
        self.register_buffer("settings", _encode_settings(self.neuron_settings()))

    @property
    def leak(self) -> torch.Tensor | None:
        """The learned leak (``1/tau`` or ``beta`` for LIF); None when fixed."""
        return None if self.leak_logit is None else torch.sigmoid(self.leak_logit)

    def reset(self) -> None:
        """Forget the membrane state and the spike counts."""
        self.v = None
        self.spike_count = 0.0
        self.neuron_steps = 0

    def reset_state(self) -> None:
        """Forget the membrane only (a new sequence; counts keep accumulating)."""
        self.v = None

    def neuron_settings(self) -> dict:
        """What the layer computes beside its tensors: the family and its parameter values."""
        return {"family": self.spec.kind, **self.spec.params()}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        saved = state_dict.get(prefix + "settings")
        if isinstance(saved, torch.Tensor) and not torch.equal(saved.cpu(), self.settings.cpu()):
            _settings_mismatch(saved, self.neuron_settings(), prefix.rstrip(".") or "the neuron layer")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        th = self.threshold
        th_s = f"{th.item():g}" if th.numel() == 1 else f"per-channel[{th.numel()}]"
        return f"{self.spec.kind}, threshold={th_s}, v_init={self.spec.v_init}, reset={self.spec.reset}, " \
               f"input={self.spec.input_kind}, backend={self.backend}" + \
               (f", fused sumpool={self.sumpool}" if self.sumpool else "") + \
               (f", surrogate={self.spec.surrogate}" if self.spec.surrogate else "") + \
               (", learnable threshold" if isinstance(self.threshold, torch.nn.Parameter) else "") + \
               (", learnable leak" if self.leak_logit is not None else "")

    def forward(self, x: torch.Tensor, T: int) -> torch.Tensor:
        if self.spec.input_kind == "static":
            xs = x
        else:
            if x.shape[0] % T:
                raise ConfigError(f"neuron input has {x.shape[0]} rows, not a multiple of T={T}")
            xs = x.reshape((T, x.shape[0] // T) + tuple(x.shape[1:]))
        v = self.v
        if v is not None and tuple(v.shape) != tuple(xs.shape[-len(v.shape):] if v.dim() else ()):
            v = None  # batch size changed: a new stream
        s, v = run_neuron(xs, self.threshold, self.spec, T, v, self.backend, self.sumpool, leak=self.leak)
        self.v = v.detach() if self.spec.surrogate is None else v
        if self.record_rates:
            # the values, not the nonzeros: a step with a count of 3 is 3 spikes (multi-spike
            # families), a -1 is one spike (signed ones, never fused with a pool)
            counts = s.detach().float().abs()
            self.spike_count += float(counts.sum())  # pooled sums of counts keep the total
            # fused: each output is a k x k window sum; rows a floor pool drops are not counted
            self.neuron_steps += s.numel() * (self.sumpool or 1) ** 2
        return s.reshape((-1,) + tuple(s.shape[2:]))


def _code(v) -> int:
    """One setting as an int64: a float's bit pattern, an int or bool as is, a str by CRC-32."""
    if isinstance(v, str):
        return zlib.crc32(v.encode())
    if isinstance(v, float):
        return int(torch.tensor(v, dtype=torch.float64).view(torch.int64))
    return -(1 << 63) if v is None else int(v)


def _encode_settings(settings: dict) -> torch.Tensor:
    return torch.tensor([_code(v) for v in settings.values()], dtype=torch.int64)


def _settings_mismatch(saved: torch.Tensor, mine: dict, layer: str):
    """Raise the ConfigError for a state_dict whose neuron settings differ from this layer's."""
    saved = saved.cpu().reshape(-1)
    if saved.numel() != len(mine) or int(saved[0]) != _code(mine["family"]):
        diff = [f"another neuron family or parameter list (this layer is {mine['family']!r})"]
    else:
        diff = []
        for (k, v), c in zip(mine.items(), saved.tolist()):
            if c != _code(v):
                was = float(torch.tensor(c, dtype=torch.int64).view(torch.float64)) if isinstance(v, float) else "another value"
                diff.append(f"{k}={was!r} saved, {v!r} here")
    raise ConfigError(f"load_state_dict: neuron layer {layer} was saved with other settings ("
                      + "; ".join(diff) + "): its tensors would run with the wrong equations; compile "
                      "the SNN with the settings it was saved with (or save and load the whole SNN: "
                      "snn.save(path), snncompile.load(path))")
