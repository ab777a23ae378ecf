"""From patches to embeddings: each model's crop, axes and intensity against known answers; deterministic
bytes; NaN vectors recorded; radiomics, tables, and a user's TorchScript or ONNX file registered with
`radassets models add`."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from radassets.cli import main as cli_main
from radassets.models import registry
from radassets.models.embed import read_embeddings, run_embeddings
from radassets.models.extractors import load_extractor
from radassets_tests.models.conftest import home_weights
from radassets.models.preprocessing import PreprocessingError, model_input
from radassets.models.registry import Intensity, Preprocessing
from radassets.models.table import TableError, TableExtractor
from radassets.storage import sha256_file
from radassets_tests.standins import TinyEncoder

SIZE = 64
CPU = torch.device("cpu")


def coordinate_patch(axis: str) -> np.ndarray:
    """A [S, P, L] patch whose HU is the LPS coordinate (mm from the seed) along ``axis`` (x, y or z)."""
    c = np.arange(SIZE) - (SIZE - 1) / 2
    s, p, l = np.meshgrid(c, c, c, indexing="ij")
    return {"x": l, "y": p, "z": s}[axis].astype(np.float32)


def raw(p: Preprocessing) -> Preprocessing:
    return p.model_copy(update={"intensity": Intensity(kind="none")})


def test_fmcib_input_is_the_central_crop_in_spl_order_scaled_without_clipping():
    entry = registry.get("fmcib")
    patch = np.random.default_rng(0).integers(-1024, 3000, size=(SIZE,) * 3).astype(np.int16)
    x = model_input(patch, entry.preprocessing)
    assert x.shape == (1, 50, 50, 50) and x.dtype == np.float32
    assert np.allclose(x[0], (patch[7:57, 7:57, 7:57] + 1024.0) / 3072.0)  # (HU + 1024) / 3072
    assert x.max() > 1.0  # no clipping, as fmcib's NormalizeIntensityd


@pytest.mark.parametrize("name", ["fmcib", "ct_fm", "vista3d", "models_genesis", "suprem", "untrained_cnn"])
def test_every_model_sees_the_anatomy_in_its_own_axes(name):
    """With HU = the x, y or z coordinate, each tensor axis must run along the registry's direction at the
    registry's spacing, centred on the seed (linear interpolation of a linear field is exact)."""
    p = registry.get(name).preprocessing
    sign = {"L": ("x", 1), "R": ("x", -1), "P": ("y", 1), "A": ("y", -1), "S": ("z", 1), "I": ("z", -1)}
    for axis_index, letter in enumerate(p.axes):
        coordinate, direction = sign[letter]
        x = model_input(coordinate_patch(coordinate), raw(p))[0]
        n = p.input_size[axis_index]
        expected = direction * (np.arange(n) - (n - 1) / 2) * p.spacing_mm
        profile = np.moveaxis(x, axis_index, 0).reshape(n, -1)
        assert np.allclose(profile, expected[:, None], atol=1e-3), (name, letter)


def test_a_model_wider_than_the_patch_is_an_error_naming_the_patch_size():
    p = Preprocessing(spacing_mm=1.5, input_size=(96, 96, 96), axes="RAS",
                      intensity=Intensity(kind="scale_range", a_min=-175, a_max=250, clip=True))
    with pytest.raises(PreprocessingError, match=r"144 mm field of view.*patches are 64 mm.*patch_size to at least 144"):
        model_input(np.zeros((SIZE,) * 3, np.int16), p)


def _patches(n: int = 6, seed: int = 0):
    """Synthetic patches: a sphere of soft tissue in lung, of varying size, with its mask."""
    rng = np.random.default_rng(seed)
    c = np.arange(SIZE) - (SIZE - 1) / 2
    r = np.sqrt(sum(g**2 for g in np.meshgrid(c, c, c, indexing="ij")))
    patches, masks, rows = [], [], []
    for i in range(n):
        radius = 4 + 2 * i
        mask = (r <= radius).astype(np.uint8)
        hu = np.where(mask, 40, -850) + rng.normal(0, 20, r.shape)
        patches.append(np.rint(hu).astype(np.int16))
        masks.append(mask)
        rows.append({"index": i, "seed_id": f"seed{i}", "PatientID": f"P{i}", "SeriesInstanceUID": f"1.2.{i}",
                     "crdc_series_uuid": f"uuid{i}", "segment_label": "GTV-1"})
    return np.stack(patches), np.stack(masks), rows


