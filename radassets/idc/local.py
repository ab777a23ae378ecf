"""Bring your own DICOM: index a local folder as a dataset version.

The folder is scanned recursively (any file names, any nesting); every readable DICOM file is
grouped into its series, and an index in the IDC layout is written under
``$RADASSETS_HOME/local/NAME/index`` so the cohort and DICOM assets treat it like IDC. Files
stay where they are (absolute paths in ``instances.parquet``) and are verified in place.

Content, not names, identifies a series version: ``files.parquet`` records each file's size,
modification time and sha256, and a series' ``crdc_series_uuid`` is a UUID derived from its
SeriesInstanceUID and the (SOP Instance UID, sha256) of every file. Edited pixels give a new id,
so the cohort, the DICOM step and every later step see a new series version and convert it again,
as they do for a revised IDC series. The imaging steps compare each file's size and mtime with
the index and re-hash a file that differs: a file changed after indexing is that series' failure
(``changed_since_indexed``), naming the file and the command that re-indexes
(``radassets datasets add-local NAME PATH`` again, which replaces the index of a local dataset
version of the same folder and leaves its definition as it is). An edit that keeps both the size
and the mtime goes unnoticed until the folder is indexed again.

Writing is all or nothing: the index is built in a staging folder beside its place and renamed
into place, then the definition is written; a failure removes what this run made, and a staging
folder left by a killed run is removed by the next ``add-local`` of that name.

File names that are not valid UTF-8 (on Linux, bytes Python carries as surrogate escapes) cannot
be written to Parquet; each such file is reached through a symbolic link with a UTF-8 name under
``local/NAME/links/``, and the index records the link.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import yaml
from pydicom.errors import InvalidDicomError

from radassets.datasets import DatasetVersion, definitions_dir, load_definition
from radassets.errors import RadassetsError
from radassets.names import check_name
from radassets.idc import schema
from radassets.layout import Layout
from radassets.storage import atomic_write_text, sha256_file

# Stable namespace for local series identities (uuid5 of the series' content).
LOCAL_NAMESPACE = uuid.UUID("5b1f3f2e-6c1a-4f0e-9a57-2d7f4f1a9c11")
LOCAL_MODALITIES = ("CT", "SEG", "RTSTRUCT")
FILES_TABLE = "files.parquet"  # beside the IDC-layout tables: what each indexed file was
FILES_SCHEMA = pa.schema([("path", pa.string()), ("crdc_series_uuid", pa.string()), ("size_bytes", pa.int64()),
                          ("mtime_ns", pa.int64()), ("sha256", pa.string())])


class LocalIndexError(RadassetsError, ValueError):
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
    reindexed: bool = False
    linked: list[str] = field(default_factory=list)  # files with non-UTF-8 names, reached through links/


@dataclass
class _File:
    sop_uid: str
    path: Path  # where the index points: the file, or its link under links/
    size: int
    mtime_ns: int
    sha256: str
    sop_class: str | None = None


@dataclass
class _Series:
    first: pydicom.Dataset
    files: list[_File] = field(default_factory=list)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(path: Path) -> str:
    """A path as text that can be printed and stored whatever bytes its name holds (``\\xff``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _link(path: Path, out_root: Path, final_root: Path) -> Path:
    """A symbolic link with a UTF-8 name to a file whose name is not UTF-8 (the target keeps its bytes),
    made under ``out_root/links``; returns where it will be once ``out_root`` is ``final_root``."""
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:16]
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in shown(Path(path.name)))
    link = Path("links") / f"{digest}_{safe}"
    (out_root / "links").mkdir(parents=True, exist_ok=True)
    os.symlink(os.fsencode(path), out_root / link)
    return final_root / link


def _scan(folder: Path, out_root: Path, final_root: Path) -> tuple[dict[str, _Series], list[str], list[str]]:
    series: dict[str, _Series] = {}
    skipped: list[str] = []
    linked: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            stat = path.stat()
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError as e:
            skipped.append(f"{shown(path)}: not DICOM ({e})")
            continue
        except Exception as e:  # noqa: BLE001 - a damaged file is listed with its cause, never a crash
            skipped.append(f"{shown(path)}: unreadable DICOM: {type(e).__name__}: {e}")
            continue
        series_uid, sop_uid = ds.get("SeriesInstanceUID"), ds.get("SOPInstanceUID")
        if not series_uid or not sop_uid:
            skipped.append(f"{shown(path)}: DICOM without SeriesInstanceUID or SOPInstanceUID "
                           f"({stat.st_size} bytes: truncated?)")
            continue
        indexed = path.resolve()
        if not _utf8(str(indexed)):
            indexed = _link(indexed, out_root, final_root)
            linked.append(shown(path))
        entry = series.setdefault(str(series_uid), _Series(first=ds))
        entry.files.append(_File(str(sop_uid), indexed, stat.st_size, stat.st_mtime_ns, sha256_file(path),
                                 _get(ds, "SOPClassUID")))
    return series, skipped, linked


