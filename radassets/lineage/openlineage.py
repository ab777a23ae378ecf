"""The store as OpenLineage run events, built with the ``openlineage-python`` client's classes.

Each recorded run gives a ``START`` event and, once it ended, a ``COMPLETE``, ``FAIL`` or ``ABORT``
event, with the job (the asset), its inputs and outputs (asset partitions, with the standard
``version`` facet holding the data version) and facets: the standard ``processing_engine``,
``jobType``, ``documentation`` and ``errorMessage``, and two of ours, ``radassets`` on the run
(Dagster run id, partition, code version, git commit) and on each output (its settings and item
counts). Our facets' schema URLs are URNs: this project publishes no schema server.

The client can write events but not read them; ``read_event`` builds the same classes from a JSON
file, so an export can be checked by reading it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attr
import duckdb
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (DatasetFacet, RunFacet, dataset_version_dataset, documentation_job,
                                         error_message_run, job_type_job, processing_engine_run)
from openlineage.client.serde import Serde

import radassets
from radassets.storage import atomic_write_text

PRODUCER = f"urn:radassets:{radassets.__version__}"


@attr.define
class RadassetsRunFacet(RunFacet):
    dagsterRunId: str | None = attr.field(default=None)  # noqa: N815 - OpenLineage's camelCase
    partition: dict[str, str] | None = attr.field(default=None)
    codeVersion: str | None = attr.field(default=None)  # noqa: N815
    gitCommit: str | None = attr.field(default=None)  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return "urn:radassets:facets:RadassetsRunFacet:1"


@attr.define
class RadassetsDatasetFacet(DatasetFacet):
    asset: str | None = attr.field(default=None)
    partitionKey: str | None = attr.field(default=None)  # noqa: N815
    items: dict[str, int] | None = attr.field(default=None)
    settings: dict[str, Any] | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return "urn:radassets:facets:RadassetsDatasetFacet:1"


def _time(value) -> str:
    return value.isoformat()


def _dataset(cls, row: dict[str, Any], items: dict[str, int] | None = None):
    """An input (its version only: its settings are on the event of the run that wrote it) or an output
    (``items`` given: with its settings and item counts)."""
    facets: dict[str, Any] = {"version": dataset_version_dataset.DatasetVersionDatasetFacet(
        datasetVersion=row["version"], producer=PRODUCER)}
    if items is not None:
        settings = json.loads(row["facets"]).get("settings", {}).get("content") if row["facets"] else None
        facets["radassets"] = RadassetsDatasetFacet(asset=row["asset"], partitionKey=row["partition_key"], items=items,
                                                    settings=settings, producer=PRODUCER)
    return cls(namespace=row["namespace"], name=row["dataset_name"], facets=facets)


def _versions(con: duckdb.DuckDBPyConnection, table: str, run_id: str) -> list[dict[str, Any]]:
    cursor = con.execute(f"SELECT v.version_id, v.version, v.facets, d.dataset_name, d.namespace, d.asset, d.partition_key "
                         f"FROM {table} t JOIN dataset_versions v USING (version_id) JOIN datasets d USING (dataset_name) "
                         f"WHERE t.run_id = ? ORDER BY d.dataset_name", [run_id])
    columns = [c[0] for c in cursor.description]
    return [dict(zip(columns, r)) for r in cursor.fetchall()]


def run_events(con: duckdb.DuckDBPyConnection) -> list[RunEvent]:
    """Every recorded run as OpenLineage events, in time order."""
    cursor = con.execute("SELECT r.*, j.namespace, j.description FROM runs r JOIN jobs j USING (job_name) "
                         "ORDER BY coalesce(r.started_at, r.ended_at), r.run_id")
    columns = [c[0] for c in cursor.description]
    events = []
    for run in (dict(zip(columns, r)) for r in cursor.fetchall()):
        job_facets: dict[str, Any] = {"jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="DAGSTER", jobType="ASSET", producer=PRODUCER)}
        if run["description"]:
            job_facets["documentation"] = documentation_job.DocumentationJobFacet(
                description=run["description"], producer=PRODUCER)
        job = Job(namespace=run["namespace"], name=run["job_name"], facets=job_facets)
        run_facets: dict[str, Any] = {
            "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
                version=run["radassets_version"] or radassets.__version__, name="radassets", producer=PRODUCER),
            "radassets": RadassetsRunFacet(dagsterRunId=run["dagster_run_id"],
                                           partition=json.loads(run["partition"]) if run["partition"] else None,
                                           codeVersion=run["code_version"], gitCommit=run["git_commit"],
                                           producer=PRODUCER)}
        inputs = [_dataset(InputDataset, v) for v in _versions(con, "run_inputs", run["run_id"])]
        if run["started_at"] is not None:
            events.append(RunEvent(eventType=RunState.START, eventTime=_time(run["started_at"]), producer=PRODUCER,
                                   run=Run(runId=run["run_id"], facets=run_facets), job=job, inputs=inputs))
        if run["status"] == "START":
            continue
        end_facets = dict(run_facets)
        if run["error"]:
            end_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=run["error"], programmingLanguage="python", producer=PRODUCER)
        outputs = []
        for v in _versions(con, "run_outputs", run["run_id"]):
            counts = dict(con.execute("SELECT kind, count(*) FROM items WHERE version_id = ? GROUP BY kind ORDER BY kind",
                                      [v["version_id"]]).fetchall())
            outputs.append(_dataset(OutputDataset, v, counts))
        events.append(RunEvent(eventType=RunState(run["status"]), eventTime=_time(run["ended_at"]), producer=PRODUCER,
                               run=Run(runId=run["run_id"], facets=end_facets), job=job, inputs=inputs, outputs=outputs))
    return events


def export_events(con: duckdb.DuckDBPyConnection, out_dir: Path) -> list[Path]:
    """Write every run event as one JSON file (``NNNNNN-<job>-<EVENT>.json``, in time order) into the
    folder ``out_dir``, made if missing. An existing file there is refused, never written over; each
    event file is written whole or not at all."""
    from radassets.lineage.store import LineageError

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LineageError(f"{out_dir} is a file, not a folder: give --openlineage a folder for the event files")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LineageError(f"cannot make the folder {out_dir}: {e.strerror}") from None
    written = []
    for n, event in enumerate(run_events(con)):
        path = out_dir / f"{n:06d}-{event.job.name}-{event.eventType.value}-{event.run.runId}.json"
        atomic_write_text(path, Serde.to_json(event, indent=2) + "\n")
        written.append(path)
    return written


# -- reading events back -------------------------------------------------------------------------

RUN_FACETS = {"processing_engine": processing_engine_run.ProcessingEngineRunFacet, "radassets": RadassetsRunFacet,
              "errorMessage": error_message_run.ErrorMessageRunFacet}
JOB_FACETS = {"jobType": job_type_job.JobTypeJobFacet, "documentation": documentation_job.DocumentationJobFacet}
DATASET_FACETS = {"version": dataset_version_dataset.DatasetVersionDatasetFacet, "radassets": RadassetsDatasetFacet}


def _facets(raw: dict[str, Any] | None, classes: dict[str, type]) -> dict[str, Any]:
    facets = {}
    for name, value in (raw or {}).items():
        if name not in classes:
            raise ValueError(f"unknown facet {name!r}")
        fields = {k: v for k, v in value.items() if k not in ("_producer", "_schemaURL")}
        facets[name] = classes[name](**fields, producer=value.get("_producer", ""))
    return facets


def read_event(path: Path) -> RunEvent:
    """A run event written by ``export_events``, as the client's classes."""
    raw = json.loads(Path(path).read_text())

    def datasets(cls, items):
        return [cls(namespace=d["namespace"], name=d["name"], facets=_facets(d.get("facets"), DATASET_FACETS))
                for d in items or []]

    return RunEvent(
        eventType=RunState(raw["eventType"]), eventTime=raw["eventTime"], producer=raw["producer"],
        run=Run(runId=raw["run"]["runId"], facets=_facets(raw["run"].get("facets"), RUN_FACETS)),
        job=Job(namespace=raw["job"]["namespace"], name=raw["job"]["name"],
                facets=_facets(raw["job"].get("facets"), JOB_FACETS)),
        inputs=datasets(InputDataset, raw.get("inputs")), outputs=datasets(OutputDataset, raw.get("outputs")))
