"""CUDA neuron kernels on the host: the very CUDA sources, built for the CPU with ``nvcc -x c++``
and driven through the launcher's own ``forward``/``backward``, against the torch reference, so
argument order, vectorisation, the sum-pool thread mapping and BPTT are checked without a GPU,
for IF, LIF, signed IF and a family registered in the test (skipped without nvcc).
"""
from __future__ import annotations

import ctypes
import dataclasses
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cuda_kernel_cases import (BWD_SAMPLE, FWD, check_backward, check_forward, gain_family_registered,
                               run_backward_checks, run_forward_checks)
from snncompile.kernels import cuda_kernels as ck
from snncompile.kernels.cuda_source import kernel_signature, list_specialisations, render_source

gain_family = pytest.fixture(gain_family_registered)


EMU_SHIM = """#include <math.h>
#define __host__
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(n)
struct snn_emu_dim3 { unsigned x; };
static snn_emu_dim3 blockIdx, blockDim, threadIdx;
"""
CT = {"long long": ctypes.c_longlong, "int": ctypes.c_int, "float": ctypes.c_float}


def _wrapper(ks) -> str:
    params = kernel_signature(ks)
    decl = ", ".join(f"{'void*' if '*' in t else t} {n}" for t, n in params)
    call = ", ".join(f"({t}){n}" if "*" in t else n for t, n in params)
    name = ks.kernel_name
    return (f'extern "C" void emu_{name}({decl}, long long n_threads) {{\n  using namespace {name}_impl;\n'
            f"  blockDim.x = 256;\n  for (long long i = 0; i < (n_threads + 255) / 256 * 256; ++i) {{\n"
            f"    blockIdx.x = (unsigned)(i / 256); threadIdx.x = (unsigned)(i % 256);\n"
            f"    {name}({call});\n  }}\n}}\n")


class EmuKernel:
    """A host-compiled kernel with the launcher's calling convention (``run(n_threads, args)``)."""

    def __init__(self, lib, ks):
        self.fn = getattr(lib, "emu_" + ks.kernel_name)
        types = [ctypes.c_void_p if "*" in t else CT[t] for t, _ in kernel_signature(ks)]
        self.fn.argtypes = types + [ctypes.c_longlong]

    def run(self, n_threads, args):
        self.fn(*[a.item() if isinstance(a, np.generic) else a for a in args], n_threads)


def build_emulator(specs, d, parts=2) -> dict:
    """Build the CUDA sources of ``specs`` for the host (``parts`` compiler processes), keyed by spec."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH")

    def build(i):
        part = specs[i::parts]
        (d / f"emu{i}.cpp").write_text(EMU_SHIM + "".join(render_source(s) + _wrapper(s) for s in part))
        r = subprocess.run(["nvcc", "-x", "c++", "-std=c++14", "-O0", "-shared", "-Xcompiler", "-fPIC,-w",
                            str(d / f"emu{i}.cpp"), "-o", str(d / f"emu{i}.so")], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        lib = ctypes.CDLL(str(d / f"emu{i}.so"))
        return {s: EmuKernel(lib, s) for s in part}

    with ThreadPoolExecutor(parts) as pool:
        return {k: v for part in pool.map(build, range(parts)) for k, v in part.items()}


def _emulate(monkeypatch, kernels: dict) -> list:
    used = []
    monkeypatch.setattr(ck, "get_kernel", lambda ks, device_index: used.append(ks) or kernels[ks])
    monkeypatch.setattr(ck, "_launch", lambda kernel, device, n, args: kernel.run(n, args))
    return used


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    return build_emulator(FWD + BWD_SAMPLE, tmp_path_factory.mktemp("emu"))


@pytest.fixture
def on_emulator(emulated, monkeypatch):
    return _emulate(monkeypatch, emulated)


@pytest.mark.parametrize("ks", FWD, ids=lambda s: s.kernel_name)
def test_emulated_forward_matches_reference(ks, on_emulator):
    run_forward_checks(ks, "cpu")
    assert set(on_emulator) == {ks}


@pytest.mark.parametrize("ks", BWD_SAMPLE, ids=lambda s: s.kernel_name)
def test_emulated_backward_matches_autograd(ks, on_emulator):
    run_backward_checks(ks, "cpu")
    assert ks in on_emulator


def test_emulated_sum_pool_beyond_kmax_pools_the_spikes(on_emulator):
    ks = next(s for s in BWD_SAMPLE if s.family == "lif" and s.pooled and s.dtype == "float32")
    check_forward(dataclasses.replace(ks, mode="train", surrogate=None), (1, 2, 11, 13), 3, "cpu", False, k=5)
    check_backward(ks, (1, 2, 11, 13), 3, "cpu", with_v=True, detach=False, k=5)
    assert [s.pooled for s in on_emulator] == [False, False, True] and on_emulator[2] == ks  # fused backward


def test_a_user_family_gets_cuda_kernels(gain_family, tmp_path, monkeypatch):
    specs = [s for s in list_specialisations(["atan"], families=["gain_if"])
             if s.threshold == "channel" and s.dtype in ("float32", "bfloat16")]
    _emulate(monkeypatch, build_emulator(specs, tmp_path))
    for ks in specs:
        (run_backward_checks if ks.mode == "backward" else run_forward_checks)(ks, "cpu")
