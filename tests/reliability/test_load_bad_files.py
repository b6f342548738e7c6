"""snncompile.load on bad files (issue 12, item 4): a truncated, corrupted, foreign or
newer-version file, a missing one or a folder is a SerializationError naming the file and what
is wrong; nothing from the file runs. Saving where nothing can be written says so and leaves no
partial file."""
from __future__ import annotations

import hashlib
import json

import pytest
import safetensors.torch
import torch

import snncompile
from snncompile.errors import SnnCompileError
from snncompile.serialize import SerializationError
from test_save_load import _converted


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "good.snn"
    _converted().save(path)
    return path.read_bytes()


def _load_bad(tmp_path, data: bytes, name="bad.snn"):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(SerializationError) as e:
        snncompile.load(path)
    assert str(path) in str(e.value)
    assert isinstance(e.value, SnnCompileError)
    return str(e.value)


@pytest.mark.parametrize("keep", [0, 5, 8, 40, "half", -1])
def test_truncated_file(tmp_path, saved, keep):
    n = {"half": len(saved) // 2}.get(keep, keep)
    msg = _load_bad(tmp_path, saved[:n])
    assert "truncated" in msg and "save the SNN again" in msg


@pytest.mark.parametrize("where", ["data", "last", "description"])
def test_corrupted_file(tmp_path, saved, where):
    data = bytearray(saved)
    header = int.from_bytes(saved[:8], "little")
    if where == "data":
        data[8 + header + 3] ^= 0xFF
    elif where == "last":
        data[-1] ^= 0x01
    else:  # a digit in the JSON graph, still valid JSON
        k = saved.index(b'\\"T\\":6')
        data[k + len(b'\\"T\\":')] = ord("7")
    msg = _load_bad(tmp_path, bytes(data))
    assert "corrupted" in msg and ("checksum" in msg) and "save the SNN again" in msg


def test_foreign_files(tmp_path):
    safetensors.torch.save_file({"weight": torch.ones(3)}, str(tmp_path / "weights.safetensors"))
    msg = _load_bad(tmp_path, (tmp_path / "weights.safetensors").read_bytes(), "weights.safetensors")
    assert "not an SNN saved by snncompile" in msg and "safetensors.torch.load_file" in msg
    torch.save({"w": torch.ones(2)}, tmp_path / "pickled.pt")
    msg = _load_bad(tmp_path, (tmp_path / "pickled.pt").read_bytes(), "pickled.pt")
    assert "pickle" in msg and "never loads" in msg and "snn.save(path)" in msg
    msg = _load_bad(tmp_path, b"hello, this is a text file and not an SNN at all\n" * 3, "notes.txt")
    assert "not an SNN saved by snncompile" in msg
    other = safetensors.torch.save({"w": torch.ones(1)}, metadata={"snncompile": "{}", "snncompile_sha256": "0"})
    assert "checksum" in _load_bad(tmp_path, other, "other.snn")


def _rewrite_doc(saved: bytes, change) -> bytes:
    """The saved file with its JSON description changed (and its checksum made to match)."""
    n = int.from_bytes(saved[:8], "little")
    meta = json.loads(saved[8:8 + n])["__metadata__"]
    doc = json.loads(meta["snncompile"])
    change(doc)
    text = json.dumps(doc)
    tensors = safetensors.torch.load(saved)
    return safetensors.torch.save(tensors, metadata={"snncompile": text,
                                                     "snncompile_sha256": hashlib.sha256(text.encode()).hexdigest()})


def test_newer_format_version(tmp_path, saved):
    msg = _load_bad(tmp_path, _rewrite_doc(saved, lambda d: d.update(version=2)))
    assert "newer snncompile" in msg and "version 2" in msg and "upgrade snncompile" in msg


def test_foreign_format_and_unknown_op_in_a_consistent_file(tmp_path, saved):
    msg = _load_bad(tmp_path, _rewrite_doc(saved, lambda d: d.update(format="someone-else")))
    assert "not an SNN saved by snncompile" in msg

    def rename_op(d):
        next(n for n in d["graph"]["nodes"] if n["op"] == "conv2d")["op"] = "my_custom_conv"
    msg = _load_bad(tmp_path, _rewrite_doc(saved, rename_op))
    assert "'my_custom_conv'" in msg or "my_custom_conv" in msg
    assert "register_op" in msg and "before loading" in msg

    def drop_node(d):
        del d["graph"]["nodes"][1]
    msg = _load_bad(tmp_path, _rewrite_doc(saved, drop_node))
    assert "corrupted" in msg


def test_missing_file_and_a_folder(tmp_path):
    with pytest.raises(SerializationError, match=r"nope\.snn.*cannot read it.*snn\.save"):
        snncompile.load(tmp_path / "nope.snn")
    with pytest.raises(SerializationError, match="cannot read it"):
        snncompile.load(tmp_path)


def test_unwritable_path_is_a_clear_error_and_leaves_nothing(tmp_path):
    snn = _converted()
    with pytest.raises(SerializationError, match=r"cannot write .*choose a writable path"):
        snn.save(tmp_path / "no_such_folder" / "a.snn")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SerializationError, match="cannot write"):
        snn.save(tmp_path / "a_file" / "a.snn")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
