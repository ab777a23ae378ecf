"""The radiomics baseline: IBSI-compliant features computed by pyradiomics from each patch and its mask.

The patch is already 1 mm isotropic, so no resampling happens here; the settings (bin width,
enabled features) come from the registry entry and are part of the preprocessing hash. Features
are returned in sorted name order, so the vector layout is fixed for a given pyradiomics version
and settings. A seed without a mask (a published point) has no radiomics: its vector is NaN,
which the runner records as a failure.

pyradiomics 3.0.1 is pinned because 3.1.0 does not build; it is installed without build
isolation (its setup imports numpy), see the Makefile.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk

from radassets.models.registry import ModelEntry


class RadiomicsExtractor:
    def __init__(self, entry: ModelEntry):
        from radiomics import featureextractor

        logging.getLogger("radiomics").setLevel(logging.ERROR)  # pyradiomics logs every feature class at INFO
        settings = dict(entry.settings)
        features = settings.pop("features", None)
        self.extractor = featureextractor.RadiomicsFeatureExtractor(**settings)
        self.extractor.disableAllImageTypes()
        self.extractor.enableImageTypeByName("Original")
        if features:
            self.extractor.disableAllFeatures()
            for name in features:
                self.extractor.enableFeatureClassByName(name)
        self.entry = entry
        self.weights_sha256 = None
        self.dim = int(entry.embedding_dim)
        self.names: list[str] | None = None

    def _features(self, patch: np.ndarray, mask: np.ndarray) -> np.ndarray:
        image = sitk.GetImageFromArray(patch.astype(np.float32))
        label = sitk.GetImageFromArray(mask.astype(np.uint8))
        label.CopyInformation(image)
        result = self.extractor.execute(image, label, label=1)
        names = sorted(k for k in result if k.startswith("original_"))
        if self.names is None:
            self.names = names
            if len(names) != self.dim:
                raise ValueError(f"radiomics settings give {len(names)} features; the registry says {self.dim}")
        return np.array([float(result[k]) for k in self.names], dtype=np.float32)

    def embed(self, patches: np.ndarray, masks: np.ndarray, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        out = np.full((len(patches), self.dim), np.nan, dtype=np.float32)
        for i, (patch, mask) in enumerate(zip(patches, masks)):
            if mask.sum() >= 2:  # pyradiomics needs at least two voxels in the label
                out[i] = self._features(patch, mask)
        return out
