"""A user's network is refused at `radassets models add` unless it returns exactly one vector per patch, of a
sane length, independent of the other patches in its batch and not the same for every patch; at embedding time
every batch's shape is checked again. A refused file leaves nothing in the weights cache, so a corrected file
registers."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from radassets.cli import main as cli_main
from radassets.errors import RadassetsError
from radassets.models import registry
from radassets.models.embed import read_embeddings, run_embeddings
from radassets.models.extractors import load_extractor
from radassets_tests.models.conftest import home_weights
from radassets_tests.models.test_embed import _patches, _spec
from radassets_tests.standins import TinyEncoder

CPU = torch.device("cpu")
SIZE = 40  # the input the test networks are given (voxels per axis)


class Transposed(TinyEncoder):
    """Returns (D, batch): reshaped to (batch, -1), its vectors would mix the patients of a batch."""

    def forward(self, x):
        return super().forward(x).t()


class FeatureMap(TinyEncoder):
    """Returns the convolution's feature map (batch, 6, 19, 19, 19), never pooled."""

    def forward(self, x):
        return torch.relu(self.conv(x))


class FlattenedFeatureMap(TinyEncoder):
    """Returns the feature map flattened: (batch, 41154), a 'vector' of every voxel of every channel."""

    def forward(self, x):
        return torch.relu(self.conv(x)).flatten(1)


class BatchCentred(TinyEncoder):
    """Subtracts the batch mean: each patch's vector depends on the patches embedded with it."""

    def forward(self, x):
        y = super().forward(x)
        return y - y.mean(dim=0, keepdim=True)


class Constant(torch.nn.Module):
    """The same vector whatever the patch (one per patch of the batch)."""

    def forward(self, x):
        return torch.zeros_like(x[:, 0, 0, 0, :4]) + 0.5


class PooledNotFlattened(TinyEncoder):
    """A global pool left unflattened: (batch, 6, 1, 1, 1), an accepted shape."""

    def forward(self, x):
        return self.pool(torch.relu(self.conv(x)))


class TransposedForLargeBatches(TinyEncoder):
    """Right for batches of one or two patches (what registration runs), transposed for larger ones."""

    def forward(self, x):
        y = self.pool(torch.relu(self.conv(x))).flatten(1)
        if x.shape[0] > 2:
            return y.t()
        return y


def export(net: torch.nn.Module, kind: str, folder: Path, batch_axis: int = 0) -> Path:
    """The network saved as a real TorchScript or ONNX file (batch size free)."""
    net = net.eval()
    example = torch.zeros(1, 1, SIZE, SIZE, SIZE)
    if kind == "torchscript":
        path = folder / f"{type(net).__name__}.pt"
        torch.jit.trace(net, example).save(str(path))
        return path
    path = folder / f"{type(net).__name__}.onnx"
    with warnings.catch_warnings():  # the TorchScript-based exporter needs no onnxscript; torch marks it legacy
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {batch_axis: "batch"}})
    return path


def add(name: str, path: Path, kind: str, tmp_path: Path) -> None:
    cli_main(["models", "add", name, f"--{kind}", str(path), "--preprocessing", str(_spec(tmp_path, (SIZE,) * 3))])


REFUSED = [
    (Transposed, 1, r"returned shape \(6, 1\) for a batch of 1 patch.*one vector per patch along the first axis"),
    (FeatureMap, 0, r"returned a feature map of shape \(1, 6, 19, 19, 19\).*pool it"),
    (FlattenedFeatureMap, 0, r"41154 values per patch.*more than 16384.*pool it"),
    (BatchCentred, 0, r"depends on the other patches in its batch.*differs by 1 of its norm"),
    (Constant, 0, r"same vector for two different patches"),
]


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
@pytest.mark.parametrize("net, batch_axis, message", REFUSED, ids=[r[0].__name__ for r in REFUSED])
def test_a_misshaped_or_batch_dependent_network_is_refused(models_home, tmp_path, capsys, kind, net, batch_axis,
                                                            message):
    path = export(net(), kind, tmp_path, batch_axis)
    with pytest.raises(SystemExit) as exit_:
        add("user_net", path, kind, tmp_path)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("radassets: error: model 'user_net'") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not (models_home / "user_net.yaml").exists()
    assert not (home_weights(models_home) / "user_net").exists()  # nothing cached, nothing staged


