"""The IR: printing, copy, diff, networkx export and the verifier."""
from __future__ import annotations

import inspect
import re

import pytest
import torch
import torch.nn as nn

from snncompile import emit, trace
from snncompile.errors import VerifyError
from snncompile.ir import Graph, SourceLoc, format_shape
from snncompile.models import MnistCNN


@pytest.fixture(scope="module")
def mnist_graph() -> Graph:
    torch.manual_seed(0)
    return trace(MnistCNN(), torch.rand(2, 1, 28, 28))


def _forward_line(cls, text: str) -> int:
    """The line number of the line in ``cls.forward`` containing ``text``."""
    lines, start = inspect.getsourcelines(cls.forward)
    (k,) = [i for i, line in enumerate(lines) if text in line]
    return start + k


def _small() -> Graph:
    """input [N,4] -> relu -> dropout -> relu -> output, built by hand (no source info)."""
    g = Graph(name="small")
    x = g.add("input", meta={"shape": (None, 4)})
    a = g.add("relu", [x], meta={"shape": (None, 4)})
    d = g.add("dropout", [a], {"p": 0.1}, meta={"shape": (None, 4)})
    b = g.add("relu", [d], meta={"shape": (None, 4)})
    g.add("output", [b], meta={"shape": (None, 4)})
    return g


# ---------------------------------------------------------------------------------------------
# printing


def test_print_one_line_per_node(mnist_graph):
    lines = str(mnist_graph).splitlines()
    assert len(lines) == len(mnist_graph) == 16
    for node, line in zip(mnist_graph, lines):
        assert re.match(rf"%{node.id} = {node.op}\(", line), line
        assert line.endswith(format_shape(node.shape))


def test_print_golden_lines(mnist_graph):
    ln = _forward_line(MnistCNN, "return self.network(x)")
    text = str(mnist_graph)
    expected = [
        "%0 = input()                                                             # [N,1,28,28]",
        f"%4 = avgpool2d(%3) kernel_size=2 stride=2 padding=0                      # network.3 mnist_cnn.py:{ln}  [N,32,13,13]",
        f"%5 = conv2d(%4) weight=f32[32,32,3,3] bias=f32[32] stride=1 padding=0    # network.4 mnist_cnn.py:{ln}  [N,32,11,11]",
        f"%6 = batchnorm(%5) running_mean=f32[32] running_var=f32[32] weight=f32[32] bias=f32[32] "
        f"# network.5 mnist_cnn.py:{ln}  [N,32,11,11]",
        f"%7 = relu(%6)                                                            # network.6 mnist_cnn.py:{ln}  [N,32,11,11]",
        f"%13 = flatten(%12)                                                       # network.12 mnist_cnn.py:{ln}  [N,32]",
        f"%14 = linear(%13) weight=f32[10,32] bias=f32[10]                         # network.13 mnist_cnn.py:{ln}  [N,10]",
        "%15 = output(%14)                                                        # [N,10]",
    ]
    lines = text.splitlines()
    for want in expected:
        assert want in lines, f"missing line:\n{want}\nin:\n{text}"


def test_print_conv_line_names_path_source_and_shape(mnist_graph):
    line = mnist_graph.node(5).format()
    assert line.startswith("%5 = conv2d(%4)")
    assert "network.4" in line
    assert re.search(r"mnist_cnn\.py:\d+", line)
    assert line.endswith("[N,32,11,11]")


def test_print_hides_default_attrs_and_shows_others():
    g = trace(nn.Sequential(nn.Conv2d(4, 8, 3, groups=2, dilation=2)), torch.randn(2, 4, 9, 9))
    line = g.find("conv2d")[0].format()
    assert "groups=2" in line and "dilation=2" in line
    g = trace(nn.Conv2d(4, 8, 3), torch.randn(2, 4, 9, 9))
    line = g.find("conv2d")[0].format()
    assert "groups" not in line and "dilation" not in line
    assert "stride=1 padding=0" in line  # always shown


def test_format_shape_and_source_loc():
    assert format_shape((None, 32, 11, 11)) == "[N,32,11,11]"
    assert format_shape(None) == "[?]"
    loc = SourceLoc("layer1.0.conv1", "/some/dir/resnet.py", 54, "x = self.conv1(x)")
    assert str(loc) == "layer1.0.conv1 resnet.py:54"
    assert loc.short_file == "resnet.py"


def test_describe_names_node_path_and_line(mnist_graph):
    ln = _forward_line(MnistCNN, "return self.network(x)")
    assert mnist_graph.node(7).describe() == f"node %7 relu (network.6, mnist_cnn.py:{ln})"
    assert mnist_graph.node(0).describe().startswith("node %0 input")


