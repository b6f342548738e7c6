"""compile -> export (nir's own writer) -> read back (nir.read, with its type check) -> from_nir
gives a SpikingModule whose outputs equal the original's, for the reference MNIST CNN on real
digits, a residual net, trained LIF nets with learned thresholds and leaks, recurrent containers,
synapse filters and Poisson inputs; and everything export cannot write is a clear error."""
import json
import subprocess
import sys

import nir
import pytest
import torch

import snncompile
from snncompile import layers
from snncompile.errors import ConfigError, UnsupportedOpError
from snncompile.models import get_model
from snncompile.models.data import mnist_split


@pytest.fixture(scope="module")
def digits():
    x_tr, _, x_te, y_te = mnist_split()
    return x_tr[:256], x_te[:200], y_te[:200]


def _round_trip(snn, tmp_path, **options):
    path = tmp_path / "snn.nir"
    graph = snncompile.export_nir(snn, path, **options)
    assert isinstance(nir.read(path), nir.NIRGraph)  # nir's reader, with its own type check
    return graph, snncompile.from_nir(path)


def test_mnist_cnn_round_trip_is_exact(digits, tmp_path):
    calib, x, y = digits
    snn = snncompile.compile(get_model("mnist_cnn", pretrained=True), calib, T=4)
    graph, back = _round_trip(snn, tmp_path)
    kinds = [type(n).__name__ for n in graph.nodes.values()]
    assert kinds.count("I") == 4 and kinds.count("Threshold") == 3 and kinds.count("SumPool2d") == 3
    meta = json.loads(graph.metadata["snncompile"])
    assert meta["dt"] == 1.0 and meta["T"] == 4 and "v > threshold" in meta["conventions"]
    assert back.T == 4 and "v_init=0.5" in str(back.semantic_graph)
    with torch.no_grad():
        a, b = snn(x), back(x)
    assert torch.equal(a, b)
    assert (a.argmax(1) == y).float().mean() > 0.9  # real digits: the round trip keeps a working SNN


def test_residual_and_dt_round_trip(digits, tmp_path):
    calib, x, _ = digits
    snn = snncompile.compile(get_model("resnet20_mnist", pretrained=True), calib[:64], T=4)
    _, back = _round_trip(snn, tmp_path, dt=1e-3)
    with torch.no_grad():
        assert torch.equal(snn(x[:16]), back(x[:16]))
    # r = 1/dt restored exactly: no input scale added
    assert str(back.semantic_graph).count("scale(") == str(snn.semantic_graph).count("scale(")


def test_trained_lif_exports_its_learned_values(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * 13 * 13, 3))
    x = torch.rand(8, 1, 28, 28)
    snn = snncompile.to_trainable(model, T=4, example_input=x, learn_threshold=True, learn_leak=True)
    opt = torch.optim.SGD(snn.parameters(), lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(snn(x), torch.arange(8) % 3).backward()
        opt.step()
    snn.eval()
    graph, back = _round_trip(snn, tmp_path)
    theta = next(m.threshold for m in snn.neurons().values())
    assert not torch.equal(theta.detach(), torch.ones_like(theta))  # it did learn
    with torch.no_grad():
        assert torch.allclose(snn(x), back(x), atol=1e-5)  # batch norm folded into the conv (rounding only)
    assert not any(p.requires_grad for p in back.parameters())  # imported for inference


@pytest.mark.parametrize("kind", ["linear", "elementwise"])
def test_recurrent_and_synapse_round_trip(kind, tmp_path):
    cell = layers.LIF(tau=3.0, v_init=0.25)
    rec = layers.LinearRecurrent(6, cell, bias=True) if kind == "linear" else layers.ElementwiseRecurrent(cell)
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), layers.SynapseFilter(tau=2.5, learnable=True), rec,
                                torch.nn.Linear(6, 3))
    x = torch.rand(4, 5)
    snn = snncompile.to_trainable(model, T=6, example_input=x)
    before = [p.detach().clone() for p in snn.parameters()]
    torch.optim.SGD(snn.parameters(), lr=1.0).zero_grad()
    snn(x).square().sum().backward()
    torch.optim.SGD(snn.parameters(), lr=1.0).step()
    assert any(not torch.equal(a, b) for a, b in zip(before, snn.parameters()))  # the feedback and tau moved
    snn.eval()
    graph, back = _round_trip(snn, tmp_path)
    assert "LI" in {type(n).__name__ for n in graph.nodes.values()}
    assert "recurrent" in str(back.semantic_graph) and "synapse_filter" in str(back.semantic_graph)
    with torch.no_grad():
        assert torch.equal(snn(x), back(x))


