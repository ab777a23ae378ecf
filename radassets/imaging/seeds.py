"""Seed points: one row per lesion, in physical LPS millimetres (ITK/DICOM patient coordinates).

From a mask, the seed is the centroid of the segment's voxel centres on the CT grid. From a
published table, it is the table's point, assigned to the CT series it names (by
SeriesInstanceUID, or by PatientID when the patient has exactly one CT series in the cohort).
Where a dataset has both, every mask seed gets the distance to the nearest published point of
the same series or patient (and label, when the table has a label column), and a flag when
they disagree by more than a threshold (10 mm by default).

``seed_id`` is stable across reruns and dataset versions: a hash of the CT series version
(crdc_series_uuid), the mask series version and the segment number (or the reference row).

The volumes and masks (``ct_path``, ``mask_path``) and the reference table are paths here, local or on an object
store (``UPath``); a file on a store is read from a local copy (``radassets.staging``). The step
(``radassets.imaging.pipeline.run_seeds``) resolves the names its records hold and names them again when it writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import SimpleITK as sitk

from radassets.dataplane import IN_PROCESS, Compute, map_items
from radassets.imaging.masks import centroid_lps
from radassets.layout import as_path
from radassets.reports import ItemFailure
from radassets.staging import local_file

if TYPE_CHECKING:  # pandas is imported where a table is read: the code location imports this module
    import pandas as pd

DISAGREEMENT_MM = 10.0
# The codes of the seeds' failures: a reference table row without a converted CT, a point outside its CT.
NO_CONVERTED_CT = "no_converted_ct"
OUTSIDE_VOLUME = "outside_volume"
SEED_COLUMNS = ["seed_id", "PatientID", "SeriesInstanceUID", "crdc_series_uuid", "segment_label", "segment_number",
                "coordX", "coordY", "coordZ", "voxels", "volume_ml", "source", "mask_SeriesInstanceUID",
                "mask_Modality", "reference_distance_mm", "reference_disagrees", "ct_path", "mask_path"]


def seed_id(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ReferenceTable:
    """A published table of seed points: ids, LPS coordinates and optionally a segment label."""

    points: pd.DataFrame  # columns: id, coordX, coordY, coordZ, [segment_label]
    id_kind: str  # PatientID or SeriesInstanceUID
    path: Path

    @classmethod
    def read(cls, path: Path | str, id_column: str, id_kind: str, coord_columns: Sequence[str] = ("coordX", "coordY", "coordZ"),
             label_column: str | None = None, id_suffix_pattern: str | None = None) -> ReferenceTable:
        import pandas as pd

        path = cast(Path, as_path(path))
        with path.open("rb") as f:  # a local file or an object of the artifact store
            table = pd.read_csv(f, dtype={id_column: str})
        missing = [c for c in [id_column, *coord_columns, *([label_column] if label_column else [])] if c not in table]
        if missing:
            raise ValueError(f"reference seed table {path}: missing column(s) {missing}; it has {list(table.columns)}")
        points = pd.DataFrame({"id": table[id_column].astype(str)})
        if id_suffix_pattern:
            points["id"] = points["id"].str.replace(id_suffix_pattern, "", regex=True)
        for name, column in zip(("coordX", "coordY", "coordZ"), coord_columns):
            points[name] = pd.to_numeric(table[column], errors="coerce")
        bad = points[["coordX", "coordY", "coordZ"]].isna().any(axis=1)
        if bad.any():
            raise ValueError(f"reference seed table {path}: {int(bad.sum())} row(s) without numeric coordinates "
                             f"(first id {points.loc[bad, 'id'].iloc[0]!r})")
        if label_column:
            points["segment_label"] = table[label_column].astype(str)
        return cls(points, id_kind, path)


def _read_image(path: Path | str) -> sitk.Image:
    with local_file(cast(Path, as_path(path))) as local:
        return sitk.ReadImage(str(local))


def seeds_from_segments(segments: Sequence[dict[str, Any]], compute: Compute = IN_PROCESS) -> list[dict[str, Any]]:
    """One seed per segment row of the ``volumes`` partition, in the rows' order; each reads its mask file for
    the centroid, as a ``radassets.dataplane`` task run where ``compute`` says."""
    return map_items(seed_from_segment, list(segments), compute).results


def seed_from_segment(s: dict[str, Any]) -> dict[str, Any]:
    """The seed of one segment row: the centroid of its mask (a data-plane task)."""
    mask = _read_image(s["mask_path"])
    x, y, z = centroid_lps(mask)
    return {
        "seed_id": seed_id(s["crdc_series_uuid"], s["mask_crdc_series_uuid"], s["segment_number"]),
        "PatientID": s["PatientID"], "SeriesInstanceUID": s["SeriesInstanceUID"],
        "crdc_series_uuid": s["crdc_series_uuid"], "segment_label": s["segment_label"],
        "segment_number": s["segment_number"], "coordX": float(x), "coordY": float(y), "coordZ": float(z),
        "voxels": s["voxels"], "volume_ml": s["volume_ml"], "source": "mask",
        "mask_SeriesInstanceUID": s["mask_SeriesInstanceUID"], "mask_Modality": s["mask_Modality"],
        "ct_path": s["ct_path"], "mask_path": s["mask_path"],
    }


def _candidates(reference: ReferenceTable, seed: dict[str, Any]) -> pd.DataFrame:
    key = seed["SeriesInstanceUID"] if reference.id_kind == "SeriesInstanceUID" else seed["PatientID"]
    rows = reference.points[reference.points["id"] == key]
    if "segment_label" in rows and seed.get("segment_label") is not None:
        rows = rows[rows["segment_label"] == seed["segment_label"]]
    return rows


def compare_with_reference(seeds: list[dict[str, Any]], reference: ReferenceTable,
                           threshold_mm: float = DISAGREEMENT_MM) -> list[dict[str, Any]]:
    """Add the distance to the nearest published point and a disagreement flag to each seed.

    A seed with no published point of its series or patient gets no distance and no flag (null).
    """
    for seed in seeds:
        rows = _candidates(reference, seed)
        if rows.empty:
            seed["reference_distance_mm"], seed["reference_disagrees"] = None, None
            continue
        distances = np.linalg.norm(rows[["coordX", "coordY", "coordZ"]].to_numpy()
                                   - [seed["coordX"], seed["coordY"], seed["coordZ"]], axis=1)
        seed["reference_distance_mm"] = round(float(distances.min()), 3)
        seed["reference_disagrees"] = bool(distances.min() > threshold_mm)
    return seeds


def seeds_from_reference(reference: ReferenceTable,
                         cts: Sequence[dict[str, Any]]) -> tuple[list[dict], list[ItemFailure]]:
    """Seeds read from a published table, each assigned to a converted CT series.

    ``cts``: QC rows of the CT series (PatientID, SeriesInstanceUID, crdc_series_uuid, status, path).
    Returns (seeds, failures); a failure's item is the table row (its index, from 0) and its reason why it has
    no CT; its patient or series is the row's id, by the table's ``id_kind``.
    """
    ok = [c for c in cts if c["status"] == "ok"]
    by_series = {c["SeriesInstanceUID"]: c for c in ok}
    by_patient: dict[str, list[dict]] = {}
    for c in ok:
        by_patient.setdefault(str(c["PatientID"]), []).append(c)
    all_series = {c["SeriesInstanceUID"]: c for c in cts}
    seeds, failures = [], []
    for i, row in enumerate(reference.points.itertuples(index=False)):
        if reference.id_kind == "SeriesInstanceUID":
            ct = by_series.get(row.id)
            why = None if ct else (f"its CT series was not converted ({all_series[row.id]['code']})"
                                   if row.id in all_series else "its CT series is not in this dataset version")
        else:
            found = by_patient.get(row.id, [])
            ct = found[0] if len(found) == 1 else None
            why = None if ct else (f"patient has {len(found)} converted CT series; the table does not say which"
                                   if found else "no converted CT series of this patient in this dataset version")
        if ct is None:
            assert why is not None  # a row without its CT always has a cause
            by_patient_id = reference.id_kind != "SeriesInstanceUID"
            failures.append(ItemFailure("seeds", str(i), why, code=NO_CONVERTED_CT,
                                        patient=row.id if by_patient_id else None,
                                        series=None if by_patient_id else row.id))
            continue
        label = getattr(row, "segment_label", None)
        seeds.append({
            "seed_id": seed_id(ct["crdc_series_uuid"], "reference", reference.path.name, i),
            "PatientID": ct["PatientID"], "SeriesInstanceUID": ct["SeriesInstanceUID"],
            "crdc_series_uuid": ct["crdc_series_uuid"], "segment_label": label, "segment_number": None,
            "coordX": float(row.coordX), "coordY": float(row.coordY), "coordZ": float(row.coordZ),
            "voxels": None, "volume_ml": None, "source": "reference", "mask_SeriesInstanceUID": None,
            "mask_Modality": None, "reference_distance_mm": None, "reference_disagrees": None,
            "ct_path": ct["path"], "mask_path": None,
        })
    return seeds, failures


def outside_volume_failure(seed: dict[str, Any]) -> ItemFailure:
    """The failure of a seed whose point lies outside its CT volume."""
    return ItemFailure("seeds", seed["seed_id"], f"point ({seed['coordX']:.1f}, {seed['coordY']:.1f}, "
                                                 f"{seed['coordZ']:.1f}) LPS mm lies outside its CT volume",
                       patient=seed["PatientID"], series=seed["SeriesInstanceUID"], code=OUTSIDE_VOLUME)


def failure_record(failure: ItemFailure) -> dict[str, Any]:
    """A seeds failure as the manifest's ``failures`` list records it: ``seed_id`` for a seed outside its
    volume, ``reference_row`` for a reference table row without a CT; ``id`` is the series or the table's id."""
    if failure.code == OUTSIDE_VOLUME:
        return {"seed_id": failure.item, "id": failure.series, "reason": failure.reason}
    return {"reference_row": int(failure.item), "id": failure.patient if failure.series is None else failure.series,
            "reason": failure.reason}


