"""The imaging steps of one dataset version: volumes → seeds → patches, each reading the step before.

Shared by the Dagster assets and the CLI (no Dagster imports). Outputs live where the ``Layout`` says
(``{volumes,seeds,patches}/<dataset_version>/``); each step writes its manifest last, so a partition
without one is unfinished and is never read by the next step.

The root may be a folder or an object store (``s3://``, ``gs://``): the steps' tasks read their inputs through local
copies (``radassets.staging``) and write through ``radassets.storage``'s atomic writers. The records (QC rows,
segments, ``seeds.parquet``'s ``ct_path``/``mask_path``) name files relative to the root (``Layout.relative``), so
they are the same bytes on every root; the steps resolve them (``Layout.resolve``), absolute names of earlier
versions included.

Each step starts by removing the temporary files (``.<name>.*.tmp``) that a killed run left in its
own output folder: one run at a time materializes a partition, so none of them has a live writer.
A local source's files are checked against their index first (``unchanged_local_files``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radassets.dataplane import IN_PROCESS, Compute
from radassets.datasets import DatasetVersion
from radassets.idc import local
from radassets.idc.dicom import read_manifest, series_files
from radassets.idc.index import resolve_table, source_root
from radassets.imaging.ct import SeriesError, Tolerances
from radassets.imaging.masks import MaskError
from radassets.imaging.montage import write_montage
from radassets.imaging.patches import (
    PatchesReport,
    PatchSpec,
    load_patches,
    write_patches,
)
from radassets.imaging.seeds import (
    DISAGREEMENT_MM,
    SEED_COLUMNS,
    ReferenceTable,
    compare_with_reference,
    failure_record,
    outside_volume,
    outside_volume_failure,
    seeds_from_reference,
    seeds_from_segments,
)
from radassets.imaging.volumes import (
    MASK_MODALITIES,
    ConversionSettings,
    FilesOf,
    SegmentSelection,
    VolumesReport,
    convert_dataset,
)
from radassets.layout import Layout, StepInputMissing
from radassets.reports import ItemFailure
from radassets.storage import (
    atomic_path,
    atomic_write_json,
    remove_stale_temporaries,
    sha256_json,
)

Progress = Callable[[int, int, str], None]


def _manifest(layout: Layout, step: str, dataset_version: str, needed_by: str) -> dict[str, Any]:
    return json.loads(layout.require_finished(step, dataset_version, needed_by).read_text())


# -- volumes --------------------------------------------------------------------------------------

def conversion_settings(definition: DatasetVersion, tolerances: Tolerances = Tolerances()) -> ConversionSettings:
    """Which segments to keep: those the seeds come from; every segment when seeds are published points."""
    seeds = definition.seeds
    if seeds.source == "mask":
        labels = tuple(seeds.segment_labels) if seeds.segment_labels else None
        selection = SegmentSelection(labels, seeds.segment_rule)
    else:
        selection = SegmentSelection(None, "all")
    return ConversionSettings(tolerances, selection)


def unchanged_local_files(definition: DatasetVersion, layout: Layout, files_of: FilesOf) -> FilesOf:
    """``files_of`` of a local source that refuses a series whose files changed since ``add-local``
    indexed them: the series' failure, not a silent reuse of a volume made from other pixels."""
    indexed = local.indexed_files(definition, layout)

    def checked(row: dict) -> Sequence[Path]:
        files = files_of(row)
        changed = local.changed_since_indexed(list(files), indexed)
        if changed:
            error = MaskError if row["Modality"] in MASK_MODALITIES else SeriesError
            more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
            raise error("changed_since_indexed", row["SeriesInstanceUID"],
                        f"file {changed[0]}{more} changed since it was indexed; run: radassets datasets add-local "
                        f"{definition.name} {definition.source.path}")
        return files

    return checked


def run_volumes(definition: DatasetVersion, layout: Layout, tolerances: Tolerances = Tolerances(),
                progress: Progress | None = None, compute: Compute = IN_PROCESS) -> VolumesReport:
    try:
        manifest = read_manifest(definition.name, layout)
    except FileNotFoundError as e:
        raise StepInputMissing(str(e)) from None
    files_of: FilesOf = series_files(definition, layout)
    if definition.source.kind == "local":
        files_of = unchanged_local_files(definition, layout, files_of)
    out_dir = layout.asset_dir("volumes", definition.name)
    remove_stale_temporaries(out_dir)
    return convert_dataset(manifest["series"], files_of, out_dir, conversion_settings(definition, tolerances), progress,
                           compute, layout, excluded=manifest.get("excluded", []))


