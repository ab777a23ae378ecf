"""One dataset version's series → CT volumes and tumour masks, with one QC row per series.

A bad series never stops the rest: its QC row carries a failure ``code`` and a message naming
the series and the cause, and the caller decides (by the failed fraction) whether the partition
fails. Any exception while reading or converting one series or mask file is that item's failure
(``unreadable_file``, ``mask_unreadable``, or ``conversion_error`` with the exception's type,
message and where it was raised), so a bug shows in the QC table rather than vanishing. The
files of a series come from ``files_of``, which may refuse a series whose files changed since
they were indexed (``changed_since_indexed``, raised as a ``QCError``). Each mask (SEG or
RTSTRUCT) is placed on the grid of the CT it references; a structure set drawn on several CT series
places each ROI on the CT its contours name (its segment rows name that CT, its QC row's ``referenced_ct``
lists them all). Only the segments the dataset version selects are written. Open and point contours of a
structure set are counted in the QC row's ``contours_skipped`` (and named in its message).

Where the files are: the series' DICOM files and ``out_dir`` are local, or on an object store (a ``UPath``:
``s3://``, ``gs://``). Each task stages its series' files to a local scratch folder (``radassets.staging``: the
files themselves when local), converts them, and writes each NRRD through ``radassets.storage.atomic_path`` (a
local temporary file, renamed or put whole). The records (QC rows, segments, manifest) name files relative to the
artifact root (``Layout.relative``), messages included, so that they are the same bytes on every root; readers
resolve them with ``Layout.resolve``. Without a layout (a library call on a bare folder) they are named as given.

Files (every one written to a temporary name and renamed, or put whole):
- ``ct/<crdc_series_uuid>.nrrd``: int16 HU, ``space: left-posterior-superior``, gzip. NRRD keeps
  the ITK/LPS geometry exactly and opens in 3D Slicer.
- ``masks/<crdc_series_uuid of the mask>/<segment number>.nrrd``: uint8 0/1 on the CT's grid.
- ``qc.parquet`` (one row per series), ``segments.parquet`` (one row per written segment) and
  ``manifest.json`` (settings, both tables, content hash), written last.

A rerun with the same settings reuses every volume whose file still has its recorded sha256:
IDC series versions (crdc_series_uuid) are immutable, so the same settings give the same volume.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import SimpleITK as sitk

from radassets.dataplane import IN_PROCESS, Compute, map_items
from radassets.imaging.ct import (QCError, SeriesError, SeriesExcluded, Tolerances, describe_exception, failure_qc,
                                  read_ct_series)
from radassets.imaging.masks import (MaskError, MaskHeader, MaskReading, read_mask_header, read_mask_segments,
                                     read_rtstruct, rois_by_series, select_segments)
from radassets.imaging.nrrd_writer import write_nrrd
from radassets.layout import Layout, as_path
from radassets.reports import ItemFailure
from radassets.staging import local_file, local_files
from radassets.storage import atomic_path, atomic_write_json, sha256_file, sha256_json

MASK_MODALITIES = ("SEG", "RTSTRUCT")
Progress = Callable[[int, int, str], None]
FilesOf = Callable[[dict], Sequence[Path]]

# Columns of qc.parquet: a stable schema, so partitions can be compared and queried together. What
# describes one run rather than its output (which volumes it reused, how long each took) is kept out of
# the files, so the same inputs and settings always give the same bytes, however often the step ran
# or was interrupted; the run's report (and the asset's metadata) still has it.
QC_COLUMNS = {
    "PatientID": pa.string(), "Modality": pa.string(), "SeriesInstanceUID": pa.string(),
    "crdc_series_uuid": pa.string(), "status": pa.string(), "code": pa.string(), "message": pa.string(),
    "slices": pa.int64(), "rows": pa.int64(), "columns": pa.int64(),
    "spacing_x": pa.float64(), "spacing_y": pa.float64(), "spacing_z": pa.float64(),
    "transfer_syntax": pa.string(), "hu_min": pa.int64(), "hu_max": pa.int64(),
    "FrameOfReferenceUID": pa.string(), "referenced_ct": pa.string(), "labels": pa.string(),
    "selected_labels": pa.string(), "path": pa.string(), "sha256": pa.string(),
    "sop_class": pa.string(),  # a multi-frame CT's SOP class name; null for a series of single-frame files
    # Only for a CT resampled onto a regular grid (gantry tilt, uneven gaps; null otherwise): the tilt found,
    # what was corrected and the acquired slices' geometry (JSON), on which its masks are placed first.
    "tilt_degrees": pa.float64(), "regrid": pa.string(), "native_grid": pa.string(),
    "contours_skipped": pa.int64(),  # RTSTRUCT: open and point contours not filled; null for masks without any
}
RUN_ONLY = ("reused", "seconds")
SEGMENT_COLUMNS = {
    "PatientID": pa.string(), "SeriesInstanceUID": pa.string(), "crdc_series_uuid": pa.string(),
    "mask_SeriesInstanceUID": pa.string(), "mask_crdc_series_uuid": pa.string(), "mask_Modality": pa.string(),
    "segment_number": pa.int64(), "segment_label": pa.string(), "voxels": pa.int64(), "volume_ml": pa.float64(),
    "ct_path": pa.string(), "mask_path": pa.string(),
}


@dataclass(frozen=True)
class SegmentSelection:
    """Which segments of a mask are kept: labels (regular expressions) and a rule."""

    labels: tuple[str, ...] | None = None
    rule: str = "all"  # labels | largest | all


@dataclass(frozen=True)
class ConversionSettings:
    tolerances: Tolerances = field(default_factory=Tolerances)
    selection: SegmentSelection = field(default_factory=SegmentSelection)

    def as_dict(self) -> dict[str, Any]:
        return {"tolerances": asdict(self.tolerances), "selection": asdict(self.selection),
                "ct_reader": f"pydicom {pydicom.__version__} + SimpleITK {sitk.Version.VersionString()}",
                "volume_format": "NRRD int16 HU, LPS, gzip", "mask_resampling": "nearest neighbour onto the CT grid",
                "regrid": "gantry tilt and uneven gaps: linear onto dcm2niix's grid, filled with the series' "
                          "lowest HU; masks placed on the acquired slices, then nearest neighbour"}

    @property
    def hash(self) -> str:
        return sha256_json(self.as_dict())


@dataclass(frozen=True)
class VolumesReport:
    """What ``convert_dataset`` did: one QC row per series and the segments found (as written)."""

    out_dir: Path
    settings: dict[str, Any]
    qc: list[dict[str, Any]]
    segments: list[dict[str, Any]]
    places: dict[str, int] = field(default_factory=dict)  # where the series were converted (dataplane.Mapped)

    @property
    def failures(self) -> list[ItemFailure]:
        """The series that could not be converted, by SeriesInstanceUID, with their QC code."""
        return [ItemFailure("volumes", r["SeriesInstanceUID"], r["message"], patient=r["PatientID"],
                            series=r["SeriesInstanceUID"], code=r["code"]) for r in self.qc if r["status"] == "failed"]

    @property
    def exclusions(self) -> list[dict[str, Any]]:
        """The series left out as not volumes (localizers, screens, other modalities), with their reasons."""
        return [{"PatientID": r["PatientID"], "SeriesInstanceUID": r["SeriesInstanceUID"], "Modality": r["Modality"],
                 "code": r["code"], "message": r["message"]} for r in self.qc if r["status"] == "excluded"]

    @property
    def series(self) -> int:
        return len(self.qc)

    @property
    def excluded(self) -> int:
        return sum(r["status"] == "excluded" for r in self.qc)

    @property
    def failed(self) -> int:
        return sum(r["status"] == "failed" for r in self.qc)

    @property
    def failed_fraction(self) -> float:
        """Failed over the series meant to be converted: excluded series (not volumes) do not count."""
        considered = self.series - self.excluded
        return self.failed / considered if considered else 0.0

    @property
    def ct_converted(self) -> int:
        return sum(r["status"] == "ok" for r in self.qc if r["Modality"] == "CT")

    @property
    def masks_converted(self) -> int:
        return sum(r["status"] == "ok" for r in self.qc if r["Modality"] in MASK_MODALITIES)

    @property
    def reused(self) -> int:
        return sum(bool(r.get("reused")) for r in self.qc)

    @property
    def failures_by_code(self) -> dict[str, int]:
        return _count(f.code for f in self.failures)

    @property
    def excluded_by_code(self) -> dict[str, int]:
        return _count(r["code"] for r in self.exclusions)

    def summary(self) -> dict[str, Any]:
        """The manifest's ``summary`` (less ``RUN_ONLY``), as written."""
        return {
            "series": self.series, "failed": self.failed, "failed_fraction": self.failed_fraction,
            "ct_converted": self.ct_converted,
            "ct_failed": sum(r["status"] == "failed" for r in self.qc if r["Modality"] == "CT"),
            "masks_converted": self.masks_converted, "segments": len(self.segments), "reused": self.reused,
            "failures_by_code": self.failures_by_code, "excluded": self.excluded,
            "excluded_by_code": self.excluded_by_code,
        }

    def metadata(self) -> dict[str, Any]:
        """The counts an asset shows (plain values)."""
        return {"series": self.series, "ct_converted": self.ct_converted, "masks_converted": self.masks_converted,
                "segments": len(self.segments), "failed": self.failed, "excluded": self.excluded,
                "reused": self.reused, "workers_used": len(self.places)}

    @property
    def content_hash(self) -> str:
        return sha256_json({"settings": self.settings,
                            "qc": sorted((r["crdc_series_uuid"], r["status"], r.get("sha256")) for r in self.qc),
                            "segments": sorted((r["mask_crdc_series_uuid"], r["segment_number"]) for r in self.segments)})


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def write_image(image: sitk.Image, path: Path) -> Path:
    _write_nrrd(image, path)
    return path