def test_embeddings_are_deterministic_bytes_with_model_identity(tmp_path):
    patches, masks, rows = _patches()
    extractor = load_extractor(registry.get("untrained_cnn"), CPU)
    first = run_embeddings(extractor, patches, masks, rows, tmp_path / "a", batch_size=4)
    again = run_embeddings(load_extractor(registry.get("untrained_cnn"), CPU), patches, masks, rows, tmp_path / "b",
                           batch_size=4)
    assert sha256_file(tmp_path / "a" / "embeddings.parquet") == sha256_file(tmp_path / "b" / "embeddings.parquet")
    assert first.content_hash == again.content_hash
    table = pq.read_table(tmp_path / "a" / "embeddings.parquet").to_pylist()
    assert [r["seed_id"] for r in table] == [r["seed_id"] for r in rows]
    assert {r["model"] for r in table} == {"untrained_cnn"}
    assert {r["preprocessing_hash"] for r in table} == {registry.get("untrained_cnn").preprocessing_hash}
    ok_rows, matrix = read_embeddings(tmp_path / "a")
    assert matrix.shape == (6, 512) and matrix.dtype == np.float32 and len(ok_rows) == 6
    # A different batch size changes only float rounding, not the embedding.
    other = run_embeddings(extractor, patches, masks, rows, tmp_path / "c", batch_size=1)
    assert np.allclose(read_embeddings(tmp_path / "c")[1], matrix, atol=1e-5) and other.failed == 0


