"""The rewrite API on Graph (replace, replace_all_uses, insert_before/after, erase, move): what
every pass uses instead of editing nodes and the node list by hand."""
from __future__ import annotations

import pytest
import torch

from snncompile.errors import VerifyError
from snncompile.ir import Graph, SourceLoc


def _chain() -> Graph:
    """%0 input [N,2,4,4] -> %1 relu -> %2 avgpool2d(2) -> %3 flatten -> %4 output; %1 has meta."""
    g = Graph(name="chain")
    x = g.add("input", meta={"shape": (None, 2, 4, 4)})
    r = g.add("relu", [x], meta={"shape": (None, 2, 4, 4), "source": SourceLoc("act"), "static": True,
                                 "act_scale": torch.tensor(2.0), "dtype": torch.float32})
    p = g.add("avgpool2d", [r], {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)},
              meta={"shape": (None, 2, 2, 2), "source": SourceLoc("pool")})
    f = g.add("flatten", [p], meta={"shape": (None, 8)})
    g.add("output", [f], meta={"shape": (None, 8)})
    g.verify()
    return g


# ---------------------------------------------------------------------------------------------
# replace


def test_replace_keeps_position_id_and_readers():
    g = _chain()
    before = [n.id for n in g]
    r, p = g.nodes[1], g.nodes[2]
    n = g.replace(p, "sumpool2d", attrs={"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)})
    assert n is not p and n.id == p.id and n.op == "sumpool2d"
    assert [m.id for m in g] == before and g.nodes[2] is n
    assert n.inputs == [r]
    assert g.users(n) == [g.nodes[3]] and g.users(p) == []
    assert all(p not in m.inputs for m in g)
    assert n.source == SourceLoc("pool") and n.shape == (None, 2, 2, 2)
    g.verify()
    assert g.fresh_id() == 5  # no id spent


def test_replace_meta_starts_afresh():
    g = _chain()
    r = g.nodes[1]
    n = g.replace(r, "neuron", attrs={"family": "if", "v_init": 0.5}, params={"threshold": torch.tensor(1.0)})
    assert set(n.meta) == {"source", "shape"}  # static, act_scale, dtype of the relu are gone
    assert n.shape == (None, 2, 4, 4)  # recomputed by the op's shape rule
    n2 = g.replace(n, "neuron", attrs=n.attrs, params=n.params, meta={"note": 1})
    assert set(n2.meta) == {"source", "shape", "note"}
    g = _chain()
    n = g.replace(g.nodes[1], "relu", keep_meta=("act_scale",))
    assert set(n.meta) == {"source", "shape", "act_scale"}
    g = _chain()
    n = g.replace(g.nodes[1], "relu", keep_meta="all", meta={"shape": (None, 2, 4, 4)})
    assert set(n.meta) == {"source", "shape", "static", "act_scale", "dtype"}


def test_replace_recomputes_a_changed_shape():
    g = _chain()
    p = g.nodes[2]
    n = g.replace(p, "avgpool2d", attrs={"kernel_size": (4, 4), "stride": (4, 4), "padding": (0, 0)})
    assert n.shape == (None, 2, 1, 1)  # the old [N,2,2,2] did not survive
    assert "%2 = avgpool2d(%1) kernel_size=4 stride=4 padding=0" in str(g)


def test_replace_with_new_inputs_and_defaults():
    g = _chain()
    x, r, p = g.nodes[:3]
    n = g.replace(p, "maxpool2d", [x], {"kernel_size": 2})
    assert n.inputs == [x] and n.params == {} and n.attrs == {"kernel_size": 2}
    assert g.users(r) == []


def test_replace_refuses_bad_use():
    g = _chain()
    x, r, p, f, out = g.nodes
    with pytest.raises(VerifyError, match=r"cannot replace node %2 avgpool2d .*by a node that reads it"):
        g.replace(p, "relu", [p])
    with pytest.raises(VerifyError, match=r"reads node %3 flatten, which comes after it \(SSA order\)"):
        g.replace(r, "add", [x, f])
    stray = _chain().nodes[1]
    with pytest.raises(VerifyError, match="is not in graph chain"):
        g.replace(stray, "relu")
    with pytest.raises(VerifyError, match="which is not in the graph"):
        g.replace(r, "relu", [stray])
    assert str(g) == str(_chain())  # nothing changed


# ---------------------------------------------------------------------------------------------
# uses, insertion, erasure, moves


def test_replace_all_uses_all_or_some_readers():
    g = Graph()
    x = g.add("input", meta={"shape": (None, 4)})
    a = g.add("relu", [x], meta={"shape": (None, 4)})
    b = g.add("add", [x, x], meta={"shape": (None, 4)})
    c = g.add("add", [x, a], meta={"shape": (None, 4)})
    g.add("output", [b, c], meta={"shape": (None, 4)})
    m = g.insert_after(x, "mul_const", attrs={"value": 2.0})
    g.replace_all_uses(x, m, readers=[b])
    assert b.inputs == [m, m] and a.inputs == [x] and c.inputs == [x, a] and m.inputs == [x]
    g.replace_all_uses(x, m)
    assert a.inputs == [m] and c.inputs == [m, a] and m.inputs == [x]  # m itself still reads x
    g.verify()


def test_insert_before_and_after_take_fresh_ids_and_compute_shapes():
    g = _chain()
    x, r, p, f, out = g.nodes
    s = g.insert_before(p, "scale", [r], params={"factor": torch.tensor(0.5)})
    assert s.id == 5 and g.nodes[2] is s and s.shape == (None, 2, 4, 4)
    assert g.users(s) == []  # nobody reads it until told
    g.replace_all_uses(r, s, readers=[p])
    assert p.inputs == [s]
    g.verify()
    t = g.insert_after(s, "relu", [s])
    assert t.id == 6 and g.nodes[3] is t and t.shape == (None, 2, 4, 4)
    assert "%6 = relu(%5)" in str(g)


def test_insert_after_defaults_to_reading_the_anchor():
    g = _chain()
    x, r, p, f, out = g.nodes
    m = g.insert_after(f, "mul_const", attrs={"value": 3.0}, meta={"source": SourceLoc("k")})
    assert m.inputs == [f] and g.nodes[4] is m and m.shape == (None, 8) and m.source == SourceLoc("k")
    g.replace_all_uses(f, m)
    assert out.inputs == [m]
    g.verify()
    with pytest.raises(VerifyError, match="comes after it"):
        g.insert_before(r, "relu", [p])
    with pytest.raises(VerifyError, match="comes after it"):
        g.insert_after(x, "relu", [r])


def test_erase_refuses_a_read_node_or_rewires_it():
    g = _chain()
    x, r, p, f, out = g.nodes
    with pytest.raises(VerifyError, match=r"cannot remove node %1 relu \(act\): still read by %2"):
        g.erase(r)
    g.erase(r, rewire_to=x)
    assert p.inputs == [x] and r not in g.nodes
    g.verify()
    with pytest.raises(VerifyError, match="comes after some of them"):
        g.erase(p, rewire_to=out)
    with pytest.raises(VerifyError, match="is not in graph"):
        g.erase(r)


def test_bypass_and_remove_are_erase():
    g = _chain()
    x, r, p, f, out = g.nodes
    g.bypass(r)
    assert p.inputs == [x]
    with pytest.raises(VerifyError, match="still read by"):
        g.remove(p)
    a = g.add("add", [x, x], meta={"shape": (None, 2, 4, 4)}, before=p)
    with pytest.raises(VerifyError, match="it has 2 inputs, not one"):
        g.bypass(a)
    g.remove(a)
    g.verify()


def test_move_keeps_ssa_order():
    g = Graph()
    x = g.add("input", meta={"shape": (None, 4)})
    a = g.add("relu", [x], meta={"shape": (None, 4)})
    b = g.add("mul_const", [x], {"value": 2.0}, meta={"shape": (None, 4)})
    c = g.add("add", [a, b], meta={"shape": (None, 4)})
    g.add("output", [c], meta={"shape": (None, 4)})
    g.move(a, after=b)
    assert [n.id for n in g] == [0, 2, 1, 3, 4]
    g.verify()
    with pytest.raises(VerifyError, match=r"cannot move node %3 add before %1: it reads %1 \(SSA order\)"):
        g.move(c, before=a)
    with pytest.raises(VerifyError, match=r"%3 read\(s\) it"):
        g.move(a, after=c)
    assert [n.id for n in g] == [0, 2, 1, 3, 4]  # a refused move changes nothing
    with pytest.raises(VerifyError, match="exactly one of"):
        g.move(a)
