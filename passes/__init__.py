"""The standard pass library: one pass per file, each registered under a kebab-case name."""
from __future__ import annotations

from . import (  # noqa: F401  (importing registers each pass)
    avgpool_to_sumpool,
    calibrate_bias,
    canonicalize,
    encode_input,
    fold_batchnorm,
    fuse_neuron_sumpool,
    hoist_static,
    insert_surrogate,
    normalize,
    readout,
    relu_to_if,
    spike_maxpool,
    swap_maxpool_relu,
)

__all__ = ["avgpool_to_sumpool", "calibrate_bias", "canonicalize", "encode_input", "fold_batchnorm", "fuse_neuron_sumpool", "hoist_static", "insert_surrogate",
           "normalize", "readout", "relu_to_if", "spike_maxpool",
           "swap_maxpool_relu"]