def _write_nrrd(image: sitk.Image, path: Path) -> str:
    """Write ``image`` as gzip NRRD at ``path`` (local or on a store); its sha256, hashed as the local file is
    written, before it is renamed or put (not read back). The header is ITK's; the gzip stream is ISA-L's
    (``radassets.imaging.nrrd_writer``)."""
    with atomic_path(path) as tmp:
        digest = write_nrrd(image, tmp)
    return digest


def recorded(layout: Layout | None, path: Path | str) -> str:
    """How the records name a file: relative to the artifact root; as given without a layout."""
    return layout.relative(path) if layout is not None else str(path)


def resolved(layout: Layout | None, name: str) -> Path:
    """The file a record names (relative to the root, or an absolute path or URL of an earlier version)."""
    return layout.resolve(name) if layout is not None else cast(Path, as_path(name))


def _message_with_names(qc: dict[str, Any], staged: Sequence[Path], files: Sequence[Path],
                        layout: Layout | None) -> dict[str, Any]:
    """``qc`` with each staged (local scratch) file in its message replaced by the record's name of the file:
    a failure reads the same whether the series was converted where it lies or from a copy. Longest first, so
    that no path is replaced inside a longer one."""
    message = qc.get("message")
    if not message:
        return qc
    for local, name in sorted(zip(map(str, staged), [recorded(layout, f) for f in files]),
                              key=lambda pair: -len(pair[0])):
        message = message.replace(local, name)
    return dict(qc, message=message)


