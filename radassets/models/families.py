"""Architectures of the built-in models, each the real network its authors published, as an encoder
that maps a batch (B, 1, D, H, W) to one vector per patch.

- ``fmcib_resnet50``: FMCIB (Pai et al. 2024): MONAI ResNet-50, one input channel, widen factor 2,
  first convolution with stride 2, no classification layer; its global average pool is the
  4096-d embedding (``fmcib.models.fmcib_model``).
- ``ct_fm_segresenc``: CT-FM (project-lighter): MONAI ``SegResEncoder`` with 32 initial filters and
  blocks (1, 2, 2, 4, 4), batch norm; the global average pool of the deepest stage is the 512-d
  embedding (their ``extract_feat_LP.py``).
- ``vista3d_segresenc``: the image encoder of MONAI VISTA3D (``vista3d132``): ``SegResEncoder`` with
  48 initial filters, blocks (1, 2, 2, 4, 4), instance norm; deepest stage pooled to 768-d.
- ``genesis_unet3d``: the encoder of Models Genesis' 3-D U-Net (Zhou et al.), also SuPreM's U-Net
  backbone (Li et al. 2024); ``radassets.models.unet3d``.
- ``resnet10``: a small MONAI ResNet (512-d), for the untrained control.

Families are looked up by name from the registry; ``build`` makes a fresh, randomly initialised
instance, and weights are loaded by ``radassets.models.weights``.

torch and MONAI are imported by the builders, not by this module: the registry checks a definition's family
name against ``FAMILIES`` on every command (``pipeline run`` reads the registry), and importing torch there
cost each command about 7 s on 2 cores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


def pool_deepest_stage(stages: list[torch.Tensor]) -> torch.Tensor:
    """``SegResEncoder`` head: global average pool of the deepest stage. A function, not a module,
    so the encoder's state dict holds exactly the published keys."""
    import torch

    return torch.nn.functional.adaptive_avg_pool3d(stages[-1], 1).flatten(1)


def fmcib_resnet50() -> nn.Module:
    from monai.networks.nets import resnet50

    return resnet50(pretrained=False, spatial_dims=3, n_input_channels=1, widen_factor=2, conv1_t_stride=2,
                    feed_forward=False, bias_downsample=True)


def ct_fm_segresenc() -> nn.Module:
    from monai.networks.nets.segresnet_ds import SegResEncoder

    return SegResEncoder(spatial_dims=3, in_channels=1, init_filters=32, blocks_down=(1, 2, 2, 4, 4),
                         head_module=pool_deepest_stage)  # type: ignore[arg-type]  # monai calls any callable


def vista3d_segresenc() -> nn.Module:
    from monai.networks.nets.segresnet_ds import SegResEncoder

    return SegResEncoder(spatial_dims=3, in_channels=1, init_filters=48, blocks_down=(1, 2, 2, 4, 4),
                         norm="instance", head_module=pool_deepest_stage)  # type: ignore[arg-type]  # as above


def resnet10_control() -> nn.Module:
    from monai.networks.nets import resnet10

    return resnet10(pretrained=False, spatial_dims=3, n_input_channels=1, feed_forward=False)


def genesis_unet3d() -> nn.Module:
    from radassets.models.unet3d import UNet3DEncoder

    return UNet3DEncoder()


FAMILIES: dict[str, Callable[[], nn.Module]] = {
    "fmcib_resnet50": fmcib_resnet50,
    "ct_fm_segresenc": ct_fm_segresenc,
    "vista3d_segresenc": vista3d_segresenc,
    "genesis_unet3d": genesis_unet3d,
    "resnet10": resnet10_control,
}


def build(family: str) -> nn.Module:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[family]()
