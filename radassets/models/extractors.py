"""Turning a registry entry into something that embeds patches: built-in networks, controls, user files.

- ``torch``: the family's architecture (``radassets.models.families``) with its published weights,
  loaded strictly after the sha256 check;
- ``untrained``: the same kind of architecture, initialised from a fixed seed: a control that
  says how much of a result the architecture and preprocessing give without any training;
- ``torchscript``: a user's exported network (``torch.jit.load``), verified like published weights;
- ``onnx``: a user's ONNX file run by ONNX Runtime on the CPU;
- ``radiomics`` and ``table`` live in their own modules.

Every network gets its input from ``preprocessing.model_input`` (the entry's crop, axes and
intensity) and must return one vector per patch: its output is checked, batch by batch, by
``embed.output_vectors`` (exact shape, registered length), never reshaped to fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radassets.models import families
from radassets.models.embed import output_vectors
from radassets.models.preprocessing import model_input
from radassets.models.registry import ModelEntry
from radassets.models.weights import WeightsError, load_published, resolve_weights
from radassets.storage import sha256_file


class TorchExtractor:
    def __init__(self, entry: ModelEntry, module: torch.nn.Module, weights_sha256: str | None, device: torch.device):
        self.entry = entry
        self.module = module.to(device).eval()
        self.weights_sha256 = weights_sha256
        self.device = device
        self.dim = entry.embedding_dim  # None only while `models add` learns it

    def embed(self, patches: np.ndarray, masks: np.ndarray, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        x = torch.from_numpy(np.stack([model_input(p, self.entry.preprocessing) for p in patches])).to(self.device)
        with torch.inference_mode():
            y = self.module(x)
        return output_vectors(y, len(patches), self.entry.name, self.dim)


class OnnxExtractor:
    def __init__(self, entry: ModelEntry, path: Path, shown: Path | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own classes (InvalidProtobuf, Fail...)
            raise WeightsError(f"model {entry.name!r}: {shown or path} is not an ONNX model ONNX Runtime can run: "
                               f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.entry = entry
        self.weights_sha256 = sha256_file(path)
        self.dim = entry.embedding_dim  # None only while `models add` learns it

    def embed(self, patches: np.ndarray, masks: np.ndarray, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        x = np.stack([model_input(p, self.entry.preprocessing) for p in patches])
        outputs = self.session.run(None, {self.input_name: x})
        return output_vectors(outputs[0] if len(outputs) == 1 else outputs, len(patches), self.entry.name, self.dim)


def load_network_file(entry: ModelEntry, path: Path, device: torch.device,
                      shown: Path | None = None) -> TorchExtractor | OnnxExtractor:
    """A user's TorchScript or ONNX network from ``path`` (verified by the caller); errors name ``shown``
    (the user's own file, while ``path`` is a staged copy of it) or ``path``."""
    if entry.kind == "onnx":
        return OnnxExtractor(entry, path, shown)
    try:
        module = torch.jit.load(str(path), map_location=device)
    except RuntimeError as e:
        raise WeightsError(f"model {entry.name!r}: {shown or path} is not a TorchScript file: "
                           f"{str(e).splitlines()[0]}") from None
    return TorchExtractor(entry, module, entry.weights.sha256, device)


def load_extractor(entry: ModelEntry, device: torch.device, download: bool = True, *,
                   weights_dir: Path | None = None, data_root: Path | None = None):
    """The extractor of ``entry``, ready to embed (weights verified and loaded from the cache ``weights_dir``;
    a table's relative path is relative to ``data_root``, the data folder, by default the shipped one)."""
    if entry.kind in ("torch", "torchscript", "onnx") and weights_dir is None:
        raise WeightsError(f"model {entry.name!r} needs its weights, and no weights folder was given")
    if entry.kind == "torch":
        module = families.build(entry.family)
        return TorchExtractor(entry, module, load_published(entry, module, weights_dir, download), device)
    if entry.kind == "untrained":
        torch.manual_seed(entry.seed)
        module = families.build(entry.family)
        return TorchExtractor(entry, module, None, device)
    if entry.kind in ("torchscript", "onnx"):
        return load_network_file(entry, resolve_weights(entry, weights_dir, download), device)
    if entry.kind == "radiomics":
        from radassets.models.radiomics import RadiomicsExtractor

        return RadiomicsExtractor(entry)
    if entry.kind == "table":
        from radassets.models.table import TableExtractor

        return TableExtractor(entry, data_root)
    raise ValueError(f"unknown model kind {entry.kind!r}")
