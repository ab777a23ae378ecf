"""Patches from a box of the volume read on its own (``radassets.imaging.nrrd_region``) equal patches from the
whole volume read by SimpleITK, bit for bit; the per-axis ``padded_fraction`` is the same float as the grid one."""

from __future__ import annotations

import gzip
import itertools
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from radassets.imaging import nrrd_region, patches
from radassets.imaging.ct import read_ct_series
from radassets.imaging.nrrd_region import open_nrrd, open_volume, parse_layout
from radassets.imaging.patches import PatchSpec, extract_mask_patch, extract_patch, padded_fraction
from radassets_tests.imaging.phantoms import geometry, write_phantom

SIZE = (23, 17, 11)  # i, j, k: small, uneven, so that every box is quick to check


def _image(pixel_id: int, direction: np.ndarray, spacing=(0.7, 1.3, 2.5), origin=(-101.3, 37.25, -210.0),
           seed: int = 0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    dtype = sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], pixel_id)).dtype
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    values = (rng.integers(info.min, info.max, SIZE[::-1], endpoint=True, dtype=dtype) if info is not None
              else rng.normal(0, 1000, SIZE[::-1]).astype(dtype))
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction.ravel().tolist())
    return image


def _oblique() -> np.ndarray:
    axis, angle = np.array([1.0, 1.0, 0.3]) / np.linalg.norm([1.0, 1.0, 0.3]), np.radians(25.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _flipped_swapped() -> np.ndarray:
    return np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, -1]])


def _rewrite_data(itk_raw: Path, out: Path, data: bytes, encoding: str, endian: str | None = None) -> Path:
    """``itk_raw``'s header with another encoding (and byte order), followed by ``data``."""
    head, _, _ = itk_raw.read_bytes().partition(b"\n\n")
    lines = [line for line in head.split(b"\n") if not line.startswith((b"encoding:", b"endian:"))]
    lines.append(b"encoding: " + encoding.encode())
    if endian:
        lines.append(b"endian: " + endian.encode())
    out.write_bytes(b"\n".join(lines) + b"\n\n" + data)
    return out


def _files(folder: Path, image: sitk.Image) -> dict[str, Path]:
    """The same image as NRRD in every encoding the region reader reads itself."""
    raw = folder / "raw.nrrd"
    sitk.WriteImage(image, str(raw), useCompression=False, imageIO="NrrdImageIO")
    itk_gzip = folder / "itk_gzip.nrrd"
    sitk.WriteImage(image, str(itk_gzip), useCompression=True, imageIO="NrrdImageIO")
    values = sitk.GetArrayFromImage(image)
    little = values.astype(values.dtype.newbyteorder("<")).tobytes()
    half = len(little) // 3
    files = {"raw": raw, "itk_gzip": itk_gzip,
             "gzip_level1": _rewrite_data(raw, folder / "gzip1.nrrd", gzip.compress(little, 1), "gzip", "little"),
             # a concatenation of gzip members is one gzip stream (as pigz or a parallel writer may make)
             "gzip_members": _rewrite_data(raw, folder / "members.nrrd",
                                           gzip.compress(little[:half], 6) + gzip.compress(little[half:], 1), "gz",
                                           "little"),
             # not gzip: ITK reads it through gzread, which passes data without a gzip header through as they are;
             # the region reader fails on it and leaves it to ITK, so the two still agree
             "zlib": _rewrite_data(raw, folder / "zlib.nrrd", zlib.compress(little, 9), "gzip", "little")}
    if values.dtype.itemsize > 1:
        big = values.astype(values.dtype.newbyteorder(">")).tobytes()
        files["raw_big_endian"] = _rewrite_data(raw, folder / "big.nrrd", big, "raw", "big")
        files["gzip_big_endian"] = _rewrite_data(raw, folder / "bigz.nrrd", gzip.compress(big), "gzip", "big")
    return files