def _get(ds: pydicom.Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return None if value is None or value == "" else str(value)


def series_version_id(series_uid: str, files: list[tuple[str, str]]) -> str:
    """The local stand-in for crdc_series_uuid: a UUID of the series UID and its files' (SOP UID, sha256)."""
    content = "|".join(f"{sop}:{sha}" for sop, sha in sorted(files))
    return str(uuid.uuid5(LOCAL_NAMESPACE, f"{series_uid}|{content}"))


def index_folder(folder: Path, collection_id: str, out_root: Path,
                 final_root: Path | None = None) -> tuple[int, int, int, list[str], list[str]]:
    """Scan ``folder`` and write an IDC-layout index under ``out_root/index`` (links under ``out_root/links``,
    recorded where they will be once ``out_root`` is renamed to ``final_root``).

    Returns patients, series, instances, the skipped files (with their reasons) and the linked ones.
    """
    folder = Path(folder)
    final_root = Path(final_root or out_root)
    if not folder.is_dir():
        raise LocalIndexError(f"{shown(folder)} is not a folder")
    series, skipped, linked = _scan(folder, Path(out_root), final_root)
    if not series:
        raise LocalIndexError(f"no readable DICOM files under {shown(folder)} ({len(skipped)} other files skipped)")
    today = date.today().isoformat()
    index_rows, instance_rows, file_rows = [], [], []
    for series_uid, s in sorted(series.items()):
        sops = sorted(f.sop_uid for f in s.files)
        if len(set(sops)) != len(sops):
            dupes = len(sops) - len(set(sops))
            raise LocalIndexError(f"series {series_uid} under {shown(folder)} has {dupes} duplicated SOP Instance UIDs")
        crdc = series_version_id(series_uid, [(f.sop_uid, f.sha256) for f in s.files])
        ds = s.first
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        # The series' SOP class only when all its files agree: the cohort excludes by it (a dose screen), and a
        # series that mixes classes is left for the volumes step to judge file by file.
        classes = {f.sop_class for f in s.files}
        sop_class = classes.pop() if len(classes) == 1 else None
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
            "series_size_MB": sum(f.size for f in s.files) / 1e6,
        })
        instance_rows += [{"crdc_series_uuid": crdc, "SeriesInstanceUID": series_uid, "SOPInstanceUID": f.sop_uid,
                           "path": str(f.path), "size_bytes": f.size} for f in s.files]
        file_rows += [{"path": str(f.path), "crdc_series_uuid": crdc, "size_bytes": f.size, "mtime_ns": f.mtime_ns,
                       "sha256": f.sha256} for f in s.files]
    folder_out = Path(out_root) / "index"
    schema.write_table(index_rows, schema.IDC_INDEX_SCHEMA, folder_out / "idc_index.parquet")
    schema.write_table([], schema.PRIOR_VERSIONS_SCHEMA, folder_out / "prior_versions_index.parquet")
    schema.write_table([{"idc_version": 1, "version_timestamp": today}], schema.VERSION_METADATA_SCHEMA,
                       folder_out / "version_metadata_index.parquet")
    schema.write_table([{"collection_id": collection_id, "collection_name": f"local folder {shown(folder)}"}],
                       schema.COLLECTIONS_SCHEMA, folder_out / "collections_index.parquet")
    schema.write_table(instance_rows, schema.INSTANCES_SCHEMA, folder_out / "instances.parquet")
    pq.write_table(pa.Table.from_pylist(file_rows, schema=FILES_SCHEMA), folder_out / FILES_TABLE)
    patients = len({r["PatientID"] for r in index_rows})
    return patients, len(index_rows), len(instance_rows), skipped, linked


def _remove_staging(name: str, layout: Layout) -> None:
    """Staging folders of ``name`` left by an ``add-local`` that was killed."""
    parent = layout.local_sources_dir()
    if parent.is_dir():
        for stale in parent.glob(f".{name}.*.staging"):
            shutil.rmtree(stale, ignore_errors=True)


