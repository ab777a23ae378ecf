"""Strict weight loading: each built-in architecture loads a file with the exact key layout of its public
weights (generated here, since the real files cannot be downloaded in tests); a wrong sha256, an
unpinned file, missing, unexpected or mis-shaped keys are refused with what differed listed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.networks.nets import vista3d132
from safetensors.torch import save_file

from radassets.models import families, registry
from radassets.models.weights import WeightsError, load_published, published_state_dict
from radassets.storage import sha256_file


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "weights"


def _randomized(state: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """Distinct values per key, so a test can tell that the file's tensors were the ones loaded."""
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g).to(v.dtype) if v.is_floating_point() else v.clone())
            for k, v in state.items()}


def _genesis_decoder() -> dict[str, torch.Tensor]:
    """A few keys of the published U-Net's decoder and head (not used for embeddings), with their shapes."""
    return {"up_tr256.up_conv.weight": torch.zeros(512, 512, 2, 2, 2), "up_tr256.up_conv.bias": torch.zeros(512),
            "up_tr256.ops.0.conv1.weight": torch.zeros(256, 768, 3, 3, 3),
            "up_tr64.ops.1.bn1.running_var": torch.ones(64),
            "out_tr.final_conv.weight": torch.zeros(1, 64, 1, 1, 1), "out_tr.final_conv.bias": torch.zeros(1)}


def published_file(name: str, folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A file laid out like the model's published weights, and the encoder tensors it should load."""
    entry = registry.get(name)
    module = families.build(entry.family)
    encoder = _randomized(module.state_dict())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / entry.weights.file
    if name == "fmcib":  # {"trunk_state_dict": bare MONAI ResNet keys}
        torch.save({"trunk_state_dict": encoder}, path)
    elif name == "ct_fm":  # flat safetensors of the SegResEncoder
        save_file({k: v.contiguous() for k, v in encoder.items()}, str(path))
    elif name == "vista3d":  # the whole vista3d132 network, flat; the encoder under image_encoder.encoder.
        full = vista3d132().state_dict()
        full.update({f"image_encoder.encoder.{k}": v for k, v in encoder.items()})
        torch.save(full, path)
    elif name == "models_genesis":  # {"state_dict": DataParallel keys of the whole U-Net, "optimizer_state_dict"}
        keys = {f"module.{k}": v for k, v in {**encoder, **_genesis_decoder()}.items()}
        torch.save({"state_dict": keys, "optimizer_state_dict": {"state": {}, "param_groups": []}}, path)
    elif name == "suprem":  # {"net": DDP keys of Universal_model: backbone U-Net plus heads, ...}
        keys = {f"module.backbone.{k}": v for k, v in {**encoder, **_genesis_decoder()}.items()}
        keys.update({"module.precls_conv.1.weight": torch.zeros(8, 64, 1, 1, 1),
                     "module.GAP.3.weight": torch.zeros(256, 512, 1, 1, 1),
                     "module.controller.weight": torch.zeros(153, 512, 1, 1, 1),
                     "module.organ_embedding": torch.zeros(25, 512)})
        torch.save({"net": keys, "optimizer": {}, "scheduler": {}, "epoch": 2100}, path)
    else:
        raise ValueError(name)
    return path, encoder


def pinned(name: str, path: Path) -> registry.ModelEntry:
    entry = registry.get(name)
    return entry.model_copy(update={"weights": entry.weights.model_copy(update={"sha256": sha256_file(path)})})


BUILT_IN = ["fmcib", "ct_fm", "vista3d", "models_genesis", "suprem"]


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_architecture_loads_its_published_layout(name, cache):
    path, encoder = published_file(name, cache / name)
    entry = pinned(name, path)
    module = families.build(entry.family)
    assert load_published(entry, module, cache, download=False) == sha256_file(path)
    for key, value in module.state_dict().items():
        assert torch.equal(value, encoder[key]), key
    # The loaded network embeds a patch into the registry's dimension.
    x = torch.zeros(1, 1, *entry.preprocessing.input_size)
    with torch.inference_mode():
        assert tuple(module.eval()(x).shape) == (1, entry.embedding_dim)


def test_fmcib_key_layout_is_monai_resnet50(cache):
    """The FMCIB trunk: 322 keys, conv1 7³ stride 2 with 128 filters (widen 2), biased downsample."""
    state = families.build("fmcib_resnet50").state_dict()
    assert len(state) == 322 and tuple(state["conv1.weight"].shape) == (128, 1, 7, 7, 7)
    assert "layer1.0.downsample.0.bias" in state and not any(k.startswith("fc.") for k in state)


def test_wrong_sha256_is_refused(cache):
    (cache / "fmcib").mkdir(parents=True)
    torch.save({"trunk_state_dict": families.build("resnet10").state_dict()}, cache / "fmcib" / "model_weights.torch")
    entry = registry.get("fmcib")  # pins the published file's hash, which this generated file is not
    with pytest.raises(WeightsError, match=r"has sha256 [0-9a-f]{64}, the registry expects 8cc92ec4.*refusing"):
        load_published(entry, families.build("fmcib_resnet50"), cache, download=False)


def test_unpinned_weights_are_refused_with_the_hash_to_pin(cache):
    path, _ = published_file("ct_fm", cache / "ct_fm")
    with pytest.raises(WeightsError, match=f"pins no sha256.*'sha256: {sha256_file(path)}'.*data/models/ct_fm.yaml"):
        load_published(registry.get("ct_fm"), families.build("ct_fm_segresenc"), cache, download=False)


def test_missing_weights_offline_say_where_to_put_them(cache):
    entry = registry.get("fmcib")
    offline = entry.model_copy(update={"weights": entry.weights.model_copy(update={"uri": "http://127.0.0.1:9/w.torch"})})
    with pytest.raises(WeightsError) as err:
        load_published(offline, families.build("fmcib_resnet50"), cache, download=True)
    message = str(err.value)
    assert str(cache / "fmcib" / "model_weights.torch") in message and entry.weights.sha256 in message
    assert "download failed" in message


def test_missing_unexpected_and_misshaped_keys_are_listed(cache):
    """In FMCIB's file layout, with a small ResNet (the checks do not depend on the network's size)."""
    module = families.build("resnet10")
    state = _randomized(module.state_dict())
    del state["layer4.0.conv2.weight"], state["bn1.bias"]
    state["fc.weight"] = torch.zeros(10, 512)
    state["conv1.weight"] = torch.zeros(32, 1, 7, 7, 7)
    (cache / "fmcib").mkdir(parents=True)
    path = cache / "fmcib" / "model_weights.torch"
    torch.save({"trunk_state_dict": state}, path)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(WeightsError) as err:
        load_published(pinned("fmcib", path), module, cache, download=False)
    message = str(err.value)
    assert "2 missing keys: bn1.bias, layer4.0.conv2.weight" in message
    assert "1 unexpected keys: fc.weight" in message
    assert "1 shape mismatches: conv1.weight (32, 1, 7, 7, 7) != (64, 1, 7, 7, 7)" in message
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())  # nothing loaded partially


