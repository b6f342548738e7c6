"""snn.save(path) / snncompile.load(path) (issue 12, item 4): one safetensors file with the graph
as JSON, no pickle; bit-identical outputs after a load in a fresh process; a truncated,
corrupted, foreign or newer file is a SerializationError naming the file and the fault; what
JSON cannot carry is refused naming the node; neuron settings travel in state_dict()."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
import torch.nn as nn
import torch.nn.functional as F

import snncompile
from snncompile import layers
from snncompile.errors import ConfigError
from snncompile.serialize import SerializationError

ROOT = Path(__file__).resolve().parents[2]


class Net(nn.Module):
    """Conv, BN, a residual add, an average pool (fused with its neuron), a max pool (count-gated)."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(2, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.c1 = nn.Conv2d(6, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 2 * 2, 4)

    def forward(self, x):
        h = F.relu(self.bn(self.c0(x)))
        h = F.relu(h + self.c1(h))
        h = F.avg_pool2d(h, 2)
        h = F.max_pool2d(F.relu(self.c2(h)), 2)
        return self.fc(torch.flatten(h, 1))


class Rec(nn.Module):
    """A recurrent container (a body graph), a learnable synapse filter and LIF neurons."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 6)
        self.rec = layers.LinearRecurrent(6, layers.LIF(tau=3.0))
        self.syn = layers.SynapseFilter(tau=3.0, learnable=True)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        return self.out(self.syn(self.rec(self.fc(x))))


def _x(n=6, seed=1):
    return torch.rand(n, 2, 8, 8, generator=torch.Generator().manual_seed(seed))


def _converted(backend="torch", **kw):
    torch.manual_seed(0)
    return snncompile.compile(Net().eval(), _x(32), T=6, backend=backend, **kw)


def _trainable():
    torch.manual_seed(0)
    return snncompile.to_trainable(Rec(), T=5, encoding="sequence", readout="last", example_input=torch.rand(2, 5))


def _seq(seed=2):
    return torch.rand(5, 3, 5, generator=torch.Generator().manual_seed(seed))


def _run(snn, x):
    with torch.no_grad():
        return snn(x, return_all_steps=True)


def _cpu_ok():
    from snncompile.kernels.cpu import cpu_kernel_available
    return cpu_kernel_available()


# ------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_converted_snn_round_trip_is_exact(tmp_path, backend):
    if backend == "cpu" and not _cpu_ok():
        pytest.skip("no C compiler")
    snn = _converted(backend)
    path = tmp_path / "net.snn"
    snn.save(path)
    back = snncompile.load(path)
    assert isinstance(back, snncompile.SpikingModule)
    assert (back.T, back.backend, back.readout_mode, back.training) == (snn.T, snn.backend, snn.readout_mode, False)
    assert torch.equal(_run(back, _x()), _run(snn, _x()))
    assert str(back.graph) == str(snn.graph) and str(back.semantic_graph) == str(snn.semantic_graph)
    assert str(back.pipeline) == str(snn.pipeline)
    for name in ("input", "normalize", "relu-to-if", "fuse-neuron-sumpool"):
        assert str(back.pipeline.stage(name)) == str(snn.pipeline.stage(name))
    assert back.pipeline.diff("input", "fold-batchnorm") == snn.pipeline.diff("input", "fold-batchnorm")
    assert back.state_dict().keys() == snn.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), snn.state_dict().values()))
    assert not any(p.requires_grad for p in back.parameters())


def test_trained_recurrent_snn_round_trip_keeps_the_trained_weights_and_body_graphs(tmp_path):
    snn = _trainable()
    opt = torch.optim.SGD(snn.parameters(), lr=0.5)
    for _ in range(2):  # the module's weights move away from the graph's
        loss = snn.run_sequence(_seq()).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    snn.save(tmp_path / "rec.snn")
    back = snncompile.load(tmp_path / "rec.snn")
    assert back.training and back.trainable and back.sequence_input and back.readout_mode == "last"
    assert [k for k, p in back.named_parameters() if p.requires_grad] == \
        [k for k, p in snn.named_parameters() if p.requires_grad]
    body = back.graph.find("recurrent")[0].attrs["body"]
    assert isinstance(body, snncompile.Graph) and body.find("neuron")
    snn.eval(), back.eval()
    assert torch.equal(_run(back, _seq(3)), _run(snn, _seq(3)))


def test_load_in_a_fresh_process_gives_bit_identical_outputs(tmp_path):
    """Saved here, loaded and run by another Python process: the same bits."""
    nets = {"conv": (_converted("cpu" if _cpu_ok() else "torch"), _x()), "rec": (_trainable().eval(), _seq(4))}
    for name, (snn, x) in nets.items():
        snn.save(tmp_path / f"{name}.snn")
        safetensors.torch.save_file({"x": x, "want": _run(snn, x)}, str(tmp_path / f"{name}.io"))
    script = textwrap.dedent("""
        import sys, torch, safetensors.torch, snncompile
        for name in ("conv", "rec"):
            io = safetensors.torch.load_file(sys.argv[1] + f"/{name}.io")
            snn = snncompile.load(sys.argv[1] + f"/{name}.snn")
            with torch.no_grad():
                got = snn(io["x"], return_all_steps=True)
            assert got.dtype == io["want"].dtype and torch.equal(got, io["want"]), name
            print(name, "identical")
    """)
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["conv", "identical", "rec", "identical"]


def test_the_file_is_safetensors_with_a_json_graph_and_no_pickle(tmp_path):
    snn = _converted()
    snn.save(tmp_path / "a.snn")
    raw = (tmp_path / "a.snn").read_bytes()
    # safetensors: an 8-byte little-endian header length, then the JSON header (no pickle, no zip)
    assert raw[8:9] == b"{" and int.from_bytes(raw[:8], "little") < len(raw) and b"torch._utils" not in raw
    with safetensors.safe_open(str(tmp_path / "a.snn"), "pt") as f:
        doc = json.loads(f.metadata()["snncompile"])
        keys = set(f.keys())
    assert doc["format"] == "snncompile-snn" and doc["version"] == 1 and doc["T"] == 6
    assert doc["backend"] == "torch" and doc["readout_mode"] == "mean"
    ops = [n["op"] for n in doc["graph"]["nodes"]]
    assert "neuron_sumpool2d" in ops and "spike_maxpool2d" in ops and "readout" in ops
    conv = next(n for n in doc["graph"]["nodes"] if n["op"] == "conv2d")
    assert conv["meta"]["source"]["$source"][0] == "c0" and conv["meta"]["shape"] == {"$tuple": [None, 6, 8, 8]}
    assert set(doc["sha256"]) == keys
    # each tensor once: the graphs' parameters and the module's state share their bytes
    weights = sum(p.numel() * 4 for p in Net().parameters())
    data = sum(t.numel() * t.element_size() for t in safetensors.torch.load_file(str(tmp_path / "a.snn")).values())
    assert data < 2.5 * weights


def test_cli_compile_out_writes_the_new_format(tmp_path, capsys):
    from snncompile.cli import main
    out = tmp_path / "mlp.snn"
    assert main(["compile", "mlp", "--T", "4", "--out", str(out)]) == 0
    assert "saved the SNN to" in capsys.readouterr().out
    back = snncompile.load(out)
    assert back.T == 4 and back.graph.find("neuron")
    assert torch.isfinite(back(torch.rand(2, 1, 28, 28))).all()


def test_opaque_python_code_is_refused_naming_the_node(tmp_path):
    class Odd(nn.Module):
        def forward(self, x):
            return torch.sin(x) + x

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.odd = Odd()
            self.out = nn.Linear(4, 2)

        def forward(self, x):
            return self.out(F.relu(self.odd(self.fc(x))))

    from snncompile.frontend.fx import trace
    g = trace(M().eval(), torch.rand(3, 4))
    opaque = [n for n in g.nodes if n.op == "opaque"]
    if not opaque:
        pytest.skip("the frontend has no opaque node for this model")
    snn = snncompile.SpikingModule(g, 1)
    with pytest.raises(SerializationError) as e:
        snn.save(tmp_path / "odd.snn")
    msg = str(e.value)
    assert opaque[0].describe() in msg and "Python code" in msg and "register_op" in msg
    assert not (tmp_path / "odd.snn").exists()


def test_unregistered_family_in_a_fresh_process(tmp_path):
    """A file whose neurons are of a user's family loads only where the family is registered."""
    from snncompile.neurons import NeuronFamily, unregister_family
    from snncompile.neurons.params import V_INIT, V_RESET, reset_param
    fam = NeuronFamily("test_gain_if", (V_INIT, reset_param("subtract", "value"), V_RESET),
                       charge=lambda A, v, x, p: A.add(v, A.mul(2.0, x)),
                       charge_grad=lambda A, g, p: (A.mul(2.0, g), g), doc="IF with gain 2")
    snncompile.register_family(fam)
    try:
        model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
        snn = snncompile.compile(model, torch.rand(16, 4), T=4, backend="torch",
                                 pipeline="canonicalize,normalize{mode=max},relu-to-if{neuron=test_gain_if},"
                                          "encode-input,readout")
        snn.save(tmp_path / "gain.snn")
        x = torch.rand(2, 4)
        assert torch.equal(_run(snncompile.load(tmp_path / "gain.snn"), x), _run(snn, x))
    finally:
        unregister_family("test_gain_if")
    with pytest.raises(SerializationError, match=r"gain\.snn.*neuron family 'test_gain_if'.*register_family"):
        snncompile.load(tmp_path / "gain.snn")