def write_table(rows: list[dict], columns: dict[str, pa.DataType], path: Path) -> Path:
    schema = pa.schema(list(columns.items()))
    table = pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in rows], schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _previous(out_dir: Path, settings_hash: str, layout: Layout | None) -> dict[str, dict]:
    """QC rows of the last run with the same settings whose file is intact, by crdc_series_uuid (their path
    named as this run names it: an absolute path of an earlier version becomes relative to the root)."""
    manifest = out_dir / "manifest.json"
    if not manifest.is_file():
        return {}
    old = json.loads(manifest.read_text())
    if old.get("settings_hash") != settings_hash:
        return {}
    intact = {}
    for r in old["qc"]:
        if r["Modality"] != "CT" or r["status"] != "ok" or not r.get("path"):
            continue
        path = resolved(layout, r["path"])
        if path.is_file() and sha256_file(path) == r.get("sha256"):
            intact[r["crdc_series_uuid"]] = dict(r, path=recorded(layout, path))
    return intact


def _base(row: dict) -> dict[str, Any]:
    return {k: row[k] for k in ("PatientID", "Modality", "SeriesInstanceUID", "crdc_series_uuid")}


def _convert_ct(row: dict, files: Sequence[Path], out_dir: Path, tol: Tolerances,
                layout: Layout | None) -> dict[str, Any]:
    """``files``: local paths (staged); the volume is written to ``out_dir`` (local or on a store)."""
    try:
        volume = read_ct_series(files, tol)
    except SeriesExcluded as e:
        return dict(failure_qc(files, e), status="excluded", **_base(row))
    except SeriesError as e:
        return dict(failure_qc(files, e), **_base(row))
    except Exception as e:  # noqa: BLE001 - one series' failure, recorded with its type and origin
        error = SeriesError("conversion_error", row["SeriesInstanceUID"], describe_exception(e))
        return dict(failure_qc(files, error), **_base(row))
    path = out_dir / "ct" / f"{row['crdc_series_uuid']}.nrrd"
    digest = _write_nrrd(volume.image, path)
    frame = volume.frame_of_reference or \
        str(pydicom.dcmread(files[0], stop_before_pixels=True).get("FrameOfReferenceUID", "")) or None
    qc = {k: v for k, v in volume.qc.items() if k in QC_COLUMNS}
    return dict(qc, **_base(row), FrameOfReferenceUID=frame, path=recorded(layout, path), sha256=digest, reused=False)