# ---------------------------------------------------------------------------------------------
# copy and aliasing


def test_copy_clones_params_and_nodes(mnist_graph):
    c = mnist_graph.copy()
    assert str(c) == str(mnist_graph)
    assert all(a is not b for a, b in zip(c, mnist_graph))
    members = {id(n) for n in c}
    assert all(id(i) in members for n in c for i in n.inputs), "copy reads nodes of the original"
    before = mnist_graph.node(5).params["weight"].clone()
    c.node(5).params["weight"].add_(1.0)
    c.node(6).params["running_var"].mul_(3.0)
    assert torch.equal(mnist_graph.node(5).params["weight"], before)
    assert not torch.equal(c.node(5).params["weight"], before)
    assert not torch.equal(c.node(6).params["running_var"], mnist_graph.node(6).params["running_var"])
    c.node(5).meta["scale"] = 2.0
    c.node(5).attrs["stride"] = (2, 2)
    assert "scale" not in mnist_graph.node(5).meta
    assert mnist_graph.node(5).attrs["stride"] == (1, 1)


def test_copy_keeps_fresh_ids_fresh():
    g = _small()
    g.bypass(g.nodes[-2])  # the last relu: the highest id before output is gone
    c = g.copy()
    assert c.fresh_id() == g.fresh_id()
    assert c.fresh_id() not in {n.id for n in c}


def test_trace_never_aliases_the_model():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = trace(model, torch.rand(2, 1, 6, 6))
    conv, bn = g.find("conv2d")[0], g.find("batchnorm")[0]
    conv.params["weight"].add_(1.0)
    conv.params["bias"].zero_()
    bn.params["running_mean"].add_(5.0)
    bn.params["weight"].mul_(-1.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"model tensor {k} changed with the graph"


def test_emit_never_aliases_the_graph(mnist_graph):
    g = mnist_graph.copy()
    gm = emit(g)
    w = g.node(5).params["weight"].clone()
    with torch.no_grad():
        for p in gm.parameters():
            p.zero_()
    assert torch.equal(g.node(5).params["weight"], w)


# ---------------------------------------------------------------------------------------------
# diff and networkx


def test_diff_shows_removed_and_added_lines():
    a = _small()
    b = a.copy()
    b.name = "after"
    b.bypass([n for n in b if n.op == "dropout"][0])
    d = a.diff(b)
    lines = d.splitlines()
    assert lines[0].startswith("--- small") and lines[1].startswith("+++ after")
    removed = [ln[1:] for ln in lines if ln.startswith("-") and not ln.startswith("---")]
    added = [ln[1:] for ln in lines if ln.startswith("+") and not ln.startswith("+++")]
    assert [r.split("#")[0].strip() for r in removed] == ["%2 = dropout(%1) p=0.1", "%3 = relu(%2)"]
    assert [r.split("#")[0].strip() for r in added] == ["%3 = relu(%1)"]
    assert a.diff(a.copy()) == ""


def test_to_networkx_counts(mnist_graph):
    nxg = mnist_graph.to_networkx()
    assert nxg.number_of_nodes() == 16
    assert nxg.number_of_edges() == 15
    assert nxg.nodes[5]["op"] == "conv2d"
    assert nxg.nodes[5]["shape"] == (None, 32, 11, 11)
    assert nxg.nodes[5]["module_path"] == "network.4"
    assert list(nxg.successors(5)) == [6]


def test_to_networkx_residual():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)

        def forward(self, x):
            y = torch.relu(self.a(x))
            return torch.cat([self.b(y) + x, y], dim=1)

    g = trace(Res(), torch.randn(2, 4))
    nxg = g.to_networkx()
    assert nxg.number_of_nodes() == len(g) == 7
    assert nxg.number_of_edges() == sum(len(n.inputs) for n in g) == 8
    (add,) = g.find("add")
    assert sorted(nxg.predecessors(add.id)) == sorted(i.id for i in add.inputs)
    assert nxg.edges[add.inputs[1].id, add.id, 0]["index"] == 1


# ---------------------------------------------------------------------------------------------
# the verifier


def test_verify_accepts_sound_graphs(mnist_graph):
    mnist_graph.verify()
    _small().verify()


def test_verify_ssa_order():
    g = _small()
    x, a, d, b, out = g.nodes
    g.nodes = [x, d, a, b, out]  # the dropout now reads %1 before it is defined
    with pytest.raises(VerifyError, match=r"node %2 dropout: reads %1 before it is defined \(SSA"):
        g.verify()


