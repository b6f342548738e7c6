"""The user's own data on the command line (issue 16, part 3): ``snncompile.cli_data.load_data``
for every format (.npy, .npz, .pt, a folder of images), its conversions and its messages; the
commands with --calib/--data end to end (tiny T, a few hundred digits); progress bars only on
a terminal (``snncompile.progress``)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from snncompile.cli_data import check_data_path, load_data
from snncompile.errors import ConfigError
from snncompile.progress import progress, progress_enabled

SHAPE = (1, 28, 28)


def _x(n=6, shape=SHAPE, seed=0):
    return np.random.default_rng(seed).random((n,) + shape, dtype=np.float32)


# ------------------------------------------------------------------------------------------
# the formats


def test_npy_inputs(tmp_path):
    x = _x()
    np.save(tmp_path / "x.npy", x)
    d = load_data(str(tmp_path / "x.npy"), option="--calib", input_shape=SHAPE)
    assert d.x.dtype == torch.float32 and tuple(d.x.shape) == (6, 1, 28, 28) and d.y is None
    assert torch.equal(d.x, torch.from_numpy(x)) and d.notes == ()
    assert d.describe() == f"--calib {tmp_path / 'x.npy'}: 6 inputs of [1, 28, 28], no labels"


@pytest.mark.parametrize("arrays", [
    dict(x="x", y="y"), dict(x="images", y="labels"), dict(x="inputs", y="targets"), dict(x="arr_0", y="arr_1"),
    dict(x="pixels", y="cls"),  # two arrays, names unknown: the 1-D one holds the labels
])
def test_npz_with_labels(tmp_path, arrays):
    x, y = _x(), np.arange(6) % 3
    path = tmp_path / "d.npz"
    if arrays["x"] == "pixels":
        np.savez(path, cls=y, pixels=x)  # the labels first
    else:
        np.savez(path, **{arrays["x"]: x, arrays["y"]: y})
    d = load_data(str(path), option="--data", input_shape=SHAPE)
    assert torch.equal(d.x, torch.from_numpy(x)) and d.y.dtype == torch.int64 and d.y.tolist() == y.tolist()
    assert "6 inputs of [1, 28, 28] with labels (3 classes)" in d.describe()


def test_npz_without_labels_and_extra_arrays(tmp_path):
    np.savez(tmp_path / "one.npz", whatever=_x())
    d = load_data(str(tmp_path / "one.npz"), input_shape=SHAPE)
    assert d.y is None and len(d.x) == 6
    np.savez(tmp_path / "extra.npz", x=_x(), mean=np.zeros(3))
    d = load_data(str(tmp_path / "extra.npz"), input_shape=SHAPE)
    assert d.y is None and any("ignored mean" in n for n in d.notes)
    np.savez(tmp_path / "three.npz", a=_x(), b=_x(), c=_x())
    with pytest.raises(ConfigError, match=r"holds the arrays a, b, c, none named as inputs .*np.savez\(path, x=inputs"):
        load_data(str(tmp_path / "three.npz"), input_shape=SHAPE)


def test_pt_tensor_tuple_and_dict(tmp_path):
    x, y = torch.from_numpy(_x()), torch.arange(6) % 2
    torch.save(x, tmp_path / "t.pt")
    torch.save((x, y), tmp_path / "tup.pt")
    torch.save([x.half(), y.int()], tmp_path / "list.pth")
    torch.save({"inputs": x, "targets": y, "note": "kept out"}, tmp_path / "dict.pt")
    d = load_data(str(tmp_path / "t.pt"), input_shape=SHAPE)
    assert torch.equal(d.x, x) and d.y is None
    for name in ("tup.pt", "dict.pt"):
        d = load_data(str(tmp_path / name), input_shape=SHAPE)
        assert torch.equal(d.x, x) and d.y.tolist() == y.tolist(), name
    d = load_data(str(tmp_path / "list.pth"), input_shape=SHAPE)
    assert d.x.dtype == torch.float32 and d.y.dtype == torch.int64
    assert any("not tensors: note" in n for n in load_data(str(tmp_path / "dict.pt"), input_shape=SHAPE).notes)
    torch.save([x[0], x[1], x[2]], tmp_path / "samples.pt")
    with pytest.raises(ConfigError, match=r"list of 3 tensors .*torch.stack"):
        load_data(str(tmp_path / "samples.pt"), input_shape=SHAPE)


class _Trap:
    """Pickled as a call to open(marker, "w"): a file that is loaded with pickle creates marker."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pt_with_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran.txt"
    torch.save({"x": torch.zeros(2, 1, 28, 28), "trap": _Trap(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(ConfigError, match=r"safe load .*weights_only=True.* never runs pickled code"):
        load_data(str(tmp_path / "evil.pt"), input_shape=SHAPE)
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="not a readable .pt file"):
        load_data(str(tmp_path / "junk.pt"))


def test_npy_of_objects_is_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match="holds Python objects"):
        load_data(str(tmp_path / "o.npy"))


def _png_folder(root, classes=("cat", "dog"), n=3, size=(8, 6), mode="RGB"):
    from PIL import Image

    rng = np.random.default_rng(1)
    for c in classes:
        os.makedirs(root / c, exist_ok=True)
        for k in range(n):
            px = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(px).convert(mode).save(root / c / f"{k}.png")
    return root


def test_image_folder_two_classes_grayscale_resized(tmp_path):
    pytest.importorskip("PIL")
    root = _png_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / ".hidden").mkdir()  # hidden folders are not classes
    d = load_data(str(root), option="--data", input_shape=(1, 4, 4))
    assert tuple(d.x.shape) == (6, 1, 4, 4) and d.x.dtype == torch.float32
    assert 0.0 <= float(d.x.min()) and float(d.x.max()) <= 1.0
    assert d.y.tolist() == [0, 0, 0, 1, 1, 1] and d.classes == ("cat", "dog")
    assert any("resized 6 of 6 images to 4x4" in n for n in d.notes)
    assert any("to grayscale" in n for n in d.notes)
    assert "with labels (2 classes: cat, dog)" in d.describe()


