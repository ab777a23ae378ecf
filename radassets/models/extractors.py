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
from typing import Any, cast

import numpy as np
import torch

from radassets.models import families
from radassets.models.embed import output_vectors
from radassets.models.preprocessing import model_input
from radassets.models.registry import ModelEntry
from radassets.models.weights import WeightsError, load_published, resolve_weights
from radassets.storage import sha256_file


def fold_batch_norms(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` (in eval mode) with every convolution followed by a BatchNorm folded into one convolution,
    by torch's own pass (``torch.fx.experimental.optimization.fuse``: symbolic trace, then
    ``fuse_conv_bn_eval`` per pair). It removes a full read and write of every normalised activation per
    forward; the floats change by rounding only (about 1e-6 relative). A network torch.fx cannot trace
    (data-dependent control flow) is returned as it is: folding is a speed-up, never a requirement."""
    from torch.fx.experimental.optimization import fuse

    try:
        # inplace: the fused convolutions replace the module's own, no copy of the weights (0.7 GB for FMCIB)
        return fuse(module, inplace=True)
    except Exception:  # noqa: BLE001 - any network torch.fx cannot trace (TraceError, RuntimeError, ...) runs unfolded
        return module


def prepare_for_cpu(module: torch.nn.Module) -> torch.nn.Module:
    """The CPU fast path of an eval-mode ``nn.Module``: conv-BatchNorm pairs folded once at load, weights in
    channels-last (NDHWC) order. oneDNN then runs each 3-D convolution on NDHWC activations directly, where
    the default NCDHW layout costs a reorder of the input and the output of every convolution (measured in
    bench/embeddings.py, docs/benchmarks.md "Embeddings"). TorchScript modules are left alone: a user's
    exported graph is run as exported."""
    if isinstance(module, torch.jit.ScriptModule):
        return module
    # memory_format is a documented argument of Module.to, missing from its type stubs' overloads
    return fold_batch_norms(module).to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]


class PrepackedConv3d(torch.nn.Module):
    """A 3-D convolution whose weight oneDNN reordered once (at the first batch) into the layout its kernel reads.

    Called with a plain weight, oneDNN reorders it on every forward: for FMCIB 0.7 GB per batch, which dominates
    layer4 (1024-4096 channels at 2^3 voxels: little work per weight). torch exposes no public API for a
    prepacked convolution outside torch.compile; these are the two operators its CPU freezing pass
    (torch/_inductor/fx_passes/mkldnn_fusion.py) emits, so ``prepack_convolutions`` falls back to the plain
    module where they are missing. Same oneDNN kernel, same floats: a test pins the bytes against the unpacked
    channels-last path and the eager path."""

    def __init__(self, conv: torch.nn.Conv3d, input_size: Sequence[int]):
        super().__init__()
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.bias = None if conv.bias is None else conv.bias.detach().clone()
        # the aten operator: torch._C._nn's stub lacks input_size, which the operator takes
        self.weight = torch.ops.aten.mkldnn_reorder_conv3d_weight(
            conv.weight.detach().to_mkldnn(), self.padding, self.stride, self.dilation, self.groups, list(input_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, self.padding, self.stride,
                                                       self.dilation, self.groups, "none", [], "")


def _packable(module: torch.nn.Module) -> bool:
    return (type(module) is torch.nn.Conv3d and module.padding_mode == "zeros"
            and not isinstance(module.padding, str) and module.weight.dtype == torch.float32)


def prepack_convolutions(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``module`` on ``x`` and return its output; meanwhile note each plain Conv3d's input size, and then
    replace it by a ``PrepackedConv3d`` packed for that size (other batch sizes run too: oneDNN reorders the
    packed weight if its kernel for them wants another layout). Without the operators, the module is left
    as it is."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.aten, "mkldnn_reorder_conv3d_weight")
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise")):
        return module(x)
    sizes: dict[str, torch.Size] = {}
    hooks = [m.register_forward_pre_hook(lambda _, args, name=name: sizes.__setitem__(name, args[0].shape))
             for name, m in module.named_modules() if _packable(m)]
    try:
        y = module(x)
    finally:
        for hook in hooks:
            hook.remove()
    for name, size in sizes.items():
        parent, _, attr = name.rpartition(".")
        owner = module.get_submodule(parent)
        setattr(owner, attr, PrepackedConv3d(cast(torch.nn.Conv3d, owner.get_submodule(attr)), size))
    return y


class TorchExtractor:
    """A torch network as an extractor. On the CPU, ``fast`` (the default) runs ``prepare_for_cpu``'s module on
    channels-last input, its convolutions prepacked at the first batch (``prepack_convolutions``); its vectors
    equal the plain eager path's to rounding (a test pins 1e-5), and are the same bytes run to run like the
    eager path's. ``fast=False`` is the plain eager path."""

    def __init__(self, entry: ModelEntry, module: torch.nn.Module, weights_sha256: str | None, device: torch.device,
                 fast: bool = True):
        module = module.to(device).eval()
        self.channels_last = fast and device.type == "cpu" and not isinstance(module, torch.jit.ScriptModule)
        self.module = prepare_for_cpu(module) if self.channels_last else module
        self.prepack = self.channels_last  # at the first batch, which gives the convolutions' input sizes
        self.entry = entry
        self.weights_sha256 = weights_sha256
        self.device = device
        self.dim = entry.embedding_dim  # None only while `models add` learns it

    def batch_input(self, patches: np.ndarray) -> torch.Tensor:
        """The network's input for a batch of patches, on its device, in the memory order its weights are in."""
        x = torch.from_numpy(np.stack([model_input(p, self.entry.preprocessing) for p in patches])).to(self.device)
        # 5-D input only: channels_last_3d is a 5-D memory format (a user's 2-D network sees its input as is)
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last and x.dim() == 5 else x

    def embed(self, patches: np.ndarray, masks: np.ndarray, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        x = self.batch_input(patches)
        with torch.inference_mode():
            if self.prepack:
                y = prepack_convolutions(self.module, x)
                self.prepack = False
            else:
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
