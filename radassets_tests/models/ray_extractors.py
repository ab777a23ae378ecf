"""Stand-in extractor recipes for the Ray embeddings tests. Module-level, so that Ray actors import them by name."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from radassets.models.embed_ray import RegistryExtractor


class DiesOnFirstBatch:
    """A registry model whose process is killed (as by the OOM killer or ``kill -9``) on the first batch of its
    first try; the marker file says a try has happened. Otherwise the model itself."""

    def __init__(self, extractor, marker: Path):
        self.extractor = extractor
        self.marker = marker
        self.entry, self.weights_sha256, self.dim = extractor.entry, extractor.weights_sha256, extractor.dim

    def embed(self, patches, masks, rows):
        if not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.extractor.embed(patches, masks, rows)


@dataclass(frozen=True)
class DiesOnce:
    """The recipe of ``DiesOnFirstBatch`` around a registry model's."""

    model: RegistryExtractor
    marker: Path

    def __call__(self, device):
        return DiesOnFirstBatch(self.model(device), self.marker)


class WrongShape:
    """A model whose every batch is one value short per patch: its own error, not the machine's."""

    def __init__(self, device):
        from radassets.models import registry

        self.entry, self.weights_sha256, self.dim = registry.get("untrained_cnn"), None, 512

    def embed(self, patches, masks, rows):
        import numpy as np

        return np.zeros((len(patches), self.dim - 1), np.float32)
