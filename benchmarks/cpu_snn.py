"""CPU simulation speed of a converted SNN against its own convolutions timed alone.

    python benchmarks/cpu_snn.py [--model mnist_cnn] [--T 128] [--n 1000] [--json out.json]

Converts the reference model, then in one run times: (a) the whole SNN simulation of n test
digits for T steps (neurons, pools, readout, bookkeeping: everything), with each neuron backend;
(b) the conv/linear layers alone on inputs of exactly the shapes they see in the SNN (T*n rows
for layers after the first neuron, n rows for hoisted static layers), chunked as the runtime
chunks them. Each is the best of two runs after a warm-up (the torch reference: one run). Prints the times and the ratio (a)/(b): 1.0 would mean neurons cost nothing.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

import snncompile
from snncompile.models import get_model
from snncompile.models.data import mnist_split


def _time(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def convs_alone(snn, n: int, T: int) -> float:
    """Seconds to run every conv/linear of the SNN graph alone on spike-shaped inputs."""
    graph = snn.graph
    rows = snn._chunk_rows(T, torch.empty(0))
    layers = []
    for node in graph.nodes:
        if node.op not in ("conv2d", "conv1d", "linear"):
            continue
        is_static = bool(node.meta.get("static"))
        shape = node.inputs[0].shape[1:]
        w, b = node.params["weight"], node.params.get("bias")
        layers.append((node, is_static, shape, w, b))
    total = 0.0
    with torch.no_grad():
        for start in range(0, n, rows):
            m = min(rows, n - start)
            for node, is_static, shape, w, b in layers:
                r = m if is_static else m * T
                x = (torch.rand((r,) + tuple(shape)) < 0.2).float()
                t0 = time.perf_counter()
                if node.op == "linear":
                    F.linear(x, w, b)
                else:
                    conv = F.conv2d if node.op == "conv2d" else F.conv1d
                    conv(x, w, b, node.attrs["stride"], node.attrs["padding"], node.attrs["dilation"],
                         node.attrs["groups"])
                total += time.perf_counter() - t0
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mnist_cnn")
    ap.add_argument("--T", type=int, default=128)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--backends", default="cpu,torch")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    x_tr, _, x_te, y_te = mnist_split()
    model = get_model(a.model, pretrained=True)
    x = x_te[: a.n]
    t0 = time.perf_counter()
    snn = snncompile.compile(model, x_tr[:1000], T=a.T, backend="torch")
    compile_s = time.perf_counter() - t0
    rows = {"model": a.model, "T": a.T, "n": a.n, "threads": torch.get_num_threads(), "compile_s": compile_s}
    conv_s = convs_alone(snn, a.n, a.T)
    print(f"{a.model}: {a.n} digits x T={a.T}, {torch.get_num_threads()} threads; compile {compile_s:.2f}s")
    print(f"{'what':<34}{'seconds':>10}{'x convs alone':>15}")
    results = []
    for backend in a.backends.split(","):
        snn_b = snncompile.SpikingModule(snn.graph, a.T, backend=backend)
        with torch.no_grad():
            snn_b(x[:8], T=a.T)  # warm-up: kernel library load, oneDNN primitives
            s = _time(lambda: snn_b(x, T=a.T), repeat=2 if backend != "torch" else 1)
            acc = 100.0 * (snn_b(x[:200], T=a.T).argmax(-1) == y_te[:200]).float().mean().item()
        rows[f"snn_{backend}_s"] = s
        results.append((backend, s, acc))
    conv_s = min(conv_s, convs_alone(snn, a.n, a.T))  # timed before and after: the machine may be busy
    rows["convs_alone_s"] = conv_s
    print(f"{'convolutions alone (same shapes)':<34}{conv_s:>10.2f}{1.0:>15.2f}")
    for backend, s, acc in results:
        print(f"{'SNN, neurons on ' + backend:<34}{s:>10.2f}{s / conv_s:>15.2f}   (acc on 200: {acc:.1f}%)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
