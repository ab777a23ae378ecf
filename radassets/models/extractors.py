"""Turning a registry entry into something that embeds patches: built-in networks, controls, user files.

- ``torch``: the family's architecture (``radassets.models.families``) with its published weights,
  loaded strictly after the sha256 check;
- ``untrained``: the same kind of architecture, initialised from a fixed seed: a control that
  says how much of a result the architecture and preprocessing give without any training;
- ``torchscript``: a user's exported network (``torch.jit.load``), verified like published weights;
- ``onnx``: a user's ONNX file run by ONNX Runtime on the CPU;
- ``radiomics`` and ``table`` live in their own modules.

Every network gets its input from ``preprocessing.model_input`` (the entry's crop, axes and
intensity) and must return one vector per patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radassets.models import families
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
        self.dim = int(entry.embedding_dim)

    def embed(self, patches: np.ndarray, masks: np.ndarray, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        x = torch.from_numpy(np.stack([model_input(p, self.entry.preprocessing) for p in patches])).to(self.device)
        with torch.inference_mode():
            y = self.module(x)
        return y.reshape(len(patches), -1).float().cpu().numpy()


class OnnxExtractor:
    def __init__(self, entry: ModelEntry, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.entry = entry
        self.weights_sha256 = sha256_file(path)
        self.dim = int(entry.embedding_dim)

    def embed(self, patches: np.ndarray, masks: np.ndarray, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        x = np.stack([model_input(p, self.entry.preprocessing) for p in patches])
        [y] = self.session.run(None, {self.input_name: x})
        return np.asarray(y, dtype=np.float32).reshape(len(patches), -1)


def load_extractor(entry: ModelEntry, device: torch.device, download: bool = True):
    """The extractor of ``entry``, ready to embed (weights verified and loaded)."""
    if entry.kind == "torch":
        module = families.build(entry.family)
        return TorchExtractor(entry, module, load_published(entry, module, download), device)
    if entry.kind == "untrained":
        torch.manual_seed(entry.seed)
        module = families.build(entry.family)
        return TorchExtractor(entry, module, None, device)
    if entry.kind == "torchscript":
        path = resolve_weights(entry, download)
        try:
            module = torch.jit.load(str(path), map_location=device)
        except RuntimeError as e:
            raise WeightsError(f"model {entry.name!r}: {path} is not a TorchScript file: {str(e).splitlines()[0]}") from None
        return TorchExtractor(entry, module, entry.weights.sha256, device)
    if entry.kind == "onnx":
        return OnnxExtractor(entry, resolve_weights(entry, download))
    if entry.kind == "radiomics":
        from radassets.models.radiomics import RadiomicsExtractor

        return RadiomicsExtractor(entry)
    if entry.kind == "table":
        from radassets.models.table import TableExtractor

        return TableExtractor(entry)
    raise ValueError(f"unknown model kind {entry.kind!r}")
