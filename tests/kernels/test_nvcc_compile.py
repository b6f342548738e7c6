"""Every CUDA kernel specialisation of every registered neuron family compiles with
``nvcc --ptx -arch=sm_90`` (no GPU needed), and so do a family's registered from user code.

The sources are what NVRTC compiles under CuPy; they use no host-only headers (only
``<cuda_fp16.h>``, which CuPy bundles). To stay fast on two cores the specialisations are
compiled in batches (each source keeps its helpers in its own namespace, so sources concatenate),
two nvcc processes at a time, with the device optimiser off (``-Xcicc -O0``: every source is
still parsed, type-checked and lowered to PTX); a failing batch is recompiled one source at a
time so the report names the specialisation and shows nvcc's error text. One source per family,
dtype, mode and pooling also compiles alone, fully optimised, to a cubin (ptxas checks the
inline PTX and that no kernel spills its registers to a stack frame).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from snncompile.kernels.cuda_source import (DTYPES, Specialisation, list_specialisations,
                                            render_source)
from snncompile.neurons import NeuronFamily, Param, get_family, neuron_families, register_family, unregister_family
from snncompile.neurons.params import V_INIT, reset_param
from snncompile.surrogate import SURROGATES

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")

ARCH = "-arch=sm_90"
# All ~1600 sources go through nvcc's front end and PTX generation with the optimiser off (4x
# less CPU: ~15-30 s on two cores); the standalone sample below is fully optimised and
# assembled. SNNCOMPILE_NVCC_FULL_OPT=1 optimises every specialisation too.
FAST = [] if os.environ.get("SNNCOMPILE_NVCC_FULL_OPT") == "1" else ["-Xcicc", "-O0"]
WORKERS = max(1, min(2, os.cpu_count() or 1))
BATCHES = 14  # ~110 kernels per nvcc call: per-call overhead small, work balanced over workers


def _nvcc(path: str, kind: str = "--ptx") -> subprocess.CompletedProcess:
    out = path + (".ptx" if kind == "--ptx" else ".cubin")
    flags = FAST if kind == "--ptx" else ["-Xptxas", "-v"]
    return subprocess.run([NVCC, kind, ARCH, "-std=c++14", *flags, path, "-o", out],
                          capture_output=True, text=True, timeout=600)


def _compile(specs: list[Specialisation], path: str, kind: str = "--ptx"):
    """Compile ``specs`` as one file; returns (returncode, nvcc output, produced text or '')."""
    with open(path, "w") as f:
        f.write("\n".join(render_source(s) for s in specs))
    r = _nvcc(path, kind)
    text = ""
    if r.returncode == 0 and kind == "--ptx":
        with open(path + ".ptx") as f:
            text = f.read()
    return r.returncode, r.stdout + r.stderr, text


def test_specialisations_are_enumerated():
    specs = list_specialisations()
    names = [s.kernel_name for s in specs]
    assert len(names) == len(set(names))
    variants = sum(len(get_family(f).variants()) for f in neuron_families())
    assert variants >= 2 + 4 + 1  # IF: 2 resets; LIF: 2 resets x 2 forms; signed IF: subtract
    bases = variants * len(DTYPES) * 2 * 2  # dtypes, threshold, input
    trainable = bases // len(DTYPES) * (1 + 2 + 2)  # saved h: fp32, plus the io dtype for fp16/bf16
    assert len(specs) == 2 * (bases + trainable * (1 + len(SURROGATES)))  # and fused with the sum pool
    assert {s.family for s in specs} == set(neuron_families()) and any(s.family == "signed_if" for s in specs)
    assert all(re.fullmatch(r"[A-Za-z_]\w*", n) for n in names)
    assert render_source(specs[7]) == render_source(specs[7])


def test_every_specialisation_compiles(tmp_path):
    specs = list_specialisations()
    batches = [specs[i::BATCHES] for i in range(BATCHES)]  # interleaved: similar work per batch
    start = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda ib: _compile(ib[1], str(tmp_path / f"batch{ib[0]}.cu")),
                                enumerate(batches)))
    elapsed = time.perf_counter() - start
    failures = []
    for i, (batch, (rc, log, ptx)) in enumerate(zip(batches, results)):
        if rc == 0:
            missing = [s.kernel_name for s in batch if f".entry {s.kernel_name}(" not in ptx]
            failures += [f"{n}: compiled but no kernel entry in the PTX" for n in missing]
            continue
        for j, s in enumerate(batch):  # find the culprits, with their own error text
            rc1, log1, _ = _compile([s], str(tmp_path / f"single{i}_{j}.cu"))
            if rc1:
                failures.append(f"{s.kernel_name} ({s!r}):\n{log1}")
            if len(failures) >= 5:
                break
        if not failures:
            failures.append(f"batch {i} failed but each source alone compiles:\n{log}")
    print(f"\nnvcc compiled {len(specs)} specialisations in {elapsed:.1f} s "
          f"({BATCHES} files, {WORKERS} workers)")
    assert not failures, "nvcc failed:\n\n" + "\n\n".join(failures)


def test_standalone_sources_compile_to_cubin(tmp_path):
    """One source per family x dtype x mode x pooled, fully optimised, through ptxas; the state
    arrays stay in registers (no stack frame, no spills). One file per dtype, so the includes a
    file has are the ones each of its sources brings."""
    sample = {}
    for s in list_specialisations():
        sample.setdefault((s.family, s.dtype, s.mode, s.pooled), s)
    jobs = [([s for s in sample.values() if s.dtype == d], str(tmp_path / f"sample_{d}.cu")) for d in DTYPES]
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda j: _compile(j[0], j[1], "--cubin"), jobs))
    failures = [f"{path}:\n{log}" for (_, path), (rc, log, _) in zip(jobs, results) if rc]
    assert not failures, "nvcc -cubin failed:\n\n" + "\n\n".join(failures)
    for (specs, _), (_, log, _) in zip(jobs, results):
        entries = re.split(r"Compiling entry function '(\w+)'", log)[1:]
        info = dict(zip(entries[::2], entries[1::2]))
        assert set(info) == {s.kernel_name for s in specs}
        for name, text in info.items():
            assert "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" in text, f"{name}:{text}"


def test_a_user_familys_kernels_compile(tmp_path):
    """A family registered from user code (no kernel file names it) gets every kernel."""
    fam = NeuronFamily("gain_lif", (V_INIT, reset_param("subtract", "value"), Param("v_reset", float, 0.0),
                                    Param("gain", float, 1.0), Param("tau", float, 2.0, low=0.0, low_open=True),
                                    Param("soft", bool, False, variant=True)),
                       lambda A, v, x, p: A.add(v, A.div(A.mul(p.gain, A.sub(x, v) if p.soft else x), p.tau)),
                       lambda A, g, p: (A.div(A.mul(p.gain, g), p.tau),
                                        A.sub(g, A.div(A.mul(p.gain, g), p.tau)) if p.soft else g), short="glif")
    register_family(fam)
    try:
        specs = list_specialisations(families=["gain_lif"])
        assert {s.values["soft"] for s in specs} == {False, True} and len({s.variant for s in specs}) == 4
        sample = list({(s.variant, s.mode, s.pooled): s for s in specs}.values())
        rc, log, ptx = _compile(sample, str(tmp_path / "user.cu"))
        assert rc == 0, log
        assert all(f".entry {s.kernel_name}(" in ptx for s in sample)
    finally:
        unregister_family("gain_lif")