def test_documented_prefixes_are_handled_and_others_are_not(cache):
    """models_genesis strips DataParallel's 'module.' and skips the named decoder; a stray key is an error."""
    path, _ = published_file("models_genesis", cache / "models_genesis")
    entry = pinned("models_genesis", path)
    state = published_state_dict(path, entry.weights)
    assert len(state) == 56 and all(k.startswith("down_tr") for k in state)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["module.extra_head.weight"] = torch.zeros(3)
    torch.save(checkpoint, path)
    with pytest.raises(WeightsError, match=r"1 unexpected keys: extra_head\.weight"):
        load_published(pinned("models_genesis", path), families.build("genesis_unet3d"), cache, download=False)


def test_weights_that_are_not_a_safe_torch_file_are_refused(cache):
    folder = cache / "fmcib"
    folder.mkdir(parents=True)
    path = folder / "model_weights.torch"
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(WeightsError, match="not a weights file torch can load safely") as err:
        load_published(pinned("fmcib", path), families.build("fmcib_resnet50"), cache, download=False)
    assert "weights_only=False" not in str(err.value) and "\n" not in str(err.value), str(err.value)


class TrainingSettings:
    """A custom class a training script pickles into its checkpoint beside the weights."""

    def __init__(self):
        self.learning_rate = 0.1


def test_a_checkpoint_with_pickled_objects_is_refused_without_unsafe_advice(cache):
    """torch's own message advises weights_only=False, which would run the pickled code: not passed on."""
    folder = cache / "fmcib"
    folder.mkdir(parents=True)
    path = folder / "model_weights.torch"
    torch.save({"trunk_state_dict": families.build("resnet10").state_dict(), "settings": TrainingSettings()}, path)
    with pytest.raises(WeightsError) as err:
        load_published(pinned("fmcib", path), families.build("fmcib_resnet50"), cache, download=False)
    message = str(err.value)
    assert "weights_only=False" not in message and "add_safe_globals" not in message, message
    assert str(path) in message and "radassets_tests.models.test_weights.TrainingSettings" in message, message
    assert "state dict" in message and "\n" not in message, message
