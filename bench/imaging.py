"""Benchmark: radassets' CT conversion and patch extraction against the usual peer tools.

What is compared, on the same N current CT series of a demo collection (default N=20; the
"retest" scans are left out):

1. DICOM series → volume file, per tool, on identical copies of each series' folder:
   - radassets: ``read_ct_series`` (validates every header: slice spacing, gantry tilt,
     orientation, rescale; cross-checks ITK's geometry) then ``write_image`` (gzip NRRD, atomic);
   - dcm2niix: ``dcm2niix -z n`` (uncompressed NIfTI) and ``-z y`` (gzip NIfTI, pigz if present);
   - plastimatch: ``plastimatch convert --input DIR --output-img OUT.nrrd``.
   One warm-up series per tool is converted first and not counted. Reported: series/s, MB/s of
   input DICOM, and radassets' throughput ÷ the peer's (> 1: radassets is faster).
2. Seed → 64³ patch at 1 mm (the GTV-1 centres of ``truth/lesions.csv``), from the NRRD volumes of
   step 1:
   - radassets: what ``extract_volume_patches`` does for a CT volume: ``read_volume`` (the header
     once per volume), then per seed ``extract_patch`` (only the box the patch samples is read:
     crop, then resample) and ``padded_fraction``; a per-patch phase table follows (and the mask
     patch's cost, on a body mask written like the pipeline's masks, outside the ratio);
   - the FMCIB reference loader: per seed, re-read the volume and resample the WHOLE volume to
     1 mm with MONAI (the transforms of FMCIB's ``get_transforms``), then crop around the seed.
   Reported: patches/s, the ratio, and a sanity check that both sample the same place: the
   distance between the two patches' centres, and the mean |ΔHU| in the central 16³ (the lesion),
   for the same seed and with radassets' patch taken on the reference's own grid.

Run it (2 threads everywhere, so numbers are comparable across machines):

    .venv/bin/python bench/imaging.py                      # demo at $RADASSETS_HOME/demo, made if missing
    .venv/bin/python bench/imaging.py --demo var/data/demo --series 20 --json out.json

A missing peer tool is skipped with a line saying how to install it. Every output goes to a
temporary folder, removed at the end. Timings belong here, not in the tests: they depend on the
machine, and the test suite checks only correctness.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, with or without an installed package
    sys.path.insert(0, str(REPO))

# Heavy imports (SimpleITK, torch, MONAI, radassets) happen inside the functions: demo generation
# uses multiprocessing "spawn", whose workers re-import this file, and must not pay for them.

THREADS = 2
PATCH_SIZE = 64
PATCH_PASSES = 5  # radassets' patch passes, their median its time (bench_patches)
CENTRAL = 16  # side of the central cube (the lesion) where both patch methods are compared
AIR_HU = -1024
MB = 1e6
ROUNDS = 3  # conversion: every tool converts every series this many times, taking turns; the fastest round counts


# --------------------------------------------------------------------------------------------
# Inputs


def default_demo_root() -> Path:
    home = os.environ.get("RADASSETS_HOME")
    return (Path(home).expanduser() if home else REPO / "var" / "data") / "demo"


def select_series(demo: Path, n: int) -> list[dict]:
    """The first ``n`` current, non-retest CT series (by PatientID), each with its files and seeds."""
    import pandas as pd

    index = pd.read_parquet(demo / "index" / "idc_index.parquet",
                            columns=["PatientID", "Modality", "SeriesInstanceUID", "crdc_series_uuid",
                                     "SeriesDescription", "aws_bucket"])
    ct = index[(index.Modality == "CT")
               & ~index.SeriesDescription.fillna("").str.contains("retest", case=False)]
    ct = ct.sort_values(["PatientID", "SeriesInstanceUID"]).head(n)

    # Seeds: GTV-1 centres (LPS mm) of the "test" scan, from the latest version of each series.
    lesions = pd.read_csv(demo / "truth" / "lesions.csv")
    lesions = lesions[(lesions.scan == "test") & (lesions.segment_label == "GTV-1")]
    latest = lesions.groupby("SeriesInstanceUID").series_version.transform("max")
    lesions = lesions[lesions.series_version == latest]

    out = []
    for i, row in enumerate(ct.itertuples()):
        bucket = demo / "bucket" / row.aws_bucket  # laid out as bucket/<bucket>/<crdc_series_uuid>/*.dcm
        files = sorted((bucket / row.crdc_series_uuid).glob("*.dcm"))
        if not files:
            raise SystemExit(f"no DICOM files for series {row.crdc_series_uuid} under {bucket}")
        seeds = lesions[lesions.SeriesInstanceUID == row.SeriesInstanceUID][["coordX", "coordY", "coordZ"]]
        out.append({"name": f"s{i:03d}_{row.PatientID}", "PatientID": row.PatientID, "files": files,
                    "bytes": sum(f.stat().st_size for f in files),
                    "seeds": [tuple(map(float, s)) for s in seeds.itertuples(index=False)]})
    return out


# --------------------------------------------------------------------------------------------
# 1. Conversion


def find_tool(name: str) -> str | None:
    """A tool on PATH, or beside this Python (a virtualenv's bin/, not on PATH when run directly)."""
    found = shutil.which(name)
    beside = Path(sys.executable).parent / name
    return found or (str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None)


def run_quiet(cmd: list[str]) -> None:
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")


def converters() -> tuple[dict[str, tuple[str, Callable[[Path, Path, str], None]]], list[str]]:
    """name → (output description, convert(folder, out_dir, name)); and lines for missing tools."""
    from radassets.imaging.ct import read_ct_series
    from radassets.imaging.volumes import write_image

    def radassets(folder: Path, out: Path, name: str) -> None:
        write_image(read_ct_series(sorted(folder.glob("*.dcm"))).image, out / f"{name}.nrrd")

    tools: dict = {"radassets": ("NRRD int16, gzip (ISA-L level 1)", radassets)}
    missing = []
    dcm2niix = find_tool("dcm2niix")
    if dcm2niix:
        # -v 0: quiet; the JSON sidecar (-b y) is dcm2niix's default output and is kept.
        def dcm2niix_z(z: str) -> Callable[[Path, Path, str], None]:
            return lambda folder, out, name: run_quiet(
                [dcm2niix, "-z", z, "-v", "0", "-f", name, "-o", str(out), str(folder)])
        tools["dcm2niix"] = ("NIfTI, uncompressed (-z n)", dcm2niix_z("n"))
        gz = "pigz" if shutil.which("pigz") else "internal zlib"
        tools["dcm2niix-gz"] = (f"NIfTI, gzip (-z y, {gz})", dcm2niix_z("y"))
    else:
        missing.append("dcm2niix not found: skipped (install: pip install dcm2niix)")
    plastimatch = find_tool("plastimatch")
    if plastimatch:
        tools["plastimatch"] = ("NRRD", lambda folder, out, name: run_quiet(
            [plastimatch, "convert", "--input", str(folder), "--output-img", str(out / f"{name}.nrrd")]))
    else:
        missing.append("plastimatch not found: skipped (install: pip install plastimatch)")
    return tools, missing


def nrrd_encoding(path: Path) -> str:
    """The ``encoding:`` field of a NRRD header (raw, gzip, ...)."""
    with open(path, "rb") as f:
        for line in f.read(4096).split(b"\n"):
            if line.lower().startswith(b"encoding:"):
                return line.split(b":", 1)[1].strip().decode()
            if not line.strip():
                break
    return "?"


def bench_conversion(series: list[dict], work: Path) -> tuple[list[dict], list[str]]:
    # Each series in its own folder, copied once: every tool reads the same files (page cache warm).
    for s in series:
        s["folder"] = work / "dicom" / s["name"]
        s["folder"].mkdir(parents=True)
        for f in s["files"]:
            shutil.copy2(f, s["folder"] / f.name)
    in_bytes = sum(s["bytes"] for s in series)
    tools, missing = converters()
    seconds_of = _conversion_rounds(series, tools, work, missing)
    results = []
    for tool, (output, _) in tools.items():
        if tool not in seconds_of:
            continue
        seconds, out = seconds_of[tool], work / "out" / tool / "round0"
        written = [p for p in out.iterdir() if p.is_file()]
        if tool == "plastimatch":  # say what it actually wrote rather than assume
            output += f", {nrrd_encoding(next(p for p in written if p.suffix == '.nrrd'))}"
        results.append({"tool": tool, "output": output, "seconds": seconds, "series": len(series),
                        "series_per_s": len(series) / seconds, "mb_per_s": in_bytes / MB / seconds,
                        "out_mb": sum(p.stat().st_size for p in written) / MB, "out_dir": str(out)})
    return results, missing


def _conversion_rounds(series: list[dict], tools: dict, work: Path, missing: list[str], rounds: int = ROUNDS
                       ) -> dict[str, float]:
    """tool → seconds for all the series, the fastest of ``rounds`` rounds; within a round the tools take turns, so
    that a change in the machine's load (other work on a shared machine) falls on every tool alike."""
    best: dict[str, float] = {}
    failed: set[str] = set()
    for tool in tools:
        (work / "warmup" / tool).mkdir(parents=True)
    for k in range(rounds):
        for tool, (_, convert) in tools.items():
            if tool in failed:
                continue
            try:
                if tool not in best:  # not counted: imports, caches, first exec
                    convert(series[0]["folder"], work / "warmup" / tool, series[0]["name"])
                out = work / "out" / tool / f"round{k}"  # a fresh folder: dcm2niix renames rather than overwrites
                out.mkdir(parents=True)
                started = time.perf_counter()
                for s in series:
                    convert(s["folder"], out, s["name"])
                best[tool] = min(best.get(tool, float("inf")), time.perf_counter() - started)
            except (RuntimeError, OSError) as e:
                if tool == "radassets":
                    raise
                failed.add(tool)  # a broken peer install must not stop the benchmark
                best.pop(tool, None)
                missing.append(f"{tool} failed, skipped: {e}")
    return best


def bench_series_checks(series: list[dict]) -> dict:
    """What telling a series' kind costs (localizer, screen, several stacks: ``radassets.imaging.series_kind``), on
    headers already read, as ``sort_and_validate`` runs it: the median of 5 passes over every series."""
    from radassets.imaging.ct import _read_headers
    from radassets.imaging.series_kind import excluded_reason, several_stacks

    headers = [_read_headers(sorted(s["folder"].iterdir())) for s in series]
    passes = []
    for _ in range(5):
        started = time.perf_counter()
        for h in headers:
            excluded_reason(h)
            several_stacks(h, 3)
        passes.append(time.perf_counter() - started)
    seconds = sorted(passes)[2]
    return {"series": len(series), "seconds": seconds, "ms_per_series": 1000 * seconds / len(series)}


def _min_ms(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` calls, in ms (the least disturbed by other work on a shared machine)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return 1000 * best


def bench_conversion_phases(series: list[dict], work: Path, repeats: int = 3) -> dict:
    """Where radassets' conversion time goes: each phase of ``read_ct_series`` + ``write_image`` timed on its own,
    per series (the fastest of ``repeats`` passes), in ms per series; and, on the lines marked "removed", what the
    steps that the conversion no longer takes cost (re-reading the first header, decoding the first slice when ITK
    reads it anyway, ITK's gzip level 2 and reading the file back for its sha256; the ITK series read, for plain
    series), for a before/after in one run.
    Returns the phases and the converted images (for the codec table)."""
    phases: dict[str, float] = {}
    images = []
    out = work / "phases"
    out.mkdir(parents=True, exist_ok=True)
    for s in series:
        ms, image = _series_phases(sorted(s["folder"].glob("*.dcm")), out / s["name"], repeats)
        images.append(image)
        for name, value in ms.items():
            phases[name] = phases.get(name, 0.0) + value / len(series)
    return {"ms_per_series": phases, "images": images}


def _series_phases(files: list[Path], stem: Path, repeats: int) -> tuple[dict[str, float], object]:
    """One series' phases (see ``bench_conversion_phases``), in ms, and its volume."""
    import hashlib

    import pydicom
    import SimpleITK as sitk
    from radassets.imaging import ct
    from radassets.imaging.nrrd_writer import write_nrrd
    from radassets.imaging.volumes import write_image

    ms = {"header reads (pydicom, every file)": _min_ms(lambda: ct._read_headers(files), repeats),
          "header + pixel data reads (pydicom, one pass)": _min_ms(lambda: ct._read_headers(files, {}), repeats),
          "validation (kinds, geometry) incl. header + pixel reads":
              _min_ms(lambda: ct._validated(files, ct.Tolerances(), {}), repeats)}
    pixels: dict[Path, bytes] = {}
    ordered, geometry, headers = ct._validated(files, ct.Tolerances(), pixels)
    ms["stored values -> int16 HU (plain series, ct._native_hu)"] = _min_ms(
        lambda: ct._native_hu(ordered, headers, pixels), repeats)
    hu = ct._native_hu(ordered, headers, pixels)
    if hu is not None:
        ms["grid as ITK's series reader gives it (two GDCM headers)"] = _min_ms(
            lambda: ct._as_itk_series_reads(hu, ordered), repeats)

    def itk_read() -> sitk.Image:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(p) for p in ordered])
        return reader.Execute()
    ms["ITK series read (GDCM; only for series outside the plain case)"] = _min_ms(itk_read, repeats)
    image = itk_read()
    uid = str(headers[0].get("SeriesInstanceUID", "?"))
    ms["ITK geometry cross-check"] = _min_ms(lambda: ct._check_itk_geometry(image, geometry, uid), repeats)
    ms["HU cast, min/max (to_volume)"] = _min_ms(lambda: ct.to_volume(image, geometry, uid, 0.0), repeats)
    volume = ct.to_volume(image, geometry, uid, 0.0).image
    path, itk_path = stem.with_suffix(".nrrd"), stem.with_name(stem.name + "-itk.nrrd")
    ms["NRRD write: ITK header + ISA-L gzip + sha256 while writing"] = _min_ms(lambda: write_nrrd(volume, path),
                                                                                repeats)
    data = path.read_bytes()
    ms["  of which sha256 (in memory)"] = _min_ms(lambda: hashlib.sha256(data).hexdigest(), repeats)
    ms["read_ct_series + write_image, as run"] = _min_ms(
        lambda: write_image(ct.read_ct_series(files).image, stem.with_name(stem.name + "-run.nrrd")), repeats)
    ms["removed: first header re-read"] = _min_ms(lambda: pydicom.dcmread(ordered[0], stop_before_pixels=True),
                                                  repeats)
    ms["removed: decode check of the first slice (pydicom)"] = _min_ms(
        lambda: ct._check_decodable(ordered[0], uid), repeats)
    ms["removed: ITK NRRD write, gzip level 2"] = _min_ms(
        lambda: sitk.WriteImage(volume, str(itk_path), True, imageIO="NrrdImageIO"), repeats)
    ms["removed: sha256 read back from the file"] = _min_ms(lambda: hashlib.sha256(itk_path.read_bytes()), repeats)
    return ms, volume


def codec_writers() -> dict[str, Callable]:
    """name → write(image, path) for the codec table; ITK's own levels and radassets' writer with each codec."""
    import SimpleITK as sitk
    from radassets.imaging.nrrd_writer import gzip_compressor, write_nrrd

    writers: dict[str, Callable] = {"ours raw": lambda image, path: write_nrrd(image, path, "raw")}
    for level in (1, 2, 6):
        writers[f"ITK gzip level {level}"] = (
            lambda image, path, level=level: sitk.WriteImage(image, str(path), True, level, imageIO="NrrdImageIO"))
    for level in (0, 1, 2):
        writers[f"ours ISA-L gzip level {level}"] = (
            lambda image, path, level=level: write_nrrd(image, path, "gzip", compressor=gzip_compressor(level)))
    try:
        from zlib_ng import zlib_ng

        def zlib_ng_1(chunks):
            compressor = zlib_ng.compressobj(1, zlib_ng.DEFLATED, 31)
            for chunk in chunks:
                yield compressor.compress(chunk)
            yield compressor.flush()
        writers["ours zlib-ng gzip level 1"] = lambda image, path: write_nrrd(image, path, "gzip", compressor=zlib_ng_1)
    except ImportError:
        pass
    return writers


def bench_codecs(images: list, work: Path, repeats: int = 3) -> list[dict]:
    """The codec table: each way of writing the volumes, with write ms (ITK's rows include reading the file back
    for its sha256, as the pipeline needs it; ours hash while writing), ``sitk.ReadImage`` ms, size ÷ raw, and
    whether SimpleITK (and pynrrd, if installed) read back exactly the voxels and geometry written."""
    import importlib.util


    import SimpleITK as sitk

    pynrrd = importlib.util.find_spec("nrrd") is not None
    # What SimpleITK reads back from ITK's own file: NRRD stores spacing × direction, so an oblique volume's
    # geometry may come back a few ulps off the image in memory, for every writer alike.
    (work / "codecs").mkdir(parents=True)
    references = []
    for k, image in enumerate(images):
        sitk.WriteImage(image, str(work / "codecs" / f"reference-{k}.nrrd"), True, imageIO="NrrdImageIO")
        references.append(sitk.ReadImage(str(work / "codecs" / f"reference-{k}.nrrd")))
    rows: list[dict] = []
    for name, write in codec_writers().items():
        folder = work / "codecs" / name.replace(" ", "_")
        folder.mkdir(parents=True)
        per_image = [_codec_on(write, image, reference, folder / f"{k}.nrrd", pynrrd, repeats)
                     for k, (image, reference) in enumerate(zip(images, references))]
        raw_bytes = rows[0]["bytes"] if rows else sum(r["bytes"] for r in per_image)  # the first row is raw
        rows.append({"codec": name, "write_ms": sum(r["write_ms"] for r in per_image) / len(images),
                     "read_ms": sum(r["read_ms"] for r in per_image) / len(images),
                     "bytes": sum(r["bytes"] for r in per_image),
                     "size_ratio": sum(r["bytes"] for r in per_image) / raw_bytes,
                     "opens_sitk": all(r["opens_sitk"] for r in per_image),
                     "opens_pynrrd": all(r["opens_pynrrd"] for r in per_image) if pynrrd else None})
    return rows


def _codec_on(write: Callable, image, reference, path: Path, pynrrd: bool, repeats: int) -> dict:
    """One volume written one way: write ms (with its sha256), read ms, bytes, and whether it reads back exactly
    as ``reference`` (ITK's own file of the same image, read back) does."""
    import hashlib

    import numpy as np
    import SimpleITK as sitk

    def write_and_hash() -> None:
        if write(image, path) is None:  # ITK's writer: the file read back for its sha256
            hashlib.sha256(path.read_bytes()).hexdigest()
    write_ms = _min_ms(write_and_hash, repeats)
    read_ms = _min_ms(lambda: sitk.ReadImage(str(path)), repeats)
    back = sitk.ReadImage(str(path))
    voxels = sitk.GetArrayViewFromImage(image)
    row = {"write_ms": write_ms, "read_ms": read_ms, "bytes": path.stat().st_size,
           "opens_sitk": bool(np.array_equal(sitk.GetArrayViewFromImage(back), voxels)
                              and back.GetOrigin() == reference.GetOrigin()
                              and back.GetSpacing() == reference.GetSpacing()
                              and back.GetDirection() == reference.GetDirection()), "opens_pynrrd": None}
    if pynrrd:
        import nrrd  # type: ignore[import-not-found]

        row["opens_pynrrd"] = bool(np.array_equal(nrrd.read(str(path))[0].T, voxels))
    return row


def print_conversion_details(phases: dict, codecs: list[dict]) -> None:
    print("\nCONVERSION PHASES  radassets, ms per series (fastest of 3 passes each; 'removed': steps no longer taken)")
    for name, ms in phases["ms_per_series"].items():
        print(f"  {name:<62} {ms:7.2f}")
    print("\nNRRD CODECS  on the same volumes, ms per volume (fastest of 3); write includes the sha256")
    print(f"  {'codec':<28} {'write ms':>9} {'read ms':>8} {'size/raw':>9} {'SimpleITK':>10} {'pynrrd':>7}")
    for r in codecs:
        pynrrd = "n/a" if r["opens_pynrrd"] is None else ("yes" if r["opens_pynrrd"] else "NO")
        print(f"  {r['codec']:<28} {r['write_ms']:>9.2f} {r['read_ms']:>8.2f} {r['size_ratio']:>9.3f} "
              f"{'yes' if r['opens_sitk'] else 'NO':>10} {pynrrd:>7}")


# --------------------------------------------------------------------------------------------
# 2. Patches


def sitk_reader_like_itkreader():
    """A MONAI ImageReader giving what ``ITKReader`` gives, read through SimpleITK.

    Used only when the ``itk`` package is absent (it is not a radassets dependency). SimpleITK
    wraps the same ITK NRRD reader; the array and meta follow ``ITKReader.get_data`` (MONAI 1.x):
    array indexed [x, y, z] (a transposed view, reverse_indexing=False) and an affine built from
    direction·spacing and origin, then converted LPS → RAS (x and y negated), space "RAS".
    """
    import numpy as np
    import SimpleITK as sitk
    from monai.data import ImageReader
    from monai.utils import MetaKeys, SpaceKeys

    class SimpleITKAsITKReader(ImageReader):
        def verify_suffix(self, filename) -> bool:
            return True

        def read(self, data, **kwargs):
            (path,) = data if isinstance(data, (list, tuple)) else (data,)  # LoadImage passes a tuple
            return sitk.ReadImage(str(path))

        def get_data(self, img):
            array = sitk.GetArrayViewFromImage(img).T
            spacing = np.asarray(img.GetSpacing())
            affine = np.eye(4)
            affine[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) @ np.diag(spacing)
            affine[:3, 3] = img.GetOrigin()
            affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS → RAS
            meta = {"spacing": spacing, MetaKeys.ORIGINAL_AFFINE: affine, MetaKeys.AFFINE: affine.copy(),
                    MetaKeys.SPACE: SpaceKeys.RAS, MetaKeys.SPATIAL_SHAPE: np.asarray(img.GetSize()),
                    MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan")}
            return array, meta

    return SimpleITKAsITKReader()


def fmcib_reference():
    """(load_and_resample(path) → MetaTensor, crop(image, seed_lps) → array [S, P, L], reader name).

    Matched to FMCIB's ``fmcib.preprocessing.get_transforms`` (AIM-Harvard/foundation-cancer-image-
    biomarker) and its ``SeedBasedPatchCropd(coord_orientation="LPS", global_coordinates=True)``:
    - LoadImaged(reader="ITKReader", image_only=True) → EnsureChannelFirstd → Spacingd(pixdim=1,
      mode="bilinear", align_corners=True, diagonal=True) → Orientationd(axcodes="LPS"), in FMCIB's
      order (resample, then reorient). Spacingd's padding_mode is left at MONAI's default
      ("border"), as FMCIB leaves it, rather than "zeros": it only touches voxels at the volume's
      edge, never the lesion;
    - the seed (LPS mm) becomes RAS by negating x and y (ITKReader's affines are RAS), then a voxel
      index through the inverse affine, truncated with int() as FMCIB does; the crop spans
      [c - 32, c + 32) on each axis; then the axes are transposed to [S, P, L] as FMCIB's
      Transposed(indices=(0, 3, 2, 1)) does.
    Not matched, on purpose or for lack of the package:
    - FMCIB's intensity scaling (ScaleIntensityRanged / NormalizeIntensityd) is left out, to compare
      HU with radassets; it costs one more pass over the whole volume, so the reference measured
      here is, if anything, faster than FMCIB's;
    - FMCIB clamps the crop to the volume and then SpatialPadd pads symmetrically (with 0, i.e.
      -1024 HU after its scaling), which moves a border lesion off-centre; here the crop is padded
      where it leaves the volume (-1024 HU), so the seed stays at the centre;
    - the fmcib package itself is not installed (heavy dependencies); its crop arithmetic is
      re-implemented in a few lines below, and when the ``itk`` package is missing the volume is
      read through SimpleITK into the same MetaTensor that ITKReader builds.
    """
    import importlib.util
    import logging
    import warnings

    import numpy as np
    import torch

    # MONAI's import-time notices (no GPU decoder; a future default of Orientationd) are noise here.
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"monai\.")
    from monai import transforms as mt

    if importlib.util.find_spec("itk"):
        reader, reader_name = "ITKReader", "MONAI ITKReader"
    else:
        reader = sitk_reader_like_itkreader()
        reader_name = "SimpleITK emulating MONAI ITKReader (pip install itk for the real one)"
    if importlib.util.find_spec("nibabel"):
        orient, orient_name = mt.Orientationd(keys="image", axcodes="LPS"), "MONAI Orientationd(LPS)"
    else:
        # Orientationd needs nibabel (not a radassets dependency). After Spacingd(diagonal=True) the
        # affine is diagonal and positive (RAS+), so reorienting to LPS is exactly flipping the first
        # two axes; Flipd does that and updates the affine the same way (checked in crop()).
        orient = mt.Flipd(keys="image", spatial_axis=(0, 1))
        orient_name = "MONAI Flipd(0, 1), i.e. Orientationd(LPS) here (pip install nibabel for Orientationd)"
    load_and_resample = mt.Compose([
        mt.LoadImaged(keys="image", reader=reader, image_only=True),
        mt.EnsureChannelFirstd(keys="image"),
        mt.Spacingd(keys="image", pixdim=1, mode="bilinear", align_corners=True, diagonal=True),
        orient,
    ])
    half = PATCH_SIZE // 2

    def crop(image, seed_lps) -> tuple[np.ndarray, np.ndarray]:
        """The [S, P, L] patch, and the LPS position of its voxel (32, 32, 32)."""
        affine = np.asarray(image.affine, dtype=float)
        # LPS orientation: the affine's diagonal is (-1, -1, +1) mm (RAS coordinates of an LPS grid).
        assert np.allclose(affine[:3, :3], np.diag([-1.0, -1.0, 1.0]), atol=1e-4), affine
        ras = np.array([-seed_lps[0], -seed_lps[1], seed_lps[2], 1.0])
        centre = np.array([int(v) for v in (np.linalg.inv(affine) @ ras)[:3]])
        lo, hi = centre - half, centre + half
        shape = np.array(image.shape[1:])
        src_lo, src_hi = np.clip(lo, 0, shape), np.clip(hi, 0, shape)
        patch = torch.full((PATCH_SIZE,) * 3, float(AIR_HU))
        if (src_hi > src_lo).all():
            dst_lo = src_lo - lo
            dst_hi = dst_lo + (src_hi - src_lo)
            patch[dst_lo[0]:dst_hi[0], dst_lo[1]:dst_hi[1], dst_lo[2]:dst_hi[2]] = torch.as_tensor(
                image[0, src_lo[0]:src_hi[0], src_lo[1]:src_hi[1], src_lo[2]:src_hi[2]])
        centre_ras = affine @ np.append(centre, 1.0)
        centre_lps = np.array([-centre_ras[0], -centre_ras[1], centre_ras[2]])
        return patch.permute(2, 1, 0).numpy(), centre_lps  # [L, P, S] → [S, P, L]

    return (lambda path: load_and_resample({"image": str(path)})["image"]), crop, f"{reader_name}; {orient_name}"


def bench_patches(series: list[dict], volumes: dict[str, Path]) -> dict:
    import numpy as np
    import SimpleITK as sitk
    from radassets.imaging.patches import PatchSpec, extract_patch, padded_fraction, read_volume

    spec = PatchSpec(size=PATCH_SIZE)
    jobs = [(s["name"], volumes[s["name"]], seed) for s in series for seed in s["seeds"]]
    if not jobs:
        return {"patches": 0}
    load_and_resample, crop, reader_name = fmcib_reference()
    masks = write_body_masks({name: path for name, path, _ in jobs})
    # Warm-up (not counted): first MONAI/torch calls and the first read of each method.
    extract_patch(read_volume(jobs[0][1]), jobs[0][2], spec)
    crop(load_and_resample(jobs[0][1]), jobs[0][2])

    def extract_all(paths: dict[str, Path]) -> tuple[list[np.ndarray], float]:
        """Every patch, and the median time of PATCH_PASSES passes: a pass takes a fifth of a second, the
        reference's a dozen seconds, so one hiccup of the machine would move ours alone."""
        times = []
        for _ in range(PATCH_PASSES):
            patches, started = [], time.perf_counter()
            for s in series:  # as extract_volume_patches: the volume opened once, however many seeds it has
                if s["seeds"]:
                    volume = read_volume(paths[s["name"]])
                    for seed in s["seeds"]:
                        patches.append(extract_patch(volume, seed, spec))
                        padded_fraction(volume, seed, spec)
            times.append(time.perf_counter() - started)
        return patches, statistics.median(times)

    ours, ours_s = extract_all(volumes)
    # The same volumes stored raw (not the pipeline's choice: 1.6x the disk), to show what the inflate costs.
    raw = {name: Path(f"{path.parent}/{path.stem}_raw.nrrd") for name, path in volumes.items()}
    for name, path in raw.items():
        sitk.WriteImage(sitk.ReadImage(str(volumes[name])), str(path), useCompression=False)
    ours_raw, ours_raw_s = extract_all(raw)
    assert all(np.array_equal(a, b) for a, b in zip(ours, ours_raw)), "a raw volume gave another patch"

    ref, centres, started = [], [], time.perf_counter()
    for _, path, seed in jobs:  # per seed: re-read and resample the whole volume, as FMCIB does
        patch, centre = crop(load_and_resample(path), seed)
        ref.append(patch)
        centres.append(centre)
    ref_s = time.perf_counter() - started
    phases = patch_phases(jobs, masks, spec)

    # Sanity: both patches must show the same place (not timed).
    # - radassets' voxel (32, 32, 32) lies at seed + 0.5 mm on each axis (for an even size the seed
    #   falls between voxels 31 and 32); FMCIB's lies on its 1 mm grid, which is anchored on the
    #   volume's corner, at the seed's index truncated by int(): up to ~1.5 mm per axis away. A
    #   wrong LPS/RAS conversion would put the two ~100 mm apart.
    # - Over a small lesion's edge (the central 16^3 holds lesion and lung, HU std ~200-300), that
    #   sub-voxel offset alone makes |dHU| large. So radassets' patch is also taken on the
    #   reference's exact grid (centred so that its voxel 32 falls on FMCIB's): both then sample the
    #   same points and must agree to interpolation round-off (< 1 HU).
    lo, hi = (PATCH_SIZE - CENTRAL) // 2, (PATCH_SIZE + CENTRAL) // 2

    def mad(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a[lo:hi, lo:hi, lo:hi].astype(float) - b[lo:hi, lo:hi, lo:hi]).mean())

    half_voxel = 0.5 * spec.spacing_mm
    same_seed = [mad(a, b) for a, b in zip(ours, ref)]
    offsets = [float(np.linalg.norm(c - (np.asarray(seed) + half_voxel))) for c, (_, _, seed) in zip(centres, jobs)]
    images: dict[Path, sitk.Image] = {}
    same_grid = [mad(extract_patch(images.setdefault(path, sitk.ReadImage(str(path))), c - half_voxel, spec), b)
                 for (_, path, _), c, b in zip(jobs, centres, ref)]
    n = len(jobs)
    return {"patches": n, "volumes": len({j[0] for j in jobs}), "reader": reader_name,
            "radassets_s": ours_s, "radassets_per_s": n / ours_s, "reference_s": ref_s, "reference_per_s": n / ref_s,
            "radassets_raw_s": ours_raw_s, "radassets_raw_per_s": n / ours_raw_s,
            "mad_hu_mean": float(np.mean(same_seed)), "mad_hu_max": float(np.max(same_seed)),
            "offset_mm_mean": float(np.mean(offsets)), "offset_mm_max": float(np.max(offsets)),
            "mad_same_grid_hu_mean": float(np.mean(same_grid)), "mad_same_grid_hu_max": float(np.max(same_grid)),
            "phases_ms": phases}


def write_body_masks(volumes: dict[str, Path]) -> dict[str, Path]:
    """A uint8 body mask (HU > -500) per volume, written as the pipeline writes its masks: the mask read of the
    phase table reads a file like a real one (codec, size), though no lesion mask comes with these series."""
    import SimpleITK as sitk
    from radassets.imaging.volumes import write_image

    return {name: write_image(sitk.Cast(sitk.ReadImage(str(path)) > -500, sitk.sitkUInt8),
                              path.with_name(f"{path.stem}_mask.nrrd"))
            for name, path in volumes.items()}


PHASES = {  # name → what it is, in the order of the table
    "header": "open: header (our parse + ITK ReadImageInformation)",
    "bounds": "box of the volume the patch samples (4 corners → index)",
    "read": "read the box (gzip: inflate the stream, keep the box)",
    "resample": "ITK linear resample onto the 64^3 grid",
    "round": "rint, clip, int16",
    "padded": "padded_fraction",
    "mask_read": "mask: open + read the box",
    "mask_resample": "mask: nearest-neighbour resample",
    "old_read": "(before) sitk.ReadImage of the whole volume",
    "old_crop": "(before) image[slices] of the whole volume",
    "old_padded": "(before) padded_fraction on the 64^3 grid of points",
}


def patch_phases(jobs: list[tuple[str, Path, tuple]], masks: dict[str, Path], spec, repeats: int = 3
                 ) -> dict[str, float]:
    """Milliseconds per patch of each step of the production path (``radassets.imaging.patches``), each the
    minimum over ``repeats`` passes over every seed (the machine is shared: the minimum is the least disturbed);
    then, for comparison, the steps of the path before region reads (whole volume, grid padded_fraction)."""
    import numpy as np
    import SimpleITK as sitk
    from radassets.imaging import patches
    from radassets.imaging.nrrd_region import open_volume

    def old_padded(image: sitk.Image, center) -> float:  # padded_fraction before its per-axis path
        axis = np.arange(spec.size) * spec.spacing_mm
        origin = spec.origin(center)
        grid = np.stack(np.meshgrid(axis + origin[0], axis + origin[1], axis + origin[2], indexing="ij"), axis=-1)
        matrix = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
        index = (grid.reshape(-1, 3) - np.array(image.GetOrigin())) @ np.linalg.inv(matrix).T
        return float(1.0 - ((index >= -0.5) & (index <= np.array(image.GetSize()) - 0.5)).all(axis=1).mean())

    best: dict[str, float] = {}
    for _ in range(repeats):
        spent = dict.fromkeys(PHASES, 0.0)

        @contextmanager
        def timed(name: str, spent: dict[str, float] = spent) -> Iterator[None]:
            started = time.perf_counter()
            yield
            spent[name] += time.perf_counter() - started

        for name, path, seed in jobs:  # every seed as if its volume had no other (about so in the demo)
            with timed("header"):
                volume = open_volume(path)
            with timed("bounds"):
                bounds = patches.crop_bounds(volume, seed, spec)
            assert bounds is not None, f"the seed {seed} is outside {path}"
            lo, hi = bounds
            with timed("read"):
                box = volume.region(lo, hi)
            with timed("resample"):
                values = patches.resample(box, seed, spec, sitk.sitkLinear, float(spec.pad_hu), sitk.sitkFloat32)
            with timed("round"):
                patches.to_hu(values)
            with timed("padded"):
                patches.padded_fraction(volume, seed, spec)
            with timed("mask_read"):
                mask_box = open_volume(masks[name]).region(lo, hi)
            with timed("mask_resample"):
                patches.resample(mask_box, seed, spec, sitk.sitkNearestNeighbor, 0.0, sitk.sitkUInt8)
        # The path before, in a pass of its own: its padded_fraction's matrix product leaves BLAS threads spinning
        # for a while, which would slow whatever comes next on a 2-core machine.
        for _, path, seed in jobs:
            with timed("old_read"):
                image = sitk.ReadImage(str(path))
            bounds = patches.crop_bounds(image, seed, spec)
            assert bounds is not None
            lo, hi = bounds
            with timed("old_crop"):
                image[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            with timed("old_padded"):
                old_padded(image, seed)
        for key, seconds in spent.items():
            best[key] = min(best.get(key, float("inf")), seconds / len(jobs) * 1e3)
    return best


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, default=None,
                        help="demo collection (default: $RADASSETS_HOME/demo, generated if missing; "
                             "RADASSETS_HOME defaults to var/data in the repository)")
    parser.add_argument("--series", type=int, default=20, help="number of CT series (default 20)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.series < 1:
        parser.error("--series must be at least 1")

    import SimpleITK as sitk
    import torch

    torch.set_num_threads(THREADS)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(THREADS)

    demo = args.demo
    if demo is None:
        from radassets.demo import DemoSpec, ensure_demo_collection

        demo = default_demo_root()
        print(f"demo collection: {demo} (generated if missing)", flush=True)
        ensure_demo_collection(Path(demo), DemoSpec())
    demo = Path(demo)
    if not (demo / "index" / "idc_index.parquet").is_file():
        parser.error(f"{demo} is not a demo collection (no index/idc_index.parquet)")

    series = select_series(demo, args.series)
    if len(series) < args.series:
        print(f"note: only {len(series)} CT series available (asked for {args.series})")
    slices = sum(len(s["files"]) for s in series)
    in_mb = sum(s["bytes"] for s in series) / MB
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="radassets-bench-") as tmp:
        work = Path(tmp)
        conversion, missing = bench_conversion(series, work)
        checks = bench_series_checks(series)
        phases = bench_conversion_phases(series, work)
        codecs = bench_codecs(phases.pop("images"), work)
        ours = next(r for r in conversion if r["tool"] == "radassets")
        volumes = {s["name"]: Path(ours["out_dir"]) / f"{s['name']}.nrrd" for s in series}
        patches = bench_patches(series, volumes)
    total = time.perf_counter() - wall

    print(f"\nCONVERSION  {len(series)} CT series, {slices} slices, {in_mb:.1f} MB of DICOM "
          f"({THREADS} threads; 1 warm-up series per tool, not counted; fastest of {ROUNDS} rounds, tools in turn)")
    print(f"{'tool':<13} {'output':<34} {'seconds':>8} {'series/s':>9} {'MB/s':>7} {'out MB':>7}")
    for r in conversion:
        print(f"{r['tool']:<13} {r['output']:<34} {r['seconds']:>8.2f} {r['series_per_s']:>9.2f} "
              f"{r['mb_per_s']:>7.1f} {r['out_mb']:>7.1f}")
    for line in missing:
        print(line)
    print("note: radassets also validates every header (slice spacing, gantry tilt, orientation, rescale),\n"
          "      cross-checks ITK's geometry, and writes gzip-compressed NRRD atomically; the peers only\n"
          "      convert, and write uncompressed files unless the output column says gzip.")
    share = checks["seconds"] / ours["seconds"]
    print(f"series kind checks (localizer, screen, several stacks) on the read headers: "
          f"{checks['ms_per_series']:.2f} ms per series, {share:.1%} of radassets' conversion time")
    print_conversion_details(phases, codecs)

    if patches["patches"]:
        print(f"\nPATCHES  {patches['patches']} GTV-1 seeds in {patches['volumes']} volumes, "
              f"{PATCH_SIZE}^3 at 1 mm (1 warm-up, not counted)")
        print(f"{'method':<58} {'seconds':>8} {'patches/s':>10}")
        print(f"{'radassets: read the box each patch needs, then resample':<58} "
              f"{patches['radassets_s']:>8.2f} {patches['radassets_per_s']:>10.2f}")
        print(f"{'  the same from raw volumes (not stored so: 1.6x the disk)':<58} "
              f"{patches['radassets_raw_s']:>8.2f} {patches['radassets_raw_per_s']:>10.2f}")
        print(f"{'FMCIB reference: per seed, read + resample whole volume':<58} "
              f"{patches['reference_s']:>8.2f} {patches['reference_per_s']:>10.2f}")
        print(f"reference: {patches['reader']}")
        print(f"sanity, central {CENTRAL}^3 (lesion): patch centres {patches['offset_mm_mean']:.2f} mm apart "
              f"(max {patches['offset_mm_max']:.2f}; FMCIB's grid is anchored on the volume and int()-truncated)")
        print(f"  mean |dHU| same seed:          {patches['mad_hu_mean']:6.1f} (max {patches['mad_hu_max']:.1f})"
              f"  <- that offset across the lesion's edge")
        print(f"  mean |dHU| on FMCIB's grid:    {patches['mad_same_grid_hu_mean']:6.1f} "
              f"(max {patches['mad_same_grid_hu_max']:.1f})  <- same points sampled: geometry agrees")
        phases = patches["phases_ms"]
        print(f"radassets per patch, ms (minimum of 3 passes; {THREADS} ITK threads):")
        for key, label in PHASES.items():
            print(f"  {label:<58} {phases[key]:7.2f}")
        now = sum(phases[k] for k in ("header", "bounds", "read", "resample", "round", "padded"))
        before = sum(phases[k] for k in ("old_read", "bounds", "old_crop", "resample", "round", "old_padded"))
        print(f"  {'CT patch + padded_fraction: now / before the region read':<58} {now:7.2f} / {before:.2f}")
    else:
        print("\nPATCHES  no GTV-1 seeds for the selected series: skipped")
    print(f"\ntotal {total:.1f} s")

    ratios = {}
    for r in conversion:
        if r["tool"] != "radassets":
            ratios[f"conversion radassets/{r['tool']}"] = ours["series_per_s"] / r["series_per_s"]
    if patches["patches"]:
        ratios["patches radassets/fmcib_reference"] = patches["radassets_per_s"] / patches["reference_per_s"]
        ratios["patches radassets_raw_volumes/fmcib_reference"] = (patches["radassets_raw_per_s"]
                                                                   / patches["reference_per_s"])
    for name, value in ratios.items():
        print(f"RATIO {name} = {value:.2f}")

    if args.json:
        for r in conversion:
            r.pop("out_dir", None)  # a temporary folder, gone now
        args.json.write_text(json.dumps({
            "demo": str(demo), "series": len(series), "slices": slices, "input_mb": in_mb, "threads": THREADS,
            "conversion": conversion, "series_checks": checks, "conversion_phases": phases, "codecs": codecs,
            "missing_tools": missing, "patches": patches,
            "ratios": ratios,
            "total_s": total}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
