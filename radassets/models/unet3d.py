"""The encoder of the 3-D U-Net of Models Genesis (Zhou et al. 2019, MrGiovanni/ModelsGenesis
``pytorch/unet3d.py``, MIT licence), which SuPreM (Li et al. 2024) also uses as its U-Net backbone.

Layer names and shapes are those of the published code, so the published state dicts load key for
key: ``down_tr64`` (1 → 32 → 64), ``down_tr128`` (→ 64 → 128), ``down_tr256`` (→ 128 → 256),
``down_tr512`` (→ 256 → 512), each ``ops`` a pair of ``LUConv`` (3³ convolution with bias,
``ContBatchNorm3d``, ReLU), max-pooling between levels. The decoder (``up_tr*``, ``out_tr``) is not
built: embeddings use the bottleneck, and the registry lists the decoder keys as not loaded.

``ContBatchNorm3d`` normalises with the statistics of the batch it is given, in training and in
evaluation alike (the published ``F.batch_norm(..., training=True)``), so a patch's features
would depend on the other patches in its batch. Here each patch is normalised on its own, as the
authors' one-volume-at-a-time use does, and the loaded running statistics are left untouched
(they never influence the output). Deterministic and independent of the batch size.

The embedding is the global average of the bottleneck (512-d), as the authors' classification
example (``TargetNet``) pools ``out512``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ContBatchNorm3d(nn.modules.batchnorm._BatchNorm):
    """Batch norm that always uses the current statistics (published behaviour), per patch here."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() != 5:
            raise ValueError(f"expected 5D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        # Statistics of each patch alone: a batch of one per call.
        return torch.cat([F.batch_norm(x[None], None, None, self.weight, self.bias, True, 0.0, self.eps)
                          for x in input])


class LUConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn1 = ContBatchNorm3d(out_channels)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.bn1(self.conv1(x)))


def _make_nconv(in_channels: int, depth: int) -> nn.Sequential:
    return nn.Sequential(LUConv(in_channels, 32 * 2**depth), LUConv(32 * 2**depth, 64 * 2**depth))


class DownTransition(nn.Module):
    def __init__(self, in_channels: int, depth: int):
        super().__init__()
        self.ops = _make_nconv(in_channels, depth)
        self.pool = nn.MaxPool3d(2) if depth < 3 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ops(x)
        return self.pool(x) if self.pool is not None else x


class UNet3DEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.down_tr64 = DownTransition(1, 0)
        self.down_tr128 = DownTransition(64, 1)
        self.down_tr256 = DownTransition(128, 2)
        self.down_tr512 = DownTransition(256, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out512 = self.down_tr512(self.down_tr256(self.down_tr128(self.down_tr64(x))))
        return F.adaptive_avg_pool3d(out512, 1).flatten(1)