def outside_volume(seeds: list[dict[str, Any]], compute: Compute = IN_PROCESS) -> list[dict[str, Any]]:
    """Seeds whose point lies outside their CT volume (a wrong table or a wrong series): the failures. One
    data-plane task per CT volume, which reads its header once (``ReadImageInformation``: not its voxels)."""
    by_volume: dict[str, list[int]] = {}  # the seeds' indices per volume
    for i, seed in enumerate(seeds):
        by_volume.setdefault(str(seed["ct_path"]), []).append(i)
    groups = list(by_volume.values())
    tasks = [(seeds[group[0]]["ct_path"], [(seeds[i]["coordX"], seeds[i]["coordY"], seeds[i]["coordZ"]) for i in group])
             for group in groups]
    outside: set[int] = set()
    for group, inside in zip(groups, map_items(points_inside_volume, tasks, compute).results):
        outside.update(i for i, ok in zip(group, inside) if not ok)
    return [seed for i, seed in enumerate(seeds) if i in outside]  # in the seeds' order


def points_inside_volume(task: tuple[Any, list[tuple[float, float, float]]]) -> list[bool]:
    """Whether each LPS point lies within the CT volume at ``path`` (within half a voxel of its grid; a
    data-plane task)."""
    path, points = task
    reader = sitk.ImageFileReader()
    with local_file(cast(Path, as_path(path))) as local:
        reader.SetFileName(str(local))
        reader.ReadImageInformation()
    origin, spacing = np.array(reader.GetOrigin()), np.array(reader.GetSpacing())
    direction = np.array(reader.GetDirection()).reshape(3, 3)
    size = np.array(reader.GetSize())
    flags = []
    for point in points:
        index = np.linalg.solve(direction * spacing, np.array(point) - origin)
        flags.append(not ((index < -0.5).any() or (index > size - 0.5).any()))
    return flags
