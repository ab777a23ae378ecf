"""Registering a user's model without code: a TorchScript or ONNX file with a preprocessing spec in
YAML, or a table of precomputed embeddings.

A network file is pinned by its sha256 and copied into the weights cache under a temporary name, then
checked (``check_network``) on two distinct synthetic patches, alone and as a batch of two in both
orders: it must run on the input its preprocessing spec gives and return one vector per patch of at
most ``MAX_EMBEDDING_DIM`` values; a patch's vector (and whether it is NaN) must not depend on the other
patch in its batch, and the two patches' vectors must differ.
Only when every check has passed is the copy renamed to its place in the cache and the entry written
to ``data/models/NAME.yaml``, from where the ``model_registry_sensor`` adds its partition; a refused
file leaves nothing behind, so a corrected file can be added under the same name.

Tolerance: the same patch embedded alone or in a batch may differ by float rounding (batched
convolutions sum in another order, or pick another algorithm), which in float32 is around 1e-6 of the
vector's norm; a vector that depends on its batch (statistics over the batch) differs by a large part
of its norm. ``BATCH_TOLERANCE`` (1e-4 of the norm) lies between the two. Two patches whose vectors are
closer than that cannot be told apart from rounding either: the model is refused as constant (every
patient would get the same embedding, and every downstream result would be noise).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from radassets.errors import RadassetsError
from radassets.models import registry
from radassets.models.embed import ModelOutputError
from radassets.datasets import parse_yaml_text
from radassets.models.registry import ModelEntry, RegistryError, entry_from
from radassets.models.weights import WeightsError, weights_path
from radassets.names import check_name
from radassets.storage import atomic_write_text, sha256_file

BATCH_TOLERANCE = 1e-4  # of a vector's norm: see the module docstring

PREPROCESSING_EXAMPLE = """spacing_mm: 1.0
input_size: [50, 50, 50]
axes: SPL            # anatomical direction of increasing index on each tensor axis (SPL, LPS, RAS, SAR)
intensity: {kind: scale_range, a_min: -1024, a_max: 2048, b_min: 0, b_max: 1, clip: false}"""


def _preprocessing(spec: Path) -> dict[str, Any]:
    try:
        data = Path(spec).read_bytes()
    except OSError as e:
        raise RegistryError(f"{spec}: cannot read the preprocessing spec: {e.strerror}") from None
    raw = parse_yaml_text(data, str(spec), "preprocessing spec", RegistryError)
    if not isinstance(raw, dict):
        raise RegistryError(f"{spec}: the preprocessing spec must be a mapping like:\n{PREPROCESSING_EXAMPLE}")
    return raw


def probe_patches(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Two distinct canonical patches (int16 HU, [S, P, L]): a soft-tissue nodule in noisy lung, 5 and 8 mm in
    radius, with different noise. Small lesions, so a network sees mostly the lung it will see in practice."""
    c = np.arange(size) - (size - 1) / 2
    r = np.sqrt(sum(g ** 2 for g in np.meshgrid(c, c, c, indexing="ij")))
    patches = []
    for seed, radius in ((1, 5.0), (2, 8.0)):
        noise = np.random.default_rng(seed).normal(0.0, 20.0, r.shape)
        patches.append(np.rint(np.where(r <= radius, 40.0, -850.0) + noise).astype(np.int16))
    return patches[0], patches[1]


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    """|a - b| over the larger norm (0 when both are zero)."""
    scale = max(float(np.linalg.norm(a)), float(np.linalg.norm(b)))
    return float(np.linalg.norm(a - b)) / scale if scale > 0 else 0.0