def test_image_folder_rgb_at_its_size_and_unlabelled(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    root = _png_folder(tmp_path / "imgs", mode="L")
    d = load_data(str(root), input_shape=(3, 6, 8))  # gray images for an RGB model: three equal channels
    assert tuple(d.x.shape) == (6, 3, 6, 8) and torch.equal(d.x[:, 0], d.x[:, 2])
    assert not any("resized" in n for n in d.notes)
    expect = np.asarray(Image.open(root / "cat" / "0.png").convert("RGB"), dtype=np.float32) / 255
    assert np.allclose(d.x[0].numpy(), expect.transpose(2, 0, 1))
    flat = tmp_path / "flat"
    flat.mkdir()
    for k in range(2):
        Image.fromarray(np.full((5, 5), 40 * k, np.uint8)).save(flat / f"{k}.bmp")
    d = load_data(str(flat), input_shape=None)
    assert d.y is None and tuple(d.x.shape) == (2, 1, 5, 5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images found"):
        load_data(str(tmp_path / "empty"), input_shape=(1, 4, 4))
    with pytest.raises(ConfigError, match=r"1 or 3 channels; the model takes \[N, 784\]"):
        load_data(str(flat), input_shape=(784,))


def test_uint8_inputs_become_floats_in_0_1_and_the_channel_axis_is_added(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    path = tmp_path / "mnist.npy"
    np.save(path, x)
    d = load_data(str(path), option="--calib", input_shape=SHAPE)
    assert tuple(d.x.shape) == (5, 1, 28, 28) and d.x.dtype == torch.float32
    assert torch.allclose(d.x[:, 0], torch.from_numpy(x.astype(np.float32) / 255))
    assert any("uint8" in n and "divided by 255" in n for n in d.notes)
    assert any(n == f"--calib {path} holds [N, 28, 28]; the model takes [N, 1, 28, 28]: added the channel axis"
               for n in d.notes)
    np.save(path, np.full((2, 1, 28, 28), 1000, np.int64))
    with pytest.raises(ConfigError, match="int64 integers from 1000 to 1000, not 0..255"):
        load_data(str(path), input_shape=SHAPE)


@pytest.mark.parametrize("shape, words", [
    ((4, 784), "holds [N, 784] (N=4); the model takes [N, 1, 28, 28] — the same 784 values per input in another "
               "shape; reshape them (x.reshape(-1, 1, 28, 28))"),
    ((4, 28, 28, 1), "the channels come last; move them to axis 1 (x.transpose(0, 3, 1, 2))"),
    ((4, 1, 32, 32), "the images are 32x32, the model takes 28x28; resize them"),
    ((4, 3, 28, 28), "3 channels where the model takes 1"),
    ((4, 5), "holds [N, 5] (N=4); the model takes [N, 1, 28, 28] — give inputs of the model's shape"),
])
def test_wrong_shapes_say_what_is_wrong(tmp_path, shape, words):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros(shape, np.float32))
    with pytest.raises(ConfigError) as e:
        load_data(str(path), option="--calib", input_shape=SHAPE)
    assert str(e.value).startswith(f"--calib {path} ") and words in str(e.value)


@pytest.mark.parametrize("y, words", [
    (np.linspace(0, 1, 4), "the labels are float64; labels are integer class indices"),
    (np.eye(4, dtype=np.int64), "one-hot or scores?"),
    (np.arange(3), "4 inputs but 3 labels"),
    (np.array([0, 1, -1, 2]), "a label is -1"),
])
def test_labels_must_be_integer_class_indices(tmp_path, y, words):
    np.savez(tmp_path / "d.npz", x=_x(4), y=y)
    with pytest.raises(ConfigError, match=words.replace("?", r"\?")):
        load_data(str(tmp_path / "d.npz"), option="--data", input_shape=SHAPE)


def test_paths_are_checked_without_reading(tmp_path):
    with pytest.raises(ConfigError, match="no such file or folder"):
        check_data_path(str(tmp_path / "none.npy"), "--calib")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(ConfigError, match=r"--data .*x.csv: .csv is not a data file snncompile reads"):
        check_data_path(str(tmp_path / "x.csv"), "--data")
    (tmp_path / "one.png").write_bytes(b"")
    with pytest.raises(ConfigError, match="put the images in a folder"):
        check_data_path(str(tmp_path / "one.png"), "--calib")
    assert check_data_path(str(tmp_path), "--calib") == str(tmp_path)


# ------------------------------------------------------------------------------------------
# progress bars


def test_progress_is_the_iterable_itself_when_not_a_terminal(monkeypatch, capsys):
    monkeypatch.delenv("SNNCOMPILE_PROGRESS", raising=False)
    items = [1, 2, 3]
    assert not progress_enabled() and progress(items, desc="x") is items  # capsys: stderr is not a terminal
    monkeypatch.setenv("SNNCOMPILE_PROGRESS", "0")
    assert progress(items, desc="x", enabled=None) is items
    monkeypatch.setitem(sys.modules, "tqdm", None)  # tqdm not installed: no bar, no error
    assert progress(items, desc="x", enabled=True) is items


def test_progress_bar_when_enabled():
    pytest.importorskip("tqdm")
    bar = progress(range(3), desc="x", enabled=True)
    assert type(bar).__name__ == "tqdm" and list(bar) == [0, 1, 2]
