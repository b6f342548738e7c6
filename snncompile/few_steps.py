"""The automatic choice of the few-time-step techniques: one place says what ``compile(T=...)``
applies by itself (measured: ``python benchmarks/low_latency.py``; README "Few time steps")."""
from __future__ import annotations

from .errors import ConfigError

__all__ = ["FEW_STEPS", "CALIBRATIONS", "few_step_choice", "resolve_choice"]

#: up to this many steps the automatic choice (``few_step_choice``) chooses thresholds for T and
#: calibrates biases; above it rate coding has levels enough and the 99.9th percentile is as good
FEW_STEPS = 16
CALIBRATIONS = ("none", "bias", "potential", "both")


def few_step_choice(T: int) -> dict:
    """The training-free combination ``compile(model, data, T=T)`` applies by itself, from
    unlabeled calibration data only: for T <= FEW_STEPS thresholds chosen for T (normalize mode
    "mse") and layer-wise bias calibration; above it the 99.9th percentile and no calibration
    (measured: ``python benchmarks/low_latency.py``; the README's "Few time steps" section)."""
    if T <= FEW_STEPS:
        return {"mode": "mse", "calibrate": "bias"}
    return {"mode": "percentile", "calibrate": "none"}



def resolve_choice(mode: str, calibrate: str, T, encoding: str, where: str) -> tuple[str, str]:
    """``(normalize mode, calibration)`` with "auto" replaced by ``few_step_choice(T)`` (T needed
    then; inputs encoded as given sequences are not calibrated: they have no rate-domain value);
    ConfigError for an unknown calibration."""
    if "auto" in (mode, calibrate):
        if T is None:
            raise ConfigError(f"{where}: mode='auto' or calibrate='auto' chooses for a number of steps; give T=")
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ConfigError(f"{where}: T must be an int >= 1, got {T!r}")
        choice = few_step_choice(T)
        if "sequence" in encoding.split(";"):
            choice = {"mode": choice["mode"], "calibrate": "none"}
        mode = choice["mode"] if mode == "auto" else mode
        calibrate = choice["calibrate"] if calibrate == "auto" else calibrate
    if calibrate not in CALIBRATIONS:
        raise ConfigError(f"{where}: calibrate must be one of {', '.join(CALIBRATIONS)} or 'auto', got {calibrate!r}")
    return mode, calibrate