# -- seeds ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SeedsReport:
    """What ``run_seeds`` did: the seeds (as written to seeds.parquet), the failures, the reference compared."""

    out_dir: Path
    seeds: list[dict[str, Any]]
    failures: list[ItemFailure]
    reference: dict[str, Any] | None

    @property
    def patients(self) -> int:
        return len({s["PatientID"] for s in self.seeds})

    @property
    def compared_with_reference(self) -> int:
        return len(self._distances())

    @property
    def disagreeing(self) -> list[dict[str, Any]]:
        """The seeds further than the threshold from their published point."""
        return [s for s in self.seeds if s.get("reference_disagrees")]

    def _distances(self) -> list[float]:
        return [s["reference_distance_mm"] for s in self.seeds if s.get("reference_distance_mm") is not None]

    def summary(self) -> dict[str, Any]:
        """The manifest's ``summary``, as written (and the counts an asset shows)."""
        distances = self._distances()
        return {
            "seeds": len(self.seeds), "patients": self.patients,
            "from_mask": sum(s["source"] == "mask" for s in self.seeds),
            "from_reference": sum(s["source"] == "reference" for s in self.seeds),
            "failures": len(self.failures),
            "compared_with_reference": len(distances),
            "reference_disagreements": len(self.disagreeing),
            "reference_distance_median_mm": round(float(np.median(distances)), 3) if distances else None,
            "reference_distance_max_mm": round(float(np.max(distances)), 3) if distances else None,
        }

    def metadata(self) -> dict[str, Any]:
        """The counts an asset shows (plain values; those without a value left out)."""
        return {k: v for k, v in self.summary().items() if v is not None}

    def manifest(self, source: str, volumes_content_hash: str) -> dict[str, Any]:
        """The partition's ``manifest.json``."""
        return {"source": source, "reference": self.reference, "volumes_content_hash": volumes_content_hash,
                "summary": self.summary(), "failures": [failure_record(f) for f in self.failures],
                "content_hash": self.content_hash}

    @property
    def content_hash(self) -> str:
        return sha256_json(sorted((s["seed_id"], round(s["coordX"], 4), round(s["coordY"], 4), round(s["coordZ"], 4))
                                  for s in self.seeds))


def _reference_table(definition: DatasetVersion, layout: Layout) -> ReferenceTable | None:
    ref = definition.seeds.reference
    if ref is None:
        return None
    path = resolve_table(ref.table, source_root(definition, layout), definition.data_root)
    return ReferenceTable.read(path, ref.id_column, ref.id_kind, ref.coord_columns, ref.label_column)


def _resolved(layout: Layout, row: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``row`` with the files it names (relative to the root, or absolute) as paths, for reading."""
    return dict(row, **{k: layout.resolve(row[k]) for k in keys if row.get(k)})


def _named(layout: Layout, row: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``row`` with its paths named as records name them (``Layout.relative``)."""
    return dict(row, **{k: layout.relative(row[k]) for k in keys if row.get(k)})


def run_seeds(definition: DatasetVersion, layout: Layout, threshold_mm: float = DISAGREEMENT_MM,
              compute: Compute = IN_PROCESS) -> SeedsReport:
    """One seed per lesion (module ``radassets.imaging.seeds``); the masks' centroids and the volumes' bounds are
    read by data-plane tasks where ``compute`` says, the rest here."""
    volumes = _manifest(layout, "volumes", definition.name, "seeds")
    reference = _reference_table(definition, layout)
    failures: list[ItemFailure] = []
    if definition.seeds.source == "mask":
        seeds = seeds_from_segments([_resolved(layout, s, "ct_path", "mask_path") for s in volumes["segments"]],
                                    compute)
        if reference is not None:
            compare_with_reference(seeds, reference, threshold_mm)
    else:
        cts = [_resolved(layout, r, "path") for r in volumes["qc"] if r["Modality"] == "CT"]
        seeds, failures = seeds_from_reference(reference, cts)
    for seed in outside_volume(seeds, compute):
        seeds.remove(seed)
        failures.append(outside_volume_failure(seed))
    seeds = [_named(layout, seed, "ct_path", "mask_path") for seed in seeds]
    out_dir = layout.asset_dir("seeds", definition.name)
    remove_stale_temporaries(out_dir)
    import pandas as pd  # here, not at the top: the code location (every run worker) imports this module

    frame = pd.DataFrame(seeds, columns=SEED_COLUMNS)
    with atomic_path(out_dir / "seeds.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    with atomic_path(out_dir / "seeds.csv") as tmp:
        frame.drop(columns=["ct_path", "mask_path"]).to_csv(tmp, index=False)
    ref_info = None
    if reference is not None:
        ref_info = {"table": definition.seeds.reference.table, "path": layout.relative(reference.path),
                    "rows": len(reference.points),
                    "id_kind": reference.id_kind, "threshold_mm": threshold_mm}
    report = SeedsReport(out_dir, seeds, failures, ref_info)
    atomic_write_json(out_dir / "manifest.json", report.manifest(definition.seeds.source, volumes["content_hash"]))
    return report


def read_seeds(dataset_version: str, layout: Layout, needed_by: str = "patches") -> list[dict[str, Any]]:
    import pandas as pd

    layout.require_finished("seeds", dataset_version, needed_by)
    with layout.seeds_table(dataset_version).open("rb") as f:  # a local file or an object of the store
        frame = pd.read_parquet(f)
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict("records")]


# -- patches --------------------------------------------------------------------------------------

def run_patches(definition: DatasetVersion, layout: Layout, spec: PatchSpec = PatchSpec(),
                progress: Progress | None = None, compute: Compute = IN_PROCESS) -> tuple[PatchesReport, Path]:
    """Extract the patches and write the QC montage; returns the report and the montage path."""
    seeds = [_resolved(layout, seed, "ct_path", "mask_path") for seed in read_seeds(definition.name, layout)]
    out_dir = layout.asset_dir("patches", definition.name)
    remove_stale_temporaries(out_dir)
    report = write_patches(seeds, out_dir, spec, progress, compute)
    patches, masks, rows = load_patches(out_dir)
    montage = write_montage(patches, masks, rows, out_dir / "montage.png", title=definition.name)
    return report, montage
