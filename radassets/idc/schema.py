"""The column layout of IDC's index tables, shared by every index radassets reads or writes.

The bundled index (``idc-index-data``), the demo collection and folders indexed with
``radassets datasets add-local`` all use these layouts, so cohort and download code is the
same for all of them. Column names and types follow ``idc_index_data/*_schema.json``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# SOP classes whose images can be slices of a CT volume: CT Image, Enhanced CT, Legacy Converted Enhanced CT. The
# cohort leaves other classes of Modality CT out (dose screens), and the volumes step reads these three.
CT_IMAGE_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")

# idc_index: one row per series version currently served.
IDC_INDEX_SCHEMA = pa.schema(
    [
        ("collection_id", pa.string()),
        ("analysis_result_id", pa.string()),
        ("PatientID", pa.string()),
        ("SeriesInstanceUID", pa.string()),
        ("StudyInstanceUID", pa.string()),
        ("source_DOI", pa.string()),
        ("PatientAge", pa.string()),
        ("PatientSex", pa.string()),
        ("StudyDate", pa.string()),
        ("StudyDescription", pa.string()),
        ("BodyPartExamined", pa.string()),
        ("Modality", pa.string()),
        ("SOPClassUID", pa.string()),
        ("sop_class_name", pa.string()),
        ("TransferSyntaxUID", pa.string()),
        ("transfer_syntax_name", pa.string()),
        ("PhotometricInterpretation", pa.string()),
        ("PixelRepresentation", pa.string()),
        ("Manufacturer", pa.string()),
        ("ManufacturerModelName", pa.string()),
        ("SeriesDate", pa.string()),
        ("SeriesDescription", pa.string()),
        ("SeriesNumber", pa.string()),
        ("instanceCount", pa.int64()),
        ("license_short_name", pa.string()),
        ("series_init_idc_version", pa.int64()),
        ("series_revised_idc_version", pa.int64()),
        ("aws_bucket", pa.string()),
        ("crdc_series_uuid", pa.string()),
        ("series_aws_url", pa.string()),
        ("series_size_MB", pa.float64()),
    ]
)

# prior_versions_index: series versions an earlier release served and the current one no longer does.
PRIOR_VERSIONS_SCHEMA = pa.schema(
    [
        ("collection_id", pa.string()),
        ("PatientID", pa.string()),
        ("SeriesInstanceUID", pa.string()),
        ("StudyInstanceUID", pa.string()),
        ("Modality", pa.string()),
        ("gcs_bucket", pa.string()),
        ("crdc_series_uuid", pa.string()),
        ("series_size_MB", pa.float64()),
        ("series_aws_url", pa.string()),
        ("aws_bucket", pa.string()),
        ("min_idc_version", pa.int64()),
        ("max_idc_version", pa.int64()),
    ]
)

VERSION_METADATA_SCHEMA = pa.schema([("idc_version", pa.int64()), ("version_timestamp", pa.string())])

# A reduced collections_index: the bundled one nests sources in a struct list; radassets only
# needs each collection's DOI and licence, which IDC asks users to cite.
COLLECTIONS_SCHEMA = pa.schema(
    [
        ("collection_id", pa.string()),
        ("collection_name", pa.string()),
        ("source_DOI", pa.string()),
        ("license_short_name", pa.string()),
        ("license_url", pa.string()),
        ("citation", pa.string()),
    ]
)

# Not an IDC table: where each instance of a locally indexed series lives (demo, add-local).
INSTANCES_SCHEMA = pa.schema(
    [
        ("crdc_series_uuid", pa.string()),
        ("SeriesInstanceUID", pa.string()),
        ("SOPInstanceUID", pa.string()),
        ("path", pa.string()),  # relative to the source root (demo), or absolute (local folders)
        ("size_bytes", pa.int64()),
    ]
)

INDEX_FILES = {
    "idc_index": IDC_INDEX_SCHEMA,
    "prior_versions_index": PRIOR_VERSIONS_SCHEMA,
    "version_metadata_index": VERSION_METADATA_SCHEMA,
    "collections_index": COLLECTIONS_SCHEMA,
    "instances": INSTANCES_SCHEMA,
}


def write_table(rows: Iterable[Mapping[str, object]], schema: pa.Schema, path: Path) -> Path:
    """Write rows as parquet with exactly ``schema``; missing keys become nulls, extra keys are an error.

    The file is written to a temporary name and renamed, so a reader never sees half a table.
    """
    rows = list(rows)
    names = set(schema.names)
    for i, row in enumerate(rows):
        extra = set(row) - names
        if extra:
            raise ValueError(f"row {i} for {path.name} has columns not in the IDC schema: {sorted(extra)}")
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    table = pa.Table.from_pydict(columns, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path