class FixedInput(torch.nn.Module):
    """A network made for 40-voxel inputs only (a linear layer on the flattened input)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(SIZE ** 3, 4)

    def forward(self, x):
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_a_network_failing_on_the_specified_input_is_refused_naming_the_shape(models_home, tmp_path, capsys, kind):
    path = export(FixedInput(), kind, tmp_path)
    with pytest.raises(SystemExit):
        cli_main(["models", "add", "fixed", f"--{kind}", str(path), "--preprocessing", str(_spec(tmp_path, (48,) * 3))])
    err = capsys.readouterr().err
    assert "model 'fixed' fails on an input of shape (1, 1, 48, 48, 48) (from the preprocessing spec)" in err, err
    assert err.count("\n") == 1 and not (models_home / "fixed.yaml").exists()


def test_a_pooled_map_left_unflattened_registers_with_the_same_vectors(models_home, tmp_path, capsys):
    weights = home_weights(models_home)
    add("tiny", export(TinyEncoder(), "torchscript", tmp_path), "torchscript", tmp_path)
    add("pooled", export(PooledNotFlattened(), "onnx", tmp_path), "onnx", tmp_path)
    assert "registered pooled (onnx, 6-d)" in capsys.readouterr().out
    patches, masks, rows = _patches()
    run_embeddings(load_extractor(registry.get("tiny", models_home), CPU, weights_dir=weights),
                   patches, masks, rows, tmp_path / "tiny")
    run_embeddings(load_extractor(registry.get("pooled", models_home), CPU, weights_dir=weights),
                   patches, masks, rows, tmp_path / "pooled")
    assert np.allclose(read_embeddings(tmp_path / "tiny")[1], read_embeddings(tmp_path / "pooled")[1], atol=1e-5)


def test_every_batch_is_checked_at_embedding_time(models_home, tmp_path):
    weights = home_weights(models_home)
    path = tmp_path / "late.pt"
    torch.jit.script(TransposedForLargeBatches().eval()).save(str(path))
    add("late", path, "torchscript", tmp_path)  # batches of one and two: right
    patches, masks, rows = _patches()
    extractor = load_extractor(registry.get("late", models_home), CPU, weights_dir=weights)
    with pytest.raises(RadassetsError, match=r"model 'late' returned shape \(6, 4\) for a batch of 4 patches"):
        run_embeddings(extractor, patches, masks, rows, tmp_path / "out", batch_size=4)
    assert not (tmp_path / "out" / "embeddings.parquet").exists()
    # A registry entry edited to another dimension than the network's.
    entry = registry.get("late", models_home).model_copy(update={"embedding_dim": 7})
    with pytest.raises(RadassetsError, match=r"model 'late' returned 6 values per patch; the registry says "
                                             r"embedding_dim 7"):
        run_embeddings(load_extractor(entry, CPU, weights_dir=weights),
                       patches, masks, rows, tmp_path / "out", batch_size=2)


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_a_failed_add_leaves_nothing_and_a_corrected_file_registers(models_home, tmp_path, capsys, kind):
    weights = home_weights(models_home)
    suffix = {"torchscript": "pt", "onnx": "onnx"}[kind]
    path = tmp_path / f"my_net.{suffix}"
    path.write_bytes(b"not a network")
    with pytest.raises(SystemExit):
        add("my_net", path, kind, tmp_path)
    assert "radassets: error: model 'my_net'" in capsys.readouterr().err
    cache = home_weights(models_home) / "my_net"
    assert not cache.exists()  # nothing cached, nothing staged
    good = export(TinyEncoder(), kind, tmp_path)
    path.write_bytes(good.read_bytes())
    add("my_net", path, kind, tmp_path)
    assert f"registered my_net ({kind}, 6-d)" in capsys.readouterr().out
    assert [p.name for p in cache.iterdir()] == [path.name]  # the verified file, and nothing staged beside it
    patches, masks, rows = _patches(2)
    extractor = load_extractor(registry.get("my_net", models_home), CPU, weights_dir=weights, download=False)
    report = run_embeddings(extractor, patches, masks, rows, tmp_path / "out")
    assert report.embedded == 2


class NanForFirstInBatch(torch.nn.Module):
    """NaN for the first patch of every batch: which patch fails depends on how the patches are batched."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.mean(dim=(1, 2, 3, 4))[:, None].repeat(1, 3)
        out[0] = float("nan")
        return out


def test_a_patch_whose_failure_depends_on_its_batch_is_refused(models_home, tmp_path, capsys):
    torch.jit.script(NanForFirstInBatch()).save(str(tmp_path / "nan.pt"))
    with pytest.raises(SystemExit):
        add("nan_first", tmp_path / "nan.pt", "torchscript", tmp_path)
    err = capsys.readouterr().err
    assert "depends on the other patches in its batch" in err and "NaN or infinite values in one and not" in err, err
