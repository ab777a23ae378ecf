"""Bring your own DICOM: index a local folder as a dataset version.

The folder is scanned recursively (any file names, any nesting); every readable DICOM file is
grouped into its series, and an index in the IDC layout is written under
``$RADASSETS_HOME/local/NAME/index`` so the cohort and DICOM assets treat it like IDC. Files
stay where they are (absolute paths in ``instances.parquet``) and are verified in place.
A series' ``crdc_series_uuid`` is a UUID derived from its SeriesInstanceUID and SOP Instance
UIDs: it changes when the series' content does, like IDC's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pydicom
import yaml
from pydicom.errors import InvalidDicomError

from radassets.datasets import NAME_RE, definitions_dir, load_definition
from radassets.idc import schema
from radassets.idc.index import local_root
from radassets.storage import atomic_write_text

# Stable namespace for local series identities (uuid5 of the series' content).
LOCAL_NAMESPACE = uuid.UUID("5b1f3f2e-6c1a-4f0e-9a57-2d7f4f1a9c11")
LOCAL_MODALITIES = ("CT", "SEG", "RTSTRUCT")


class LocalIndexError(ValueError):
    """A local folder cannot be indexed (missing, empty, or the name is taken)."""


@dataclass
class LocalIndexResult:
    name: str
    index_root: Path
    definition_path: Path
    patients: int
    series: int
    instances: int
    skipped: list[str] = field(default_factory=list)


@dataclass
class _Series:
    first: pydicom.Dataset
    files: list[tuple[str, Path, int]] = field(default_factory=list)  # (SOPInstanceUID, path, size)


def _scan(folder: Path) -> tuple[dict[str, _Series], list[str]]:
    series: dict[str, _Series] = {}
    skipped: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            series_uid, sop_uid = str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        except (InvalidDicomError, AttributeError, OSError, ValueError) as e:
            skipped.append(f"{path}: {type(e).__name__}: {e}")
            continue
        entry = series.setdefault(series_uid, _Series(first=ds))
        entry.files.append((sop_uid, path.resolve(), path.stat().st_size))
    return series, skipped


def _get(ds: pydicom.Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return None if value is None or value == "" else str(value)


def index_folder(folder: Path, collection_id: str, out_root: Path) -> tuple[int, int, int, list[str]]:
    """Scan ``folder`` and write an IDC-layout index under ``out_root/index``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LocalIndexError(f"{folder} is not a folder")
    series, skipped = _scan(folder)
    if not series:
        raise LocalIndexError(f"no readable DICOM files under {folder} ({len(skipped)} other files skipped)")
    today = date.today().isoformat()
    index_rows, instance_rows = [], []
    for series_uid, s in sorted(series.items()):
        sops = sorted(sop for sop, _, _ in s.files)
        if len(set(sops)) != len(sops):
            dupes = len(sops) - len(set(sops))
            raise LocalIndexError(f"series {series_uid} under {folder} has {dupes} duplicated SOP Instance UIDs")
        crdc = str(uuid.uuid5(LOCAL_NAMESPACE, series_uid + "|" + "|".join(sops)))
        ds = s.first
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        sop_class = _get(ds, "SOPClassUID")
        index_rows.append({
            "collection_id": collection_id,
            "PatientID": _get(ds, "PatientID"),
            "SeriesInstanceUID": series_uid,
            "StudyInstanceUID": _get(ds, "StudyInstanceUID"),
            "PatientAge": _get(ds, "PatientAge"),
            "PatientSex": _get(ds, "PatientSex"),
            "StudyDate": _get(ds, "StudyDate"),
            "StudyDescription": _get(ds, "StudyDescription"),
            "BodyPartExamined": _get(ds, "BodyPartExamined"),
            "Modality": _get(ds, "Modality"),
            "SOPClassUID": sop_class,
            "sop_class_name": pydicom.uid.UID(sop_class).name if sop_class else None,
            "TransferSyntaxUID": str(ts) if ts else None,
            "transfer_syntax_name": ts.name if ts else None,
            "Manufacturer": _get(ds, "Manufacturer"),
            "SeriesDate": _get(ds, "SeriesDate"),
            "SeriesDescription": _get(ds, "SeriesDescription"),
            "SeriesNumber": _get(ds, "SeriesNumber"),
            "instanceCount": len(s.files),
            "series_init_idc_version": 1,
            "series_revised_idc_version": 1,
            "crdc_series_uuid": crdc,
            "series_size_MB": sum(size for _, _, size in s.files) / 1e6,
        })
        instance_rows += [{"crdc_series_uuid": crdc, "SeriesInstanceUID": series_uid, "SOPInstanceUID": sop,
                           "path": str(path), "size_bytes": size} for sop, path, size in s.files]
    folder_out = Path(out_root) / "index"
    schema.write_table(index_rows, schema.IDC_INDEX_SCHEMA, folder_out / "idc_index.parquet")
    schema.write_table([], schema.PRIOR_VERSIONS_SCHEMA, folder_out / "prior_versions_index.parquet")
    schema.write_table([{"idc_version": 1, "version_timestamp": today}], schema.VERSION_METADATA_SCHEMA,
                       folder_out / "version_metadata_index.parquet")
    schema.write_table([{"collection_id": collection_id, "collection_name": f"local folder {folder}"}],
                       schema.COLLECTIONS_SCHEMA, folder_out / "collections_index.parquet")
    schema.write_table(instance_rows, schema.INSTANCES_SCHEMA, folder_out / "instances.parquet")
    patients = len({r["PatientID"] for r in index_rows})
    return patients, len(index_rows), len(instance_rows), skipped


def add_local_dataset(name: str, folder: Path, *, title: str | None = None,
                      segment_labels: list[str] | None = None, data_root: Path | None = None) -> LocalIndexResult:
    """Index ``folder`` and write the dataset definition ``data/datasets/NAME.yaml``."""
    if not NAME_RE.match(name):
        raise LocalIndexError(f"dataset version name {name!r} must match [a-z0-9_]+ (it is a partition key)")
    definition_path = definitions_dir(data_root) / f"{name}.yaml"
    if definition_path.exists():
        raise LocalIndexError(f"dataset version {name!r} already exists ({definition_path}); choose another name")
    folder = Path(folder).expanduser().resolve()
    out_root = local_root(name)
    patients, n_series, n_instances, skipped = index_folder(folder, name, out_root)
    definition = {
        "title": title or f"Local DICOM folder {folder.name}",
        "description": f"DICOM files indexed in place from {folder} by radassets datasets add-local.",
        "source": {"kind": "local", "idc_version": 1, "path": str(folder)},
        "selection": {"collections": [name], "modalities": list(LOCAL_MODALITIES)},
        "seeds": ({"source": "mask", "segment_labels": segment_labels} if segment_labels
                  else {"source": "mask", "segment_rule": "all"}),
    }
    atomic_write_text(definition_path, yaml.safe_dump(definition, sort_keys=False))
    load_definition(definition_path, data_root)  # what we wrote must validate
    return LocalIndexResult(name, out_root, definition_path, patients, n_series, n_instances, skipped)