def test_verify_read_of_a_node_outside_the_graph():
    g = _small()
    stray = _small().nodes[1]
    g.nodes[3].inputs = [stray]
    with pytest.raises(VerifyError, match=r"node %3 relu: reads %1, which is not in the graph"):
        g.verify()


def test_verify_duplicate_id():
    g = _small()
    g.nodes[3].id = 1
    with pytest.raises(VerifyError, match=r"node %1 relu: id %1 is used twice"):
        g.verify()


def test_verify_missing_required_attr():
    g = Graph()
    x = g.add("input", meta={"shape": (None, 2, 4, 4)})
    p = g.add("avgpool2d", [x], {"stride": 2}, meta={"shape": (None, 2, 2, 2)})
    g.add("output", [p], meta={"shape": (None, 2, 2, 2)})
    with pytest.raises(VerifyError, match=r"node %1 avgpool2d: missing required attribute 'kernel_size'"):
        g.verify()


def test_verify_unknown_attr():
    g = _small()
    g.nodes[1].attrs["negative_slope"] = 0.1
    with pytest.raises(VerifyError, match=r"node %1 relu: unknown attribute\(s\) \['negative_slope'\]"):
        g.verify()


def test_verify_missing_and_unknown_params():
    g = trace(nn.Linear(4, 3), torch.randn(2, 4))
    lin = g.find("linear")[0]
    w = lin.params.pop("weight")
    with pytest.raises(VerifyError, match=rf"node %{lin.id} linear.*missing parameter 'weight'"):
        g.verify()
    lin.params["weight"] = w
    lin.params["gain"] = torch.ones(3)
    with pytest.raises(VerifyError, match=rf"node %{lin.id} linear.*unknown parameter\(s\) \['gain'\]"):
        g.verify()


def test_verify_wrong_recorded_shape():
    g = _small()
    g.nodes[3].meta["shape"] = (None, 5)
    with pytest.raises(VerifyError, match=r"node %3 relu: recorded shape \[None, 5\] but the op computes \[None, 4\]"):
        g.verify()


def test_verify_wrong_shape_in_a_traced_graph(mnist_graph):
    g = mnist_graph.copy()
    g.node(5).meta["shape"] = (None, 32, 12, 12)
    with pytest.raises(VerifyError, match=r"node %5 conv2d \(network\.4, mnist_cnn\.py:\d+\): recorded shape"):
        g.verify()


def test_verify_params_that_do_not_fit():
    g = trace(nn.Linear(4, 3), torch.randn(2, 4))
    lin = g.find("linear")[0]
    lin.params["weight"] = torch.randn(3, 5)
    with pytest.raises(VerifyError, match=rf"node %{lin.id} linear.*does not run on its inputs' shapes"):
        g.verify()


def test_verify_wrong_arity():
    g = _small()
    g.nodes[3].inputs = [g.nodes[1], g.nodes[2]]
    with pytest.raises(VerifyError, match=r"node %3 relu: takes 1 input\(s\), has 2"):
        g.verify()


def test_verify_unknown_op():
    g = _small()
    g.nodes[1].op = "softplus"
    with pytest.raises(VerifyError, match=r"node %1 softplus: op 'softplus' is not in the op table"):
        g.verify()


def test_verify_missing_output():
    g = _small()
    g.nodes.pop()
    with pytest.raises(VerifyError, match="graph has 0 output nodes; it needs exactly one"):
        g.verify()
    with pytest.raises(VerifyError, match="0 output nodes"):
        g.output


def test_verify_output_must_be_last():
    g = _small()
    g.nodes.insert(2, g.nodes.pop())
    with pytest.raises(VerifyError, match="the output node must be the last node"):
        g.verify()


# ---------------------------------------------------------------------------------------------
# editing helpers


def test_remove_refuses_a_node_with_users():
    g = _small()
    with pytest.raises(VerifyError, match=r"cannot remove node %1 relu: still read by %2"):
        g.remove(g.nodes[1])


def test_add_before_after_and_find():
    g = _small()
    a = g.nodes[1]
    m = g.add("mul_const", [a], {"value": 2.0}, meta={"shape": (None, 4)}, after=a)
    g.replace_all_uses(a, m)
    assert m.inputs == [a]  # the new node still reads a
    assert g.nodes[2] is m and g.nodes[3].inputs == [m]
    g.verify()
    assert [n.id for n in g.find("relu")] == [1, 3]
    assert g.users(a) == [m]
    with pytest.raises(KeyError, match="no node %99"):
        g.node(99)