# ------------------------------------------------------------------------------------------
# neuron settings in state_dict()


def test_state_dict_carries_the_neuron_settings():
    a = _converted(v_init=0.0)
    b = _converted(v_init=0.5)
    assert not torch.equal(_run(a, _x()), _run(b, _x()))  # the settings matter
    with pytest.raises(ConfigError) as e:
        b.load_state_dict(a.state_dict())
    msg = str(e.value)
    assert "v_init=0.0 saved, 0.5 here" in msg and "neuron layer module." in msg
    assert "snn.save(path)" in msg
    # the same settings load, and give the same outputs
    c = _converted(v_init=0.0)
    c.load_state_dict(a.state_dict())
    assert torch.equal(_run(c, _x()), _run(a, _x()))
    # the settings are exact int64 codes: .half() leaves them alone
    before = [n.settings.clone() for n in a.neurons().values()]
    a.half()
    assert all(n.settings.dtype == torch.int64 and torch.equal(n.settings, b)
               for n, b in zip(a.neurons().values(), before))


def test_state_dict_of_another_family_is_refused():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    spec = "canonicalize,normalize{mode=max},relu-to-if{neuron=%s},encode-input,readout"
    a, b = (snncompile.compile(model, torch.rand(16, 4), T=4, backend="torch", pipeline=spec % f)
            for f in ("if", "signed_if"))
    assert a.state_dict().keys() == b.state_dict().keys()  # the same tensors, other equations
    with pytest.raises(ConfigError, match=r"another neuron family.*this layer is 'signed_if'"):
        b.load_state_dict(a.state_dict())