def _boxes(rng: np.random.Generator, n: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    size = np.array(SIZE)
    boxes: list[tuple[tuple[int, ...], tuple[int, ...]]] = [
        ((0, 0, 0), SIZE), ((0, 0, 0), (1, 1, 1)), (tuple(size - 1), SIZE),  # whole, first and last voxel
        ((0, 0, SIZE[2] - 2), (SIZE[0], 3, SIZE[2])), ((SIZE[0] - 1, 0, 0), (SIZE[0], SIZE[1], 1))]
    for _ in range(n):
        lo = rng.integers(0, size)
        hi = np.array([rng.integers(a + 1, s + 1) for a, s in zip(lo, size)])
        boxes.append((tuple(int(v) for v in lo), tuple(int(v) for v in hi)))
    return boxes


@pytest.mark.parametrize("pixel_id", [sitk.sitkInt16, sitk.sitkUInt8, sitk.sitkFloat32],
                         ids=["int16", "uint8", "float32"])
@pytest.mark.parametrize("direction", [np.eye(3), _flipped_swapped(), _oblique()],
                         ids=["axial", "flipped-swapped", "oblique"])
def test_region_read_equals_readimage_slice(tmp_path, pixel_id, direction):
    image = _image(pixel_id, direction)
    rng = np.random.default_rng(1)
    for name, path in _files(tmp_path, image).items():
        reader = open_nrrd(path)
        assert reader is not None, name
        try:
            whole = sitk.ReadImage(str(path))
        except RuntimeError:  # only the zlib file, where ITK finds too few bytes (float data do not compress)
            assert name == "zlib"
            with pytest.raises(RuntimeError):
                reader.region((0, 0, 0), (1, 1, 1))
            continue
        if name != "zlib":
            assert np.array_equal(sitk.GetArrayViewFromImage(whole), sitk.GetArrayViewFromImage(image)), name
        assert (reader.GetSize(), reader.GetOrigin(), reader.GetSpacing(), reader.GetDirection()) == (
            whole.GetSize(), whole.GetOrigin(), whole.GetSpacing(), whole.GetDirection())
        for lo, hi in _boxes(rng, 25):
            got, expected = reader.region(lo, hi), whole[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            assert got.GetPixelID() == expected.GetPixelID(), (name, lo, hi)
            assert got.GetSize() == expected.GetSize(), (name, lo, hi)
            assert got.GetOrigin() == expected.GetOrigin(), (name, lo, hi)
            assert got.GetSpacing() == expected.GetSpacing(), (name, lo, hi)
            assert got.GetDirection() == expected.GetDirection(), (name, lo, hi)
            assert np.array_equal(sitk.GetArrayViewFromImage(got), sitk.GetArrayViewFromImage(expected)), (name, lo, hi)


def test_a_damaged_gzip_volume_fails_as_in_itk_even_where_the_box_ends_before_the_damage(tmp_path):
    image = _image(sitk.sitkInt16, np.eye(3))
    path = _files(tmp_path, image)["gzip_level1"]
    head, _, data = path.read_bytes().partition(b"\n\n")
    box = ((0, 0, 0), (2, 2, 1))  # the first slice: inflated long before the end of the stream
    damaged = {"truncated": data[:-3], "crc": data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:],
               "length": data[:-4] + bytes([data[-4] ^ 0x01]) + data[-3:]}
    failed = []
    for name, body in damaged.items():
        path.write_bytes(head + b"\n\n" + body)
        reader = open_nrrd(path)
        assert reader is not None, name
        try:
            expected = sitk.ReadImage(str(path))[0:2, 0:2, 0:1]
        except RuntimeError:  # a wrong CRC: ITK refuses the file
            failed.append(name)
            with pytest.raises(RuntimeError):  # the reader hands a stream it finds damaged to ITK, which says why
                reader.region(*box)
        else:  # ITK accepts a missing or wrong length in the trailer: so does the reader (ITK reads it)
            assert np.array_equal(sitk.GetArrayFromImage(reader.region(*box)), sitk.GetArrayFromImage(expected))
    assert failed == ["crc"]


def test_what_the_region_reader_does_not_read_is_left_to_simpleitk(tmp_path):
    image = _image(sitk.sitkInt16, np.eye(3))
    raw = _files(tmp_path, image)["raw"]
    for name in ("volume.nii.gz", "volume.mha"):
        sitk.WriteImage(image, str(tmp_path / name))
        assert open_nrrd(tmp_path / name) is None
        assert np.array_equal(sitk.GetArrayFromImage(open_volume(tmp_path / name).region((0, 0, 0), SIZE)),
                              sitk.GetArrayFromImage(image))
    sitk.WriteImage(image, str(tmp_path / "detached.nhdr"))  # header and data in two files
    assert open_nrrd(tmp_path / "detached.nhdr") is None
    head, _, data = raw.read_bytes().partition(b"\n\n")
    assert parse_layout(head + b"\nbyte skip: 4\n\n" + data) is None
    assert parse_layout(head.replace(b"encoding: raw", b"encoding: bzip2") + b"\n\n") is None
    assert parse_layout(head.replace(b"type: short", b"type: int64") + b"\n\n") is None
    assert parse_layout(head.replace(b"dimension: 3", b"dimension: 4") + b"\n\n") is None
    assert parse_layout(head + b"\n\n") is not None
    (tmp_path / "short.nrrd").write_bytes(head + b"\n\n" + data[:-2])  # truncated raw data
    assert open_nrrd(tmp_path / "short.nrrd") is None


def test_damaged_gzip_data_is_read_by_simpleitk_which_says_so(tmp_path):
    image = _image(sitk.sitkInt16, np.eye(3))
    path = _files(tmp_path, image)["itk_gzip"]
    head, _, data = path.read_bytes().partition(b"\n\n")
    path.write_bytes(head + b"\n\n" + data[:len(data) // 2])
    reader = open_nrrd(path)
    assert reader is not None
    for box in (((0, 0, 0), (2, 2, 1)), ((0, 0, 0), SIZE)):  # the first slice too, though it is still there
        with pytest.raises(RuntimeError):  # ITK's error for the whole file, as reading it whole would give
            reader.region(*box)


# -- padded_fraction: the per-axis path against the grid path it replaces where the axes are along L, P, S


def padded_fraction_grid(image: sitk.Image, center, spec: PatchSpec) -> float:
    """``padded_fraction`` as it was before the per-axis path (kept here as the reference)."""
    axis = np.arange(spec.size) * spec.spacing_mm
    origin = spec.origin(center)
    grid = np.stack(np.meshgrid(axis + origin[0], axis + origin[1], axis + origin[2], indexing="ij"), axis=-1)
    matrix = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    index = (grid.reshape(-1, 3) - np.array(image.GetOrigin())) @ np.linalg.inv(matrix).T
    inside = ((index >= -0.5) & (index <= np.array(image.GetSize()) - 0.5)).all(axis=1)
    return float(1.0 - inside.mean())


def _signed_permutations() -> list[np.ndarray]:
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            matrix = np.zeros((3, 3))
            matrix[list(range(3)), list(perm)] = signs
            out.append(matrix)
    return out


@pytest.fixture(scope="module")
def phantom_images(tmp_path_factory) -> dict[str, sitk.Image]:
    """The CT volumes of the geometry phantoms (axial, flipped, oblique, anisotropic), as converted."""
    center = np.array([14.0, -23.0, -147.0])
    return {name: read_ct_series(write_phantom(tmp_path_factory.mktemp(name), geometry(name), "SEG",
                                               center).ct_files).image
            for name in ("axial", "flipped", "oblique", "anisotropic")}


def _centres(image: sitk.Image, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Points inside, near and across the volume's faces and corners, and far outside."""
    size = np.array(image.GetSize(), float)
    index = [rng.uniform(-0.3, 1.3, 3) * (size - 1) for _ in range(n)]
    index += [np.array(c) * (size - 1) for c in itertools.product((0.0, 0.5, 1.0), repeat=3)]
    index += [np.array([-40.0, 0.0, 0.0]), size + 40]
    return [np.array(image.TransformContinuousIndexToPhysicalPoint(i.tolist())) for i in index]


def test_padded_fraction_fast_path_is_bit_identical(phantom_images):
    rng = np.random.default_rng(7)
    images = dict(phantom_images)
    spacings = [(0.7, 1.3, 2.5), (0.9765625, 0.9765625, 3.0), (2.2886000000000002, 2.6665999999999999, 2.0)]
    for n, direction in enumerate(_signed_permutations()):
        image = sitk.Image([40, 31, 17], sitk.sitkInt16)
        image.SetSpacing(spacings[n % len(spacings)])
        image.SetOrigin(tuple(rng.uniform(-200, 200, 3)))
        image.SetDirection(direction.ravel().tolist())
        images[f"permutation{n}"] = image
    for n, (axis, degrees) in enumerate(itertools.product(range(3), (5.0, -4.98, 33.0))):
        # turned in one plane, as a scanner's table rotation turns a volume about S (about L and P too, here)
        turn = np.eye(3)
        c, s_ = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
        p, q = [b for b in range(3) if b != axis]
        turn[[p, p, q, q], [p, q, p, q]] = c, -s_, s_, c
        for flip in (np.eye(3), np.diag([-1.0, 1.0, -1.0])):
            image = sitk.Image([40, 31, 17], sitk.sitkInt16)
            image.SetSpacing(spacings[n % len(spacings)])
            image.SetOrigin(tuple(rng.uniform(-200, 200, 3)))
            image.SetDirection((turn @ flip).ravel().tolist())
            images[f"turned{n}-{flip[0, 0]:+.0f}"] = image
    per_axis = plane = 0
    for name, image in images.items():
        inverse = patches._inverse_matrix(image)
        per_axis += patches._is_permutation(inverse)
        plane += patches._padded_fraction_plane(image, inverse, np.arange(4.0), np.zeros(3)) is not None
        # 64³ (the default) on the phantoms; smaller patches elsewhere keep the grid reference quick
        specs = [(PatchSpec(size=17), 1), (PatchSpec(size=20, spacing_mm=0.7), 1)]
        for spec, every in specs + ([(PatchSpec(size=64), 5)] if name in phantom_images else []):
            for center in _centres(image, rng, 6)[::every]:
                got, expected = padded_fraction(image, center, spec), padded_fraction_grid(image, center, spec)
                assert got == expected, (name, spec, center, got, expected)
    assert per_axis == 4 + 48 - 1  # the phantoms and the permutations but the oblique phantom
    assert plane == 18  # the turned volumes; the oblique phantom (turned about a slanted axis) takes the grid path


def test_padded_fraction_in_a_plane_takes_the_grid_path_where_a_point_is_near_a_limit(monkeypatch):
    image = sitk.Image([40, 31, 17], sitk.sitkInt16)
    image.SetDirection([0.996, -0.0892, 0.0, 0.0892, 0.996, 0.0, 0.0, 0.0, 1.0])
    center = image.TransformContinuousIndexToPhysicalPoint([39.0, 15.0, 8.0])
    spec = PatchSpec(size=16)
    inverse = patches._inverse_matrix(image)
    assert patches._padded_fraction_plane(image, inverse, np.arange(16.0), spec.origin(center)) is not None
    monkeypatch.setattr(patches, "PLANE_MARGIN_ULPS", 1e18)  # every point "near" a limit
    assert patches._padded_fraction_plane(image, inverse, np.arange(16.0), spec.origin(center)) is None
    assert padded_fraction(image, center, spec) == padded_fraction_grid(image, center, spec) > 0


# -- whole patches: read box by box equals read whole, for CT and mask


@pytest.mark.parametrize("direction", [np.eye(3), _flipped_swapped(), _oblique()],
                         ids=["axial", "flipped-swapped", "oblique"])
@pytest.mark.parametrize("encoding", ["raw", "itk_gzip", "gzip_level1"])
def test_patches_from_boxes_equal_patches_from_the_whole_volume(tmp_path, direction, encoding):
    ct = _image(sitk.sitkInt16, direction)
    ct = sitk.Clamp(ct, sitk.sitkInt16, -1024, 3000)
    mask = sitk.Cast(ct > 500, sitk.sitkUInt8)
    (tmp_path / "ct").mkdir()
    (tmp_path / "mask").mkdir()
    ct_path, mask_path = _files(tmp_path / "ct", ct)[encoding], _files(tmp_path / "mask", mask)[encoding]
    whole_ct, whole_mask = sitk.ReadImage(str(ct_path)), sitk.ReadImage(str(mask_path))
    boxed_ct, boxed_mask = open_volume(ct_path), open_volume(mask_path)
    assert isinstance(boxed_ct, nrrd_region.NrrdRegionReader)
    rng = np.random.default_rng(3)
    for spec in (PatchSpec(size=16), PatchSpec(size=12, spacing_mm=0.6, interpolator="bspline")):
        for center in _centres(whole_ct, rng, 10):
            assert np.array_equal(extract_patch(boxed_ct, center, spec), extract_patch(whole_ct, center, spec))
            assert np.array_equal(extract_mask_patch(boxed_mask, center, spec),
                                  extract_mask_patch(whole_mask, center, spec))
            assert padded_fraction(boxed_ct, center, spec) == padded_fraction(whole_ct, center, spec)


def test_a_patch_is_the_same_whatever_itks_thread_count(tmp_path):
    """Each output voxel of a resample is computed alone, so splitting the work among threads changes nothing."""
    ct = sitk.Clamp(_image(sitk.sitkInt16, _oblique()), sitk.sitkInt16, -1024, 3000)
    center = ct.TransformContinuousIndexToPhysicalPoint([v / 2 for v in SIZE])
    before = sitk.ProcessObject_GetGlobalDefaultNumberOfThreads()
    try:
        out = []
        for threads in (1, 2, 3, 8):
            sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(threads)
            out.append(extract_patch(ct, center, PatchSpec(size=24)))
    finally:
        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(before)
    assert all(np.array_equal(out[0], o) for o in out[1:])