def _find_ct(header: MaskHeader, row: dict, cts: list[dict]) -> dict:
    """The CT a mask belongs to: the series it references, else the patient's only CT on its frame."""
    by_uid = {c["SeriesInstanceUID"]: c for c in cts}
    for uid in header.referenced_series:
        if uid in by_uid:
            return by_uid[uid]
    same_frame = [c for c in cts if c["PatientID"] == row["PatientID"]
                  and header.frame_of_reference and c.get("FrameOfReferenceUID") == header.frame_of_reference]
    if len(same_frame) == 1:
        return same_frame[0]
    refs = ", ".join(header.referenced_series) or "none"
    raise MaskError("no_reference", header.series_uid,
                    f"references CT series {refs}, none of which is in this dataset version"
                    + (f" ({len(same_frame)} CT series share its frame of reference)" if same_frame else ""))


def _placements(header: MaskHeader, row: dict, cts: list[dict]) -> list[tuple[dict, list[int] | None]]:
    """Where a mask's segments go: (CT row, the ROI numbers placed on it, None for all). A SEG, and a structure
    set whose ROIs were all drawn on one series (or name no image), go to one CT (``_find_ct``); a structure set
    drawn on several series places each ROI on the CT its contours name (``rois_by_series``)."""
    groups = rois_by_series(header) if header.modality == "RTSTRUCT" else {}
    named = [uid for uid in groups if uid is not None]
    if len(named) <= 1:
        # Drawn on one series: that one, even where the structure set lists others (the series its contours name).
        return [(_find_ct(replace(header, referenced_series=(named[0],)) if named else header, row, cts), None)]
    placed: dict[str, tuple[dict, list[int]]] = {}
    for uid, numbers in groups.items():
        # An ROI naming no listed image goes where the whole structure set would go.
        ct = _find_ct(header if uid is None else replace(header, referenced_series=(uid,)), row, cts)
        placed.setdefault(ct["SeriesInstanceUID"], (ct, []))[1].extend(numbers)
    return [(ct, sorted(numbers)) for _, (ct, numbers) in sorted(placed.items())]


def _segments_on(ct: dict, rois: list[int] | None, path: Path, header: MaskHeader,
                 layout: Layout | None) -> tuple[sitk.Image, MaskReading]:
    """The CT image and the mask's segments (those of ``rois``) on its grid."""
    if ct["status"] != "ok":
        raise MaskError("no_reference", header.series_uid,
                        f"its CT {ct['SeriesInstanceUID']} could not be converted ({ct['code']})")
    with local_file(resolved(layout, ct["path"])) as ct_file:
        image = sitk.ReadImage(str(ct_file))
    # A regridded CT (gantry tilt, uneven gaps): its masks were drawn on the acquired slices, placed there first.
    native = json.loads(ct["native_grid"]) if ct.get("native_grid") else None
    if header.modality == "RTSTRUCT":
        return image, read_rtstruct(path, image, ct.get("FrameOfReferenceUID"), rois, native)
    return image, MaskReading(read_mask_segments(path, image, ct.get("FrameOfReferenceUID"), native))


