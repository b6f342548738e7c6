"""Neuron dynamics: the pure-torch reference every backend must match, and the neuron modules.

Equations (DESIGN.md, per neuron, per step t = 1..T)::

    IF:              v <- v + x[t]
    LIF spikingjelly: v <- v + (x[t] - (v - v_rest)) / tau
    LIF snntorch:     v <- beta * v + x[t]
    s[t] = 1 if v >= theta else 0
    reset subtract:   v <- v - s[t] * theta
    reset value:      v <- s[t] ? v_reset : v

v starts at ``v_init * theta`` unless a state ``v`` is given. theta is a scalar or a per-channel
vector ``[C]`` (channel = dim 1 of a step ``[N, C, ...]``). State and arithmetic are fp32;
spikes come back in the input's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ConfigError
from .surrogate import spike

__all__ = ["NeuronSpec", "neuron_reference", "broadcast_threshold", "SpikingNeuron"]


@dataclass(frozen=True)
class NeuronSpec:
    """What a neuron does; every backend takes one of these.

    kind: "if" or "lif"; form: "spikingjelly" (tau) or "snntorch" (beta) for LIF;
    reset: "subtract" or "value"; input_kind: "sequence" ([T, N, ...]) or "static" ([N, ...] read
    once, the same current every step); surrogate: None for inference, else a surrogate name.
    """

    kind: str = "if"
    v_init: float = 0.0
    reset: str = "subtract"
    v_reset: float = 0.0
    tau: float = 2.0
    beta: float = 0.9
    v_rest: float = 0.0
    form: str = "spikingjelly"
    input_kind: str = "sequence"
    surrogate: str | None = None
    alpha: float | None = None
    detach_reset: bool = False

    def __post_init__(self):
        if self.kind not in ("if", "lif"):
            raise ConfigError(f"neuron kind must be 'if' or 'lif', got {self.kind!r}")
        if self.reset not in ("subtract", "value"):
            raise ConfigError(f"reset must be 'subtract' or 'value', got {self.reset!r}")
        if self.form not in ("spikingjelly", "snntorch"):
            raise ConfigError(f"LIF form must be 'spikingjelly' or 'snntorch', got {self.form!r}")
        if self.input_kind not in ("sequence", "static"):
            raise ConfigError(f"input_kind must be 'sequence' or 'static', got {self.input_kind!r}")


def broadcast_threshold(theta: torch.Tensor | float, step_shape: tuple[int, ...]) -> torch.Tensor:
    """Shape a scalar or per-channel threshold so it broadcasts over one step ``[N, C, ...]``."""
    theta = torch.as_tensor(theta, dtype=torch.float32)
    if theta.dim() == 0 or theta.numel() == 1:
        return theta.reshape(())
    if len(step_shape) < 2 or step_shape[1] != theta.numel():
        raise ConfigError(
            f"per-channel threshold has {theta.numel()} values but a step has shape {list(step_shape)}; "
            "give one value per channel (dim 1) or a scalar")
    return theta.reshape((theta.numel(),) + (1,) * (len(step_shape) - 2))


def neuron_reference(x: torch.Tensor, theta, spec: NeuronSpec, T: int | None = None,
                     v: torch.Tensor | None = None, leak: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the neuron over T steps with plain torch ops; the oracle for every kernel.

    Takes ``x`` as ``[T, N, ...]`` (sequence) or ``[N, ...]`` plus ``T`` (static input), a
    threshold, a spec and optionally the initial membrane ``v`` (fp32, one step's shape).
    ``leak`` (a tensor, LIF only) replaces the spec's constant so it can be learned: ``1/tau``
    for the spikingjelly form, ``beta`` for the snntorch form. Returns ``(spikes [T, N, ...] in x's dtype, final v in fp32)``. Differentiable when
    ``spec.surrogate`` is set.
    """
    if spec.input_kind == "static":
        if T is None:
            raise ConfigError("a static-input neuron needs T")
        step_shape = tuple(x.shape)
    else:
        T = x.shape[0]
        step_shape = tuple(x.shape[1:])
    th = broadcast_threshold(theta, step_shape).to(x.device)
    if v is None:
        v = torch.zeros(step_shape, dtype=torch.float32, device=x.device) + spec.v_init * th
    out = []
    for t in range(T):
        xt = (x if spec.input_kind == "static" else x[t]).float()
        if spec.kind == "if":
            v = v + xt
        elif spec.form == "spikingjelly":
            if leak is None:
                v = v + (xt - (v - spec.v_rest)) / spec.tau
            else:
                v = v + (xt - (v - spec.v_rest)) * leak
        else:
            v = (spec.beta if leak is None else leak) * v + xt
        s = spike(v - th, spec.surrogate, spec.alpha)
        sr = s.detach() if spec.detach_reset else s
        if spec.reset == "subtract":
            v = v - sr * th
        else:
            v = sr * spec.v_reset + (1 - sr) * v
        out.append(s.to(x.dtype))
    if T == 0:
        return x.new_zeros((0,) + step_shape), v
    return torch.stack(out), v


class SpikingNeuron(torch.nn.Module):
    """A neuron layer in the emitted module: ``forward(x, T)`` on T folded into the batch.

    Takes ``[T*N, ...]`` (sequence) or ``[N, ...]`` (static input) and returns ``[T*N, ...]``
    spikes, or with ``sumpool=k`` their k x k window sums (the fused neuron + sum pool).
    Keeps its membrane between calls (``reset()`` clears it) so streaming ``step()`` works, and
    counts spikes for firing rates when ``record_rates`` is on.
    """

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
            if spec.kind != "lif":
                raise ConfigError("a learnable leak needs a LIF neuron (IF neurons do not leak)")
            k = 1.0 / spec.tau if spec.form == "spikingjelly" else spec.beta
            if not 0.0 < k < 1.0:
                raise ConfigError(f"a learnable leak starts from 1/tau or beta in (0, 1), got {k:g}")
            # PLIF parameterisation: the leak stays in (0, 1) whatever the optimiser does
            self.leak_logit = torch.nn.Parameter(torch.logit(torch.tensor(k, dtype=torch.float32)))
        self.backend = backend
        self.v: torch.Tensor | None = None
        self.record_rates = False
        self.spike_count = 0.0
        self.neuron_steps = 0

    @property
    def leak(self) -> torch.Tensor | None:
        """The learned ``1/tau`` (spikingjelly form) or ``beta`` (snntorch form); None when fixed."""
        return None if self.leak_logit is None else torch.sigmoid(self.leak_logit)

    def reset(self) -> None:
        """Forget the membrane state and the spike counts."""
        self.v = None
        self.spike_count = 0.0
        self.neuron_steps = 0

    def reset_state(self) -> None:
        """Forget the membrane only (a new sequence; counts keep accumulating)."""
        self.v = None

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
        from .kernels import run_neuron

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
            self.spike_count += float(s.detach().float().sum())  # pooled sums keep the total
            # fused: each output is a k x k window sum; rows a floor pool drops are not counted
            self.neuron_steps += s.numel() * (self.sumpool or 1) ** 2
        return s.reshape((-1,) + tuple(s.shape[2:]))