class NanForLargeLesions(torch.nn.Module):
    """Returns NaN for patches whose mean intensity is high (large lesions): a broken model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3, 4))
        bad = mean > 0.07  # spheres of radius 12 and 14 mm in lung, on a 48³ crop
        return torch.where(bad[:, None], torch.full((x.shape[0], 3), float("nan")), mean[:, None].repeat(1, 3))


def _spec(tmp_path, size=(48, 48, 48), axes="SPL"):
    path = tmp_path / "pre.yaml"
    path.write_text(yaml.safe_dump({"spacing_mm": 1.0, "input_size": list(size), "axes": axes,
                                    "intensity": {"kind": "scale_range", "a_min": -1024, "a_max": 2048}}))
    return path


def test_nan_vectors_are_recorded_failures(models_home, tmp_path, capsys):
    weights = home_weights(models_home)
    scripted = torch.jit.script(NanForLargeLesions())
    scripted.save(str(tmp_path / "nan.pt"))
    cli_main(["models", "add", "nan_model", "--torchscript", str(tmp_path / "nan.pt"), "--preprocessing",
              str(_spec(tmp_path))])
    patches, masks, rows = _patches()
    report = run_embeddings(load_extractor(registry.get("nan_model", models_home), CPU, weights_dir=weights),
                            patches, masks, rows, tmp_path / "out")
    failed = [f.item for f in report.failures]
    assert failed and len(failed) < len(rows)  # the large lesions only
    assert all("3 NaN and 0 infinite values" in f.reason for f in report.failures)
    assert len(read_embeddings(tmp_path / "out")[0]) == len(rows) - len(failed)


def test_user_torchscript_and_onnx_files_register_and_agree(models_home, tmp_path, capsys):
    weights = home_weights(models_home)
    net = TinyEncoder().eval()
    example = torch.zeros(1, 1, 40, 40, 40)
    torch.jit.trace(net, example).save(str(tmp_path / "tiny.pt"))
    with warnings.catch_warnings():  # the TorchScript-based exporter needs no onnxscript; torch marks it legacy
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (example,), str(tmp_path / "tiny.onnx"), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    spec = _spec(tmp_path, size=(40, 40, 40))
    cli_main(["models", "add", "tiny_ts", "--torchscript", str(tmp_path / "tiny.pt"), "--preprocessing", str(spec)])
    cli_main(["models", "add", "tiny_onnx", "--onnx", str(tmp_path / "tiny.onnx"), "--preprocessing", str(spec)])
    out = capsys.readouterr().out
    assert "registered tiny_ts (torchscript, 6-d)" in out and "registered tiny_onnx (onnx, 6-d)" in out
    entry = registry.get("tiny_ts", models_home)
    assert entry.weights.sha256 == sha256_file(tmp_path / "tiny.pt") and entry.weights.uri.startswith("file://")
    patches, masks, rows = _patches()
    ts = run_embeddings(load_extractor(entry, CPU, weights_dir=weights), patches, masks, rows, tmp_path / "ts")
    onnx = run_embeddings(load_extractor(registry.get("tiny_onnx", models_home), CPU, weights_dir=weights),
                          patches, masks, rows, tmp_path / "onnx")
    assert ts.weights_sha256 == entry.weights.sha256
    assert onnx.weights_sha256 == sha256_file(tmp_path / "tiny.onnx")
    assert np.allclose(read_embeddings(tmp_path / "ts")[1], read_embeddings(tmp_path / "onnx")[1], atol=1e-5)
    # The vectors are the network's on the registry's crop: checked directly for the first patch.
    with torch.inference_mode():
        direct = net(torch.from_numpy(model_input(patches[0], entry.preprocessing)[None])).numpy()
    assert np.allclose(read_embeddings(tmp_path / "ts")[1][0], direct[0], atol=1e-6)
    # A changed file no longer matches its pinned sha256.
    cached = next((tmp_path / "home" / "weights" / "tiny_ts").glob("*.pt"))
    cached.write_bytes(cached.read_bytes() + b"\0")
    with pytest.raises(Exception, match="refusing to load it"):
        load_extractor(entry, CPU, weights_dir=weights, download=False)


def test_models_add_refuses_bad_input(models_home, tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"not torchscript")
    spec = _spec(tmp_path)
    for argv, message in [
        (["models", "add", "fmcib", "--torchscript", str(tmp_path / "bad.pt"), "--preprocessing", str(spec)],
         "already registered"),
        (["models", "add", "Bad-Name", "--torchscript", str(tmp_path / "bad.pt"), "--preprocessing", str(spec)],
         "model name 'Bad-Name' is not valid"),
        (["models", "add", "nospec", "--torchscript", str(tmp_path / "bad.pt")], "needs --preprocessing"),
        (["models", "add", "broken", "--torchscript", str(tmp_path / "bad.pt"), "--preprocessing", str(spec)],
         "is not a TorchScript file"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            cli_main(argv)
        assert exit_.value.code == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not (models_home / "broken.yaml").exists() and not (models_home / "nospec.yaml").exists()


def test_radiomics_features_of_a_sphere(tmp_path):
    patches, masks, rows = _patches(3)
    masks = masks.copy()
    masks[2] = 0  # a published seed without a mask: no radiomics
    extractor = load_extractor(registry.get("radiomics"), CPU)
    report = run_embeddings(extractor, patches, masks, rows, tmp_path / "r")
    assert report.embedded == 2 and report.failures[0].item == "seed2"
    names = extractor.names
    assert len(names) == 107
    _, matrix = read_embeddings(tmp_path / "r")
    voxels = matrix[:, names.index("original_shape_VoxelVolume")]
    assert voxels.tolist() == [float(masks[0].sum()), float(masks[1].sum())]  # 1 mm³ voxels
    mean = matrix[:, names.index("original_firstorder_Mean")]
    assert np.allclose(mean, 40, atol=3)  # the soft-tissue sphere, not the lung around it


def test_precomputed_table_as_a_model(models_home, tmp_path, capsys):
    weights = home_weights(models_home)
    table = pd.DataFrame({"ID": ["P0", "P1", "P2", "P4"], "f1": [1.0, 2, 3, 5], "f2": [0.5, 0.5, 0.5, 0.5]})
    table.to_csv(tmp_path / "emb.csv", index=False)
    cli_main(["models", "add", "published", "--table", str(tmp_path / "emb.csv"), "--id-column", "ID"])
    assert "registered published (table, 2-d)" in capsys.readouterr().out
    patches, masks, rows = _patches()
    report = run_embeddings(load_extractor(registry.get("published", models_home), CPU, weights_dir=weights),
                            patches, masks, rows, tmp_path / "t")
    assert sorted(f.patient for f in report.failures) == ["P3", "P5"]
    ok_rows, matrix = read_embeddings(tmp_path / "t")
    assert [r["PatientID"] for r in ok_rows] == ["P0", "P1", "P2", "P4"] and matrix[:, 0].tolist() == [1, 2, 3, 5]
    table.loc[4] = ["P1", 9.0, 9.0]
    table.to_csv(tmp_path / "dup.csv", index=False)
    entry = registry.get("published", models_home)
    dup = entry.model_copy(update={"table": entry.table.model_copy(update={"path": str(tmp_path / "dup.csv")})})
    with pytest.raises(TableError, match="duplicated id"):
        TableExtractor(dup)