def _convert_mask(row: dict, files: Sequence[Path], cts: list[dict], out_dir: Path,
                  selection: SegmentSelection, layout: Layout | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``files``: local paths (staged); the CT volumes are read from where their QC rows name them."""
    qc = dict(_base(row), status="failed", reused=False)
    started = time.monotonic()
    try:
        if len(files) != 1:
            raise MaskError("mask_unreadable", row["SeriesInstanceUID"], f"{len(files)} files; one SEG/RTSTRUCT object expected")
        header = read_mask_header(files[0])
        placements = _placements(header, row, cts)
        qc["referenced_ct"] = ", ".join(ct["SeriesInstanceUID"] for ct, _ in placements)
        placed = [(ct, *_segments_on(ct, rois, files[0], header, layout)) for ct, rois in placements]
    except MaskError as e:
        return dict(qc, code=e.code, message=str(e)), []
    except Exception as e:  # noqa: BLE001 - one mask's failure, recorded with its type and origin
        where = f" ({files[0]})" if len(files) == 1 else ""
        return dict(qc, code="mask_unreadable",
                    message=f"mask {row['SeriesInstanceUID']}{where}: {describe_exception(e)}"), []
    segments = [s for _, _, reading in placed for s in reading.segments]
    chosen = select_segments(segments, list(selection.labels) if selection.labels else None, selection.rule)
    qc.update(labels=json.dumps([s.label for s in segments]), selected_labels=json.dumps([s.label for s in chosen]))
    skipped = MaskReading([], {k: v for _, _, r in placed for k, v in r.skipped.items()},
                              [label for _, _, r in placed for label in r.without_area])
    if skipped.skipped:  # null for a mask without any (every SEG)
        qc.update(contours_skipped=skipped.contours_skipped, message=f"mask {row['SeriesInstanceUID']}: {skipped.note()}")
    empty = [s.label for s in chosen if s.voxels == 0]
    if empty:
        return dict(qc, code="empty_mask", message=f"mask {row['SeriesInstanceUID']}: segment(s) {empty} have no voxel "
                                                      f"on the CT grid"), []
    segment_rows = []
    for ct, image, reading in placed:
        voxel_ml = float(image.GetSpacing()[0] * image.GetSpacing()[1] * image.GetSpacing()[2]) / 1000.0
        for s in (s for s in chosen if any(s is mine for mine in reading.segments)):
            path = write_image(s.image, out_dir / "masks" / row["crdc_series_uuid"] / f"{s.number}.nrrd")
            segment_rows.append({
                "PatientID": row["PatientID"], "SeriesInstanceUID": ct["SeriesInstanceUID"],
                "crdc_series_uuid": ct["crdc_series_uuid"], "mask_SeriesInstanceUID": row["SeriesInstanceUID"],
                "mask_crdc_series_uuid": row["crdc_series_uuid"], "mask_Modality": row["Modality"],
                "segment_number": s.number, "segment_label": s.label, "voxels": s.voxels,
                "volume_ml": round(s.voxels * voxel_ml, 4), "ct_path": ct["path"], "mask_path": recorded(layout, path),
            })
    return dict(qc, status="ok", seconds=round(time.monotonic() - started, 3)), segment_rows


def convert_ct_task(item: tuple[dict, list[Path], Path, Tolerances, Layout | None]) -> dict[str, Any]:
    """One CT series → its volume (a data-plane task: plain data in, its QC row out). Its files are staged
    locally (a local series is read where it lies) and removed when done."""
    row, files, out_dir, tolerances, layout = item
    with local_files(files) as staged:
        qc = _convert_ct(row, staged, cast(Path, as_path(out_dir)), tolerances, layout)
    return _message_with_names(qc, staged, files, layout)


def convert_mask_task(item: tuple[dict, list[Path], list[dict], Path, SegmentSelection, Layout | None]
                      ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One SEG or RTSTRUCT → its segments on its CT's grid (a data-plane task)."""
    row, files, ct_rows, out_dir, selection, layout = item
    with local_files(files) as staged:
        qc, segments = _convert_mask(row, staged, ct_rows, cast(Path, as_path(out_dir)), selection, layout)
    return _message_with_names(qc, staged, files, layout), segments


def _unavailable(row: dict, files_of: FilesOf, what: str) -> tuple[dict[str, Any] | None, list[Path]]:
    """The QC row of a series that cannot be converted (not downloaded, files refused), else its files."""
    if row.get("status") == "failed":
        return dict(_base(row), status="failed", code="not_downloaded",
                    message=f"{what} {row['SeriesInstanceUID']}: DICOM not available ({row.get('reason')})"), []
    try:
        return None, list(files_of(row))
    except QCError as e:
        return dict(_base(row), status="failed", code=e.code, message=str(e)), []


def convert_dataset(series: Sequence[dict], files_of: FilesOf, out_dir: Path,
                    settings: ConversionSettings = ConversionSettings(),
                    progress: Progress | None = None, compute: Compute = IN_PROCESS,
                    layout: Layout | None = None, excluded: Sequence[dict] = ()) -> VolumesReport:
    """Convert every series of a ``dicom`` manifest (rows with PatientID, Modality, SeriesInstanceUID,
    crdc_series_uuid, status). CTs first, then each mask on its CT's grid; the series of each phase are
    ``radassets.dataplane`` tasks, run where ``compute`` says, their rows kept in the manifest's order.
    ``layout``: the artifact root that the records name files relative to (see the module docstring).
    ``excluded``: series the cohort left out as not volumes (rows with their ``reason``), listed in the QC table."""
    out_dir = cast(Path, as_path(out_dir))
    reusable = _previous(out_dir, settings.hash, layout)
    cts = [r for r in series if r["Modality"] == "CT"]
    masks = [r for r in series if r["Modality"] in MASK_MODALITIES]
    others = [r for r in series if r["Modality"] != "CT" and r["Modality"] not in MASK_MODALITIES]
    total = len(cts) + len(masks)
    done = 0
    places: Counter[str] = Counter()

    def tick(qc: dict) -> None:
        nonlocal done
        done += 1
        if progress:
            what = f"failed ({qc['code']}): {qc['message']}" if qc["status"] == "failed" else \
                f"{'reused' if qc.get('reused') else 'ok'}: {qc['Modality']} {qc['SeriesInstanceUID']}"
            progress(done, total, what)

    # CTs: what the driver can tell at once (not downloaded, files changed, a volume to reuse), then the rest.
    ct_rows: list[dict[str, Any] | None] = []
    to_convert: list[tuple[int, tuple]] = []
    for row in cts:
        qc, files = _unavailable(row, files_of, "series")  # files asked even for a reusable volume: it may refuse
        if qc is None and row["crdc_series_uuid"] in reusable:
            qc = dict(reusable[row["crdc_series_uuid"]], reused=True)
        if qc is None:
            to_convert.append((len(ct_rows), (row, files, out_dir, settings.tolerances, layout)))
        else:
            tick(qc)
        ct_rows.append(qc)
    converted = map_items(convert_ct_task, [item for _, item in to_convert], compute,
                          progress=lambda _done, _total, qc: tick(qc), cost=lambda item: len(item[1]))  # slices
    places.update(converted.places)
    for (i, _), qc in zip(to_convert, converted.results):
        ct_rows[i] = qc
    cts_done = [r for r in ct_rows if r is not None]

    mask_rows: list[dict[str, Any] | None] = []
    to_place: list[tuple[int, tuple]] = []
    for row in masks:
        qc, files = _unavailable(row, files_of, "mask")
        if qc is None:
            to_place.append((len(mask_rows), (row, files, cts_done, out_dir, settings.selection, layout)))
        else:
            tick(qc)
        mask_rows.append(qc)
    placed = map_items(convert_mask_task, [item for _, item in to_place], compute,
                       progress=lambda _done, _total, result: tick(result[0]))
    places.update(placed.places)
    found_by_mask: dict[int, list[dict[str, Any]]] = {}
    for (i, _), (qc, found) in zip(to_place, placed.results):
        mask_rows[i] = qc
        found_by_mask[i] = found
    segments = [s for i in range(len(mask_rows)) for s in found_by_mask.get(i, [])]
    for row in others:  # e.g. SR or PT series that a selection let through: recorded, not converted
        mask_rows.append(dict(_base(row), status="excluded", code="modality_not_converted",
                              message=f"series {row['SeriesInstanceUID']}: modality {row['Modality']} is not converted"))
    for row in excluded:  # never fetched: the cohort's index showed they are not volumes
        mask_rows.append(dict(_base(row), status="excluded", code="excluded_by_index",
                              message=f"series {row['SeriesInstanceUID']}: {row['reason']}"))
    if compute.record is not None:  # the tasks' rows were recorded where they ran; these rows were decided here
        by_tasks = ({i for i, _ in to_convert}, {i for i, _ in to_place})
        decided_here = [r for i, r in enumerate(ct_rows) if i not in by_tasks[0]]
        decided_here += [r for i, r in enumerate(mask_rows) if i not in by_tasks[1]]
        if decided_here:
            compute.record(decided_here)
    report = VolumesReport(out_dir, settings.as_dict(), [r for r in ct_rows + mask_rows if r is not None],
                           segments, dict(places))
    write_table(report.qc, QC_COLUMNS, out_dir / "qc.parquet")
    write_table(report.segments, SEGMENT_COLUMNS, out_dir / "segments.parquet")
    # The manifest is written last: it marks a complete partition and is what a rerun trusts.
    summary = {k: v for k, v in report.summary().items() if k not in RUN_ONLY}
    atomic_write_json(out_dir / "manifest.json", {
        "settings": report.settings, "settings_hash": settings.hash, "summary": summary,
        "content_hash": report.content_hash,
        "qc": [{k: v for k, v in r.items() if k not in RUN_ONLY} for r in report.qc], "segments": report.segments,
    })
    return report