def _network_failure(e: Exception) -> str:
    """One line saying why a network failed. TorchScript's message is its interpreter's traceback, whose last line
    holds the cause; ONNX Runtime's is a few short lines."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if "TorchScript interpreter" in str(e):
        return lines[-1][:300]
    return f"{type(e).__name__}: {' '.join(lines)[:300]}"


def check_network(entry: ModelEntry, path: Path, shown: Path | None = None) -> int:
    """Run the network in ``path`` (the user's file ``shown``, staged) on two distinct patches, alone and batched
    in both orders; return its embedding dimension, or raise ``ModelOutputError`` saying what is wrong."""
    from radassets.models.extractors import load_network_file

    # The dimension is what this run finds out: no expected length yet.
    extractor = load_network_file(entry.model_copy(update={"embedding_dim": None}), path, torch.device("cpu"), shown)
    size = max(64, int(np.ceil(entry.preprocessing.field_of_view_mm())))
    a, b = probe_patches(size)

    def run(*patches: np.ndarray) -> np.ndarray:
        batch = np.stack(patches)
        try:
            vectors = extractor.embed(batch, np.zeros(batch.shape, np.uint8), [{}] * len(patches))
        except RadassetsError:
            raise
        except Exception as e:  # noqa: BLE001 - the network itself failed: most often a wrong input shape
            shape = (len(patches), 1, *entry.preprocessing.input_size)
            raise ModelOutputError(f"model {entry.name!r} fails on an input of shape {shape} (from the preprocessing "
                                   f"spec): {_network_failure(e)}") from None
        extractor.dim = vectors.shape[1]  # every later run must give the same length
        return vectors

    alone_a, alone_b = run(a)[0], run(b)[0]
    a_then_b, b_then_a = run(a, b), run(b, a)
    pairs = [(alone_a, a_then_b[0]), (alone_a, b_then_a[1]), (alone_b, a_then_b[1]), (alone_b, b_then_a[0])]
    depends = f"model {entry.name!r}: a patch's vector depends on the other patches in its batch: embedded alone and " \
              f"in a batch of two, it"
    advice = ("Export the network in eval mode (batch norm must use its running statistics) and without operations "
              "across the batch axis")
    # A NaN is no silent error (the runner records that seed as failed), but whether a patch fails must not depend
    # on its batch either.
    if any(np.isfinite(alone).all() != np.isfinite(batched).all() for alone, batched in pairs):
        raise ModelOutputError(f"{depends} has NaN or infinite values in one and not in the other. {advice}")
    finite = [(alone, batched) for alone, batched in pairs if np.isfinite(alone).all()]
    if not finite:
        raise ModelOutputError(f"model {entry.name!r} returns NaN or infinite values for both test patches (small "
                               f"soft-tissue nodules in lung); it cannot be checked, nor used")
    worst = max(_relative(alone, batched) for alone, batched in finite)
    if worst > BATCH_TOLERANCE:
        raise ModelOutputError(f"{depends} differs by {worst:.2g} of its norm (at most {BATCH_TOLERANCE:g} allowed, "
                               f"for float rounding). {advice}")
    if np.isfinite(alone_a).all() and np.isfinite(alone_b).all() and _relative(alone_a, alone_b) <= BATCH_TOLERANCE:
        raise ModelOutputError(
            f"model {entry.name!r} returns the same vector for two different patches (nodules of 5 and 8 mm "
            f"radius in lung): every patient would get the same embedding. Check the network's weights and the "
            f"intensity window in the preprocessing spec")
    return int(extractor.dim)


def _staged_copy(source: Path, dest: Path) -> Path:
    """A copy of ``source`` beside ``dest``, under a temporary name (renamed onto ``dest`` once checked)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".staged", dir=dest.parent)
    os.close(fd)
    shutil.copyfile(source, tmp)
    return Path(tmp)


def add_model(name: str, *, torchscript: Path | None = None, onnx: Path | None = None, table: Path | None = None,
              preprocessing: Path | None = None, id_column: str | None = None, id_kind: str = "PatientID",
              title: str | None = None, licence: str = "as stated by the model's authors",
              registry_dir: Path | None = None, weights_dir: Path) -> tuple[ModelEntry, Path]:
    """Validate, pin and register a model in ``registry_dir`` (its network file cached in ``weights_dir``);
    returns the entry and its definition file."""
    check_name("model", name)  # before the name becomes a path: no "../x", no trailing newline
    path = registry.models_dir(registry_dir) / f"{name}.yaml"
    if path.exists():
        raise RegistryError(f"a model called {name!r} is already registered ({path}); choose another name")
    if sum(x is not None for x in (torchscript, onnx, table)) != 1:
        raise RegistryError("give exactly one of --torchscript, --onnx or --table")
    source = Path(torchscript or onnx or table).expanduser().resolve()
    if not source.is_file():
        raise RegistryError(f"no such file: {source}")
    raw: dict[str, Any] = {"name": name, "title": title or f"{name} (user model from {source.name})", "licence": licence}
    if table is not None:
        if not id_column:
            raise RegistryError("a table of embeddings needs --id-column (and --id-kind if not PatientID)")
        raw.update(kind="table", table={"path": str(source), "id_column": id_column, "id_kind": id_kind})
    else:
        if preprocessing is None:
            raise RegistryError(f"a network needs --preprocessing SPEC.yaml, for example:\n{PREPROCESSING_EXAMPLE}")
        raw.update(kind="torchscript" if torchscript else "onnx", embedding_dim=1,
                   preprocessing=_preprocessing(preprocessing),
                   weights={"uri": source.as_uri(), "file": source.name, "sha256": sha256_file(source)})
    entry = entry_from(raw, f"model {name!r}")  # one line naming the fields
    if entry.kind in ("torchscript", "onnx"):
        cached = weights_path(entry, weights_dir)
        staged = _staged_copy(source, cached)
        try:
            if sha256_file(staged) != entry.weights.sha256:
                raise WeightsError(f"model {name!r}: {source} changed while it was being copied; add it again")
            entry = entry.model_copy(update={"embedding_dim": check_network(entry, staged, source)})
            os.replace(staged, cached)  # every check passed: into the cache, replacing whatever was there
        finally:
            if staged.exists():
                staged.unlink()
                if not any(cached.parent.iterdir()):
                    cached.parent.rmdir()
    else:
        from radassets.models.table import TableExtractor

        entry = entry.model_copy(update={"embedding_dim": TableExtractor(entry).dim})
    text = yaml.safe_dump(entry.model_dump(mode="json", exclude_none=True, exclude={"name"}), sort_keys=False)
    atomic_write_text(path, f"# Registered by `radassets models add {name}`.\n" + text)
    registry.load_entry(path)  # what was written reads back
    return entry, path
