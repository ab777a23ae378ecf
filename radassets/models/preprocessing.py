"""From the canonical patch (1 mm, 64³, axes S, P, L, seed at the centre) to a model's input tensor.

Each model crops its own input from the patch: a grid of ``input_size`` voxels at ``spacing_mm``,
centred on the seed like the patch, sampled with linear interpolation (for 1 mm inputs the grid
points are patch voxels, so this is an exact crop). Voxels the patch does not cover are air.
The grid must fit in the patch: a model that needs a wider field of view is an error naming the
patch size to configure, never a silent zero-padding.

Then the axes are reordered and flipped into the model's convention (``axes``: the anatomical
direction of increasing index along each tensor axis; the patch is ``SPL``), and the intensity
transform of the registry entry is applied. The result is float32, channel first.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from radassets.models.registry import Intensity, Preprocessing
from radassets.errors import RadassetsError

PATCH_AXES = "SPL"
AIR_HU = -1024.0
OPPOSITE = {"L": "R", "R": "L", "P": "A", "A": "P", "S": "I", "I": "S"}


class PreprocessingError(RadassetsError, ValueError):
    """The patches cannot give this model its input."""


def _grid(patch: np.ndarray, p: Preprocessing) -> np.ndarray:
    """Resample a [S, P, L] patch onto the model's grid (still [S, P, L])."""
    size = patch.shape[0]
    if p.field_of_view_mm() > size + 1e-6:
        raise PreprocessingError(
            f"the model needs a {p.field_of_view_mm():g} mm field of view ({p.input_size} voxels at "
            f"{p.spacing_mm:g} mm) but the patches are {size} mm: set the imaging resource's patch_size to at "
            f"least {int(np.ceil(p.field_of_view_mm()))} and rematerialize patches")
    spatial = {axis: n for axis, n in zip(p.axes, p.input_size)}
    out_size_spl = [spatial.get(a, spatial.get(OPPOSITE[a])) for a in PATCH_AXES]  # voxels along S, P, L
    if p.spacing_mm == 1.0 and all((size - n) % 2 == 0 for n in out_size_spl):
        starts = [(size - n) // 2 for n in out_size_spl]  # exact crop: the centres coincide
        return patch[tuple(slice(s, s + n) for s, n in zip(starts, out_size_spl))].astype(np.float32)
    image = sitk.GetImageFromArray(np.asarray(patch, dtype=np.float32))  # index (i, j, k) = (L, P, S)
    image.SetOrigin([-(size - 1) / 2.0] * 3)  # the seed at the physical origin
    size_xyz = out_size_spl[::-1]
    origin = [-(n - 1) / 2.0 * p.spacing_mm for n in size_xyz]
    out = sitk.Resample(image, size_xyz, sitk.Transform(), sitk.sitkLinear, origin, [p.spacing_mm] * 3,
                        np.eye(3).ravel().tolist(), AIR_HU, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def reorient(array_spl: np.ndarray, axes: str) -> np.ndarray:
    """A [S, P, L] array with its axes permuted and flipped into ``axes`` (e.g. ``LPS``, ``RAS``)."""
    order, flips = [], []
    for a in axes:
        if a in PATCH_AXES:
            order.append(PATCH_AXES.index(a))
            flips.append(False)
        else:
            order.append(PATCH_AXES.index(OPPOSITE[a]))
            flips.append(True)
    out = np.transpose(array_spl, order)
    for axis, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis=axis)
    return np.ascontiguousarray(out)


def scale_intensity(hu: np.ndarray, t: Intensity) -> np.ndarray:
    if t.kind == "none":
        return hu.astype(np.float32)
    if t.kind == "zscore":
        return ((hu - t.mean) / t.std).astype(np.float32)
    if t.clip:
        hu = np.clip(hu, t.a_min, t.a_max)
    scaled = (hu - t.a_min) / (t.a_max - t.a_min) * (t.b_max - t.b_min) + t.b_min
    return scaled.astype(np.float32)


def model_input(patch: np.ndarray, p: Preprocessing) -> np.ndarray:
    """One patch [S, P, L] int16 HU → the model's input, float32 of shape (1, *input_size)."""
    x = reorient(_grid(patch, p), p.axes)
    if x.shape != tuple(p.input_size):
        raise PreprocessingError(f"internal: input shape {x.shape} is not {tuple(p.input_size)}")
    return scale_intensity(x, p.intensity)[None]

