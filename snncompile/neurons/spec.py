"""NeuronSpec: what one neuron layer does — its family, the family's parameter values, and how
it runs (input kind, surrogate). Every backend takes one of these.
"""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .family import NeuronFamily, get_family

__all__ = ["NeuronSpec", "INPUT_KINDS", "RUN_FIELDS"]

INPUT_KINDS = ("sequence", "static")
#: how a neuron runs, beside its family's parameters (the IR carries them as attributes too)
RUN_FIELDS = ("input_kind", "surrogate", "alpha", "detach_reset")


class NeuronSpec:
    """An immutable, hashable neuron description.

    ``NeuronSpec("lif", tau=4.0, v_init=0.5)``: the family (``kind``, default "if") and any of
    its parameters (the rest take the family's defaults; an unknown name or a bad value is a
    ConfigError); ``input_kind`` "sequence" ([T, N, ...]) or "static" ([N, ...] read once, the
    same current every step); ``surrogate`` None for inference, else a surrogate name, with its
    ``alpha``; ``detach_reset`` cuts the gradient through the reset. Parameters read as
    attributes (``spec.tau``); ``spec.family`` is the family record.
    """

    __slots__ = ("kind", "values", "input_kind", "surrogate", "alpha", "detach_reset", "_key")

    def __init__(self, kind: str = "if", *, input_kind: str = "sequence", surrogate: str | None = None,
                 alpha: float | None = None, detach_reset: bool = False, **params: Any):
        family = get_family(kind)
        values = family.check(params)
        if input_kind not in INPUT_KINDS:
            raise ConfigError(f"input_kind must be 'sequence' or 'static', got {input_kind!r}")
        if surrogate is not None:
            from ..surrogate import get_surrogate
            get_surrogate(surrogate)
        set_ = object.__setattr__
        set_(self, "kind", family.name)
        set_(self, "values", tuple(values.items()))
        set_(self, "input_kind", input_kind)
        set_(self, "surrogate", surrogate)
        set_(self, "alpha", None if alpha is None else float(alpha))
        set_(self, "detach_reset", bool(detach_reset))
        set_(self, "_key", (self.kind, self.values, input_kind, surrogate, self.alpha, self.detach_reset))

    @property
    def family(self) -> NeuronFamily:
        """The family record (charge, parameters, spike kind)."""
        return get_family(self.kind)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        for k, v in object.__getattribute__(self, "values"):
            if k == name:
                return v
        raise AttributeError(f"a {self.kind!r} neuron has no parameter {name!r}")

    def __setattr__(self, name, value):
        raise AttributeError("NeuronSpec is immutable; use spec.replace(...)")

    def params(self) -> dict:
        """The family's parameter values by name."""
        return dict(self.values)

    def to_dict(self) -> dict:
        """Everything, as plain values: ``NeuronSpec(**spec.to_dict())`` is ``spec``."""
        return {"kind": self.kind, **dict(self.values), "input_kind": self.input_kind,
                "surrogate": self.surrogate, "alpha": self.alpha, "detach_reset": self.detach_reset}

    @classmethod
    def from_attrs(cls, kind: str, attrs: dict, where: str = "") -> "NeuronSpec":
        """The spec a neuron node's attributes describe (its family's parameters and the run
        fields; other attributes, such as learn flags, are not part of the spec)."""
        fam = get_family(kind)
        names = {p.name for p in fam.params}
        params = fam.check({k: v for k, v in attrs.items() if k in names}, where)
        run = {k: attrs[k] for k in RUN_FIELDS if k in attrs and attrs[k] is not None}
        return cls(kind, **params, **run)

    def attrs(self) -> dict:
        """The IR attributes of a neuron node running this spec (parameters and run fields)."""
        d = self.to_dict()
        del d["kind"]
        return d

    def replace(self, **changes) -> "NeuronSpec":
        """A copy with some fields or parameters changed (checked again)."""
        d = self.to_dict()
        if "kind" in changes and changes["kind"] != self.kind:  # another family: keep the shared params
            fam = get_family(changes["kind"])
            d = {k: v for k, v in d.items() if k in RUN_FIELDS or any(p.name == k for p in fam.params)}
        d.update(changes)
        return NeuronSpec(**d)

    def __eq__(self, other) -> bool:
        return isinstance(other, NeuronSpec) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        items = [f"{k}={v!r}" for k, v in self.to_dict().items() if k != "kind"]
        return f"NeuronSpec({self.kind!r}, {', '.join(items)})"

    def __reduce__(self):
        return (_rebuild, (self.to_dict(),))


def _rebuild(d: dict) -> NeuronSpec:
    return NeuronSpec(**d)
