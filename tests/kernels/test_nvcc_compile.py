"""Every CUDA kernel specialisation compiles with ``nvcc --ptx -arch=sm_90`` (no GPU needed).

The sources are what NVRTC compiles under CuPy; they use no host-only headers (only
``<cuda_fp16.h>``, which CuPy bundles). To stay fast on two cores the specialisations are
compiled in batches (each source keeps its helpers in its own namespace, so sources concatenate),
two nvcc processes at a time, with the device optimiser off (``-Xcicc -O0``: every source is
still parsed, type-checked and lowered to PTX); a failing batch is recompiled one source at a
time so the report names the specialisation and shows nvcc's error text. One source per dtype
and mode also compiles alone, fully optimised, to a cubin (ptxas checks the inline PTX).
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
from snncompile.surrogate import SURROGATES

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")

ARCH = "-arch=sm_90"
# All 672 sources go through nvcc's front end and PTX generation with the optimiser off (4x less
# CPU: ~35 s instead of ~140 s on two cores); the standalone sample below is fully optimised and
# assembled. SNNCOMPILE_NVCC_FULL_OPT=1 optimises every specialisation too.
FAST = [] if os.environ.get("SNNCOMPILE_NVCC_FULL_OPT") == "1" else ["-Xcicc", "-O0"]
WORKERS = max(1, min(2, os.cpu_count() or 1))
BATCHES = 14  # ~48 kernels per nvcc call: per-call overhead small, work balanced over workers


def _nvcc(path: str, kind: str = "--ptx") -> subprocess.CompletedProcess:
    out = path + (".ptx" if kind == "--ptx" else ".cubin")
    flags = FAST if kind == "--ptx" else []
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
    bases = 3 * len(DTYPES) * 2 * 2 * 2  # IF + two LIF forms, dtypes, threshold, input, reset
    trainable = bases // len(DTYPES) * (1 + 2 + 2)  # saved h: fp32, plus the io dtype for fp16/bf16
    assert len(specs) == bases + trainable * (1 + len(SURROGATES))
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
    """One source per dtype x mode, alone (its own includes suffice), through ptxas."""
    sample = {}
    for s in list_specialisations():
        sample.setdefault((s.dtype, s.mode), s)
    jobs = [(s, str(tmp_path / f"{s.kernel_name}.cu")) for s in sample.values()]
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda j: _compile([j[0]], j[1], "--cubin"), jobs))
    failures = [f"{s.kernel_name}:\n{log}" for (s, _), (rc, log, _) in zip(jobs, results) if rc]
    assert not failures, "nvcc -cubin failed:\n\n" + "\n\n".join(failures)