def test_poisson_encoding_is_kept(digits, tmp_path):
    calib, x, _ = digits
    snn = snncompile.compile(get_model("mnist_cnn", pretrained=True), calib[:64], T=4, encoding="poisson")
    graph, back = _round_trip(snn, tmp_path)
    assert json.loads(graph.nodes["input"].metadata["snncompile"])["encode"] == "poisson"
    assert "method=poisson" in str(back.semantic_graph)


def test_what_nir_cannot_express_is_refused(digits):
    calib, _, _ = digits
    vgg = snncompile.compile(get_model("vgg_mnist", pretrained=True), calib[:32], T=4)
    with pytest.raises(UnsupportedOpError, match=r"maxpool2d \(features\.\d+, vgg\.py:\d+\).*no max pool"):
        snncompile.to_nir(vgg)
    multi = snncompile.compile(get_model("mnist_cnn", pretrained=True), calib[:32], T=2, max_spikes=2)
    with pytest.raises(UnsupportedOpError, match=r"multi_if.*binary-spike"):
        snncompile.to_nir(multi)
    snn = snncompile.compile(get_model("mnist_cnn", pretrained=True), calib[:32], T=4)
    with pytest.raises(ConfigError, match="form must be"):
        snncompile.to_nir(snn, form="soft")
    with pytest.raises(ConfigError, match="dt must be a positive"):
        snncompile.to_nir(snn, dt=0)


@pytest.mark.parametrize("version", ["1.0.5", "1.1.0", "2.0"])
def test_nir_versions_outside_the_range_are_refused(monkeypatch, digits, version):
    monkeypatch.setattr(nir, "version", version)
    snn = snncompile.compile(get_model("mnist_cnn", pretrained=True), digits[0][:16], T=2)
    with pytest.raises(ConfigError, match=r"nir>=1\.0\.6,<1\.1"):
        snncompile.to_nir(snn)


def test_cli_compile_nir_and_inspect(tmp_path):
    out = tmp_path / "cnn.nir"
    run = [sys.executable, "-m", "snncompile"]
    done = subprocess.run(run + ["compile", "mnist_cnn", "--T", "4", "--nir", str(out), "--print-after", "none"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote the SNN as NIR" in done.stdout and out.exists()
    shown = subprocess.run(run + ["inspect", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "network.2.reset ~> network.2" in shown.stdout  # the reset loop, marked as delayed
    assert "family=if threshold=1 v_init=0.5" in shown.stdout
    bad = subprocess.run(run + ["compile", "mnist_cnn", "--nir", str(tmp_path / "no" / "x.nir")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "--nir" in bad.stderr and "does not exist" in bad.stderr
    junk = tmp_path / "junk.nir"
    junk.write_bytes(b"not hdf5")
    bad = subprocess.run(run + ["inspect", str(junk)], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "not a NIR file" in bad.stderr


def test_cli_inspect_shows_a_graph_it_cannot_run_then_says_why(tmp_path):
    import numpy as np

    path = tmp_path / "delay.nir"
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([2])), "d": nir.Delay(delay=np.ones(2)),
                            "output": nir.Output(output_type=np.array([2]))},
                     edges=[("input", "d"), ("d", "output")], type_check=False)
    nir.write(path, g)
    done = subprocess.run([sys.executable, "-m", "snncompile", "inspect", str(path)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 1
    assert "d: Delay [2] delay=1" in done.stdout and "input -> d" in done.stdout
    assert "node 'd' is a Delay" in done.stderr