def add_local_dataset(name: str, folder: Path, layout: Layout, *, title: str | None = None,
                      segment_labels: list[str] | None = None, data_root: Path | None = None) -> LocalIndexResult:
    """Index ``folder`` and write the dataset definition ``data/datasets/NAME.yaml``.

    A dataset version of that name that is already a local source of the same folder is indexed
    again (its definition kept as it is); any other existing name is refused.
    """
    check_name("dataset version", name)  # before the name becomes a path: no "../x", no trailing newline
    folder = Path(folder).expanduser().resolve()
    if not _utf8(str(folder)):
        raise LocalIndexError(f"the folder name {shown(folder)} is not valid UTF-8 and cannot be stored in a "
                              f"dataset definition; rename the folder (file names inside it may be anything)")
    definition_path = definitions_dir(data_root) / f"{name}.yaml"
    reindex = definition_path.exists()
    if reindex:
        existing = load_definition(definition_path, data_root)
        if existing.source.kind != "local" or Path(existing.source.path) != folder:
            where = f"folder {existing.source.path}" if existing.source.kind == "local" else f"a {existing.source.kind} source"
            raise LocalIndexError(f"dataset version {name!r} already exists ({definition_path}, {where}); "
                                  f"choose another name")
    definition = {
        "title": title or f"Local DICOM folder {folder.name}",
        "description": f"DICOM files indexed in place from {folder} by radassets datasets add-local.",
        "source": {"kind": "local", "idc_version": 1, "path": str(folder)},
        "selection": {"collections": [name], "modalities": list(LOCAL_MODALITIES)},
        "seeds": ({"source": "mask", "segment_labels": segment_labels} if segment_labels
                  else {"source": "mask", "segment_rule": "all"}),
    }
    if not reindex:
        DatasetVersion.model_validate(dict(definition, name=name))  # what we write must validate, before any write
    out_root = layout.local_root(name)
    _remove_staging(name, layout)
    staging = out_root.parent / f".{name}.{secrets.token_hex(6)}.staging"
    previous = out_root.parent / f".{name}.{secrets.token_hex(6)}.previous.staging"
    placed = False
    try:
        patients, n_series, n_instances, skipped, linked = index_folder(folder, name, staging, out_root)
        if out_root.exists():
            out_root.rename(previous)
        staging.rename(out_root)
        placed = True
        if not reindex:
            atomic_write_text(definition_path, yaml.safe_dump(definition, sort_keys=False))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if placed and not reindex:
            shutil.rmtree(out_root, ignore_errors=True)
        if previous.exists() and not out_root.exists():
            previous.rename(out_root)  # a re-index that failed leaves the index it found
        raise
    shutil.rmtree(previous, ignore_errors=True)
    return LocalIndexResult(name, out_root, definition_path, patients, n_series, n_instances, skipped, reindex, linked)


# -- checks of the imaging steps --------------------------------------------------------------------

@dataclass(frozen=True)
class IndexedFile:
    size_bytes: int
    mtime_ns: int
    sha256: str


def indexed_files(definition: DatasetVersion, layout: Layout) -> dict[str, IndexedFile]:
    """What each file of a local dataset version was when it was indexed, by the path the index gives."""
    table = layout.local_root(definition.name) / "index" / FILES_TABLE
    if not table.is_file():
        raise LocalIndexError(f"dataset version {definition.name!r} was indexed without content hashes (no {table}); "
                              f"run: radassets datasets add-local {definition.name} {definition.source.path}")
    return {r["path"]: IndexedFile(r["size_bytes"], r["mtime_ns"], r["sha256"])
            for r in pq.read_table(table).to_pylist()}


def changed_since_indexed(files: list[Path], indexed: dict[str, IndexedFile]) -> list[str]:
    """The files (as text) that differ from the index: size, or content where the size or mtime differ."""
    changed = []
    for path in files:
        record = indexed.get(str(path))
        try:
            stat = Path(path).stat()
        except FileNotFoundError:
            changed.append(f"{path} (gone)")
            continue
        if record is None:
            changed.append(f"{path} (not in the index)")
        elif stat.st_size != record.size_bytes:
            changed.append(str(path))
        elif stat.st_mtime_ns != record.mtime_ns and sha256_file(Path(path)) != record.sha256:
            changed.append(str(path))
    return changed
