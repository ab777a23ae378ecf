"""Model weights: found in a local cache or downloaded, verified by sha256, loaded strictly.

Cache: a folder given by the caller (``Layout.weights_dir()``: ``RADASSETS_WEIGHTS_DIR``, default
``<home>/weights``), one folder per model:
``<cache>/<model>/<file>``. A file is used only when its sha256 is the registry's; a download
goes to a temporary name and is renamed after it verifies. Offline, a missing file is an error
that says where to put it and which sha256 it must have.

Loading is strict, in this order: sha256, then ``torch.load(..., weights_only=True)`` (no
pickled code runs; a checkpoint holding pickled objects is refused, saying which, never with torch's
advice to load it unsafely; ``.safetensors`` files through safetensors), then the registry's key handling
(a top-level key such as ``state_dict``, prefixes such as ``module.`` from DataParallel, an encoder sub-tree,
the parts named unused such as a decoder), then every key and shape compared with the architecture. Any
difference is an error listing the missing, unexpected and mis-shaped keys; nothing is loaded partially.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radassets.models.registry import ModelEntry, Weights
from radassets.storage import sha256_file
from radassets.errors import RadassetsError

if TYPE_CHECKING:  # torch is imported where weights are loaded: importing the definitions (a run worker) needs none
    import torch

WEIGHTS_DIR_ENV = "RADASSETS_WEIGHTS_DIR"
DOWNLOAD_TIMEOUT_S = 20.0
LISTED_KEYS = 12  # how many keys an error names of each kind


class WeightsError(RadassetsError, RuntimeError):
    """Weights are missing, corrupt, or do not fit the architecture."""


def weights_path(entry: ModelEntry, weights_dir: Path) -> Path:
    """Where the cache ``weights_dir`` holds ``entry``'s weights file."""
    return Path(weights_dir) / entry.name / entry.weights.file


def _download(uri: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(uri, timeout=DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out, length=1 << 20)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def resolve_weights(entry: ModelEntry, weights_dir: Path, download: bool = True) -> Path:
    """The verified weights file of ``entry``: from the cache ``weights_dir``, else downloaded (when online)."""
    w: Weights = entry.weights
    path = weights_path(entry, weights_dir)
    if not path.is_file() and download:
        try:
            _download(w.uri, path)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise WeightsError(
                f"model {entry.name!r}: weights not in the cache and the download failed ({e}). "
                f"Download {w.uri} elsewhere and put it at {path} (sha256 {w.sha256 or 'not pinned yet'}); "
                f"or set {WEIGHTS_DIR_ENV} to a folder holding {entry.name}/{w.file}"
            ) from None
    if not path.is_file():
        raise WeightsError(f"model {entry.name!r}: no weights at {path}; download {w.uri} there "
                           f"(sha256 {w.sha256 or 'not pinned yet'})")
    actual = sha256_file(path)
    if w.sha256 is None:
        raise WeightsError(
            f"model {entry.name!r}: the registry pins no sha256 for {w.file} yet, so its weights cannot be "
            f"verified. If {path} is the file published at {w.uri}, pin it: set 'sha256: {actual}' under "
            f"'weights' in data/models/{entry.name}.yaml")
    if actual != w.sha256:
        raise WeightsError(f"model {entry.name!r}: {path} has sha256 {actual}, the registry expects {w.sha256}; "
                           f"refusing to load it (a different or corrupt file)")
    return path


def _unsafe_file(path: Path, e: Exception) -> WeightsError:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused. torch's own message advises
    ``weights_only=False`` or allow-listing the class, either of which would run the file's pickled code:
    only the facts are passed on."""
    text = str(e)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return WeightsError(
            f"{path}: the checkpoint holds pickled Python objects, not only tensors (first: {found.group(1)}), and "
            f"radassets does not run pickled code to read weights; save the state dict alone "
            f"(torch.save(model.state_dict(), path)) or as .safetensors, and pin the new file's sha256")
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    cause = detail.group(1).strip() if detail else (lines[0] if lines else "")
    return WeightsError(f"{path}: not a weights file torch can load safely: not a checkpoint of tensors written by "
                        f"torch.save ({type(e).__name__}{': ' + cause if cause else ''})")


def published_state_dict(path: Path, w: Weights) -> dict[str, torch.Tensor]:
    """The tensors of a verified weights file, with the registry's key handling applied."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError... for unsafe files
        raise _unsafe_file(path, e) from None
    if w.state_dict_key is not None:
        if not isinstance(obj, Mapping) or w.state_dict_key not in obj:
            keys = list(obj)[:LISTED_KEYS] if isinstance(obj, Mapping) else type(obj).__name__
            raise WeightsError(f"{path}: no top-level key {w.state_dict_key!r} (it has {keys})")
        obj = obj[w.state_dict_key]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        for prefix in w.strip_prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
        if w.select_prefix is not None:
            if not key.startswith(w.select_prefix):
                continue
            key = key[len(w.select_prefix):]
        if any(key.startswith(p) for p in w.unused_prefixes):
            continue
        state[key] = value
    return state


def _listing(kind: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:LISTED_KEYS]) + (f", … ({len(keys) - LISTED_KEYS} more)" if len(keys) > LISTED_KEYS else "")
    return f"{len(keys)} {kind}: {shown}"


def load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module`` only if every key matches and every shape agrees."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
                    for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    problems = [_listing(kind, keys) for kind, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                                         ("shape mismatches", shapes)) if keys]
    if problems:
        raise WeightsError(f"{what}: the weights do not fit the architecture: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def load_published(entry: ModelEntry, module: torch.nn.Module, weights_dir: Path, download: bool = True) -> str:
    """Verify, read and strictly load ``entry``'s weights into ``module``; returns the sha256."""
    path = resolve_weights(entry, weights_dir, download)
    load_strict(module, published_state_dict(path, entry.weights), f"model {entry.name!r} ({path.name})")
    return entry.weights.sha256
