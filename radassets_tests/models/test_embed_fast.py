"""The CPU fast path of torch extractors (conv-BatchNorm folded at load, channels-last weights and input) against
the plain eager path it replaced: the same vectors to rounding, the same bytes run to run."""

from __future__ import annotations

import numpy as np
import torch

from radassets.models import families, registry
from radassets.models.extractors import PrepackedConv3d, TorchExtractor
from radassets_tests.models.test_embed import _patches

CPU = torch.device("cpu")


def _fmcib(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return families.build("fmcib_resnet50")


def test_fast_path_matches_eager_within_1e_5():
    """Random-weight FMCIB architecture on 2 patches: the fast path's vectors are the eager path's within 1e-5
    (max absolute difference), and its module really is the folded, channels-last one."""
    entry = registry.get("fmcib")
    patches, masks, rows = _patches(2)
    module = _fmcib()
    eager = TorchExtractor(entry, module, None, CPU, fast=False)
    assert not eager.channels_last
    expected = eager.embed(patches, masks, rows)
    fast = TorchExtractor(entry, module, None, CPU)  # folds `module` in place: the eager vectors are taken first
    convs = [m for m in fast.module.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in convs)
    got = fast.embed(patches, masks, rows)  # the first batch: plain channels-last convolutions, then prepacked
    assert got.shape == expected.shape == (2, 4096) and got.dtype == np.float32
    assert np.abs(expected).max() > 0.1  # a real signal, not vectors of zeros that would match anything
    assert np.abs(got - expected).max() <= 1e-5
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fast.module.modules())
    # deterministic: the same bytes again, now with the convolutions prepacked at the first batch (a batch of
    # another size may round differently, as eager's does: run_embeddings fixes each patch's batch)
    assert fast.embed(patches, masks, rows).tobytes() == got.tobytes()
    assert not any(isinstance(m, torch.nn.Conv3d) for m in fast.module.modules())
    assert sum(isinstance(m, PrepackedConv3d) for m in fast.module.modules()) == len(convs)
    # a smaller batch than the one packed for still runs, to rounding
    assert np.abs(fast.embed(patches[:1], masks[:1], rows[:1]) - expected[:1]).max() <= 1e-5


def test_fast_path_leaves_torchscript_and_untraceable_networks_as_they_are():
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2)).eval())
    extractor = TorchExtractor(registry.get("fmcib"), scripted, None, CPU)
    assert extractor.module is scripted and not extractor.channels_last

    class DataDependent(torch.nn.Module):  # control flow on a tensor's value: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2)

        def forward(self, x):
            y = self.bn(self.conv(x))
            return y.mean((2, 3, 4)) if y.sum() > 0 else -y.mean((2, 3, 4))

    torch.manual_seed(0)
    net = DataDependent().eval()
    x = np.random.default_rng(0).integers(-1024, 400, size=(2, 64, 64, 64)).astype(np.int16)
    entry = registry.get("fmcib").model_copy(update={"embedding_dim": 2})
    expected = TorchExtractor(entry, net, None, CPU, fast=False).embed(x, x, [{}, {}])
    fast = TorchExtractor(entry, net, None, CPU)
    assert isinstance(fast.module, DataDependent)  # not folded, still channels-last
    assert np.abs(fast.embed(x, x, [{}, {}]) - expected).max() <= 1e-5
