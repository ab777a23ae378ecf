"""The CUDA path: embeddings on the GPU match the CPU's within float tolerance (runs where CUDA is present)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radassets.models import registry
from radassets.models.embed import choose_device, read_embeddings, run_embeddings
from radassets.models.extractors import load_extractor
from radassets_tests.models.test_embed import _patches

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; this machine has none")]


@pytest.mark.parametrize("name", ["untrained_cnn"])
def test_cuda_embeddings_match_cpu(name, tmp_path):
    patches, masks, rows = _patches()
    out = {}
    for device in ("cpu", "cuda"):
        extractor = load_extractor(registry.get(name), torch.device(device))
        report = run_embeddings(extractor, patches, masks, rows, tmp_path / device, batch_size=4, device=device)
        assert report.failed == 0
        out[device] = read_embeddings(tmp_path / device)[1]
    assert np.allclose(out["cuda"], out["cpu"], rtol=1e-3, atol=1e-4), np.abs(out["cuda"] - out["cpu"]).max()
    assert choose_device("auto").type == "cuda"
