"""The one mechanism that records lineage: ``@recorded`` under every ``@asset``.

It wraps the asset's function, so every way of materializing (the UI, a backfill, ``radassets
pipeline run``, a test's ``materialize``) records the same way and no asset writes lineage itself:

- before the function runs: a ``START`` event (run, job, partition, code version, git commit) with
  the inputs (the upstream asset partitions and the data versions Dagster holds for them then);
- after it returns: a ``COMPLETE`` event with the same inputs and the output (this partition's
  data version, its settings facet, its metadata and its items, read by ``radassets.lineage.items``;
  if they cannot be read, the output without items and a warning, never a failed asset);
- if it raises: a ``FAIL`` event with the error (``ABORT`` for an interrupt), and the exception goes
  on to Dagster;
- all of it under the partition's lock (``radassets.defs.locks``): a second run of the same partition
  waits, saying which run holds it.

Events are files (``radassets.lineage.store``). The wrapper does not merge them into DuckDB: that (statements,
commit, checkpoint) cost a quick step most of its time. The command that ran the step merges once its run
ended (``radassets.defs.run``), and every reader merges first; a step merges, without waiting, only
a backlog (more than ``MERGE_BACKLOG`` pending files, or one older than ``MERGE_AFTER_S``: runs launched from the
UI, which no command follows). No ``from __future__ import annotations``: Dagster inspects the wrapped signature.
"""

import dataclasses
import functools
import os
import time
import uuid
from typing import Any

from dagster import (AssetKey, AssetRecordsFilter, DagsterInstance, Failure, MaterializeResult,
                     MultiPartitionsDefinition, MetadataValue)

import radassets
from radassets import git_commit, profile
from radassets.defs.locks import exclusive_partition
from radassets.dataplane import Compute
from radassets.lineage import store
from radassets.lineage.store import CHUNK_SUFFIX
from radassets.lineage.chunks import ItemRecorder
from radassets.lineage.items import ITEMS_OF_RESULTS, output_record
from radassets.settings import Settings
from radassets.storage import is_local

RUN_NAMESPACE = uuid.UUID("8f6f2a52-3c1e-4d6b-9a57-1f2a1e5c9b10")  # radassets lineage run ids (uuid5)
MAX_METADATA_CHARS = 2000  # inline images and long tables stay in Dagster; the facet keeps the numbers
MERGE_BACKLOG = 64  # pending event files a step merges beyond (no command merges runs launched from the UI)
MERGE_AFTER_S = 60.0  # or when the oldest pending file is older than this


def _partition(context) -> tuple[str | None, dict[str, str] | None]:
    if not context.has_partition_key:
        return None, None
    key = context.partition_key
    if isinstance(context.assets_def.partitions_def, MultiPartitionsDefinition):
        return str(key), dict(key.keys_by_dimension)
    return str(key), {"dataset_version": str(key)}


def _latest_version(instance: DagsterInstance, asset: AssetKey, partition_key: str | None) -> tuple[str, str] | None:
    """(data version, Dagster run id) of the latest materialization of one asset partition."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset, asset_partitions=[partition_key] if partition_key else None), limit=1).records
    if not records:
        return None
    version = records[0].asset_materialization.tags.get("dagster/data_version")
    return (version, records[0].run_id) if version else None


def _upstream_partitions(instance: DagsterInstance, upstream, partition: dict[str, str] | None) -> list[str | None]:
    """The partitions of ``upstream`` that one partition of ours reads: the same key, its dataset version, or
    (for a per-dataset-version asset over a per-model one) every materialized model of that dataset version."""
    if upstream.partitions_def is None:
        return [None]
    if partition is None:
        return []
    if isinstance(upstream.partitions_def, MultiPartitionsDefinition):
        if "model" in partition:
            return [f"{partition['dataset_version']}|{partition['model']}"]
        materialized = instance.get_materialized_partitions(upstream.key)
        return [k for k in sorted(materialized) if k.split("|")[0] == partition["dataset_version"]]
    return [partition["dataset_version"]]


def _inputs(context, partition: dict[str, str] | None) -> list[dict]:
    inputs = []
    graph = context.job_def.asset_layer.asset_graph
    for key in sorted(context.assets_def.asset_deps[context.asset_key], key=lambda k: k.to_user_string()):
        upstream = graph.get(key)
        for upstream_partition in _upstream_partitions(context.instance, upstream, partition):
            found = _latest_version(context.instance, key, upstream_partition)
            if found:
                inputs.append({"asset": key.to_user_string(), "partition_key": upstream_partition,
                               "version": found[0], "facets": {"dagster_run_id": found[1]}})
    return inputs


def _metadata(result) -> dict:
    if not isinstance(result, MaterializeResult):
        return {}
    out: dict[str, Any] = {}
    for name, value in (result.metadata or {}).items():
        raw = value.value if isinstance(value, MetadataValue) else value
        if isinstance(raw, (int, float, bool)) or raw is None or (isinstance(raw, str) and len(raw) <= MAX_METADATA_CHARS):
            out[name] = raw
        elif isinstance(raw, (dict, list)) and len(str(raw)) <= MAX_METADATA_CHARS:
            out[name] = raw
    return out


def _backlog(events) -> bool:
    """Whether the pending event files are many (over ``MERGE_BACKLOG``) or one of them old (over ``MERGE_AFTER_S``):
    one listing of the folder. (On an object store, by their number only: a listing there gives no ages cheaply.)
    Only START/END events count, not the items chunks a step's own workers write (one per task: a step of many
    series would otherwise merge its own chunks, seconds of its time, though its command merges them after it)."""
    pending = events / "pending"
    if not is_local(pending):
        return len([p for p in pending.glob("*.json") if not p.name.endswith(CHUNK_SUFFIX)]) > MERGE_BACKLOG
    oldest, count = time.time(), 0
    try:
        with os.scandir(pending) as entries:
            for entry in entries:
                if entry.name.endswith(".json") and not entry.name.endswith(CHUNK_SUFFIX):
                    count += 1
                    oldest = min(oldest, entry.stat().st_mtime)
    except FileNotFoundError:
        return False
    return count > MERGE_BACKLOG or time.time() - oldest > MERGE_AFTER_S


def _merge(context, root, events) -> None:
    """Merge a backlog, without waiting. The events are written already: nothing pending is lost, so a store that
    cannot take them now (locked, or broken) costs the run nothing, and the next merge picks them up."""
    try:
        if _backlog(events):
            store.merge(root, wait=False, events=events)
    except Exception as e:  # noqa: BLE001
        context.log.warning(f"lineage events written, not merged yet: {type(e).__name__}: {e}")


def _error(e: BaseException) -> str:
    if isinstance(e, Failure):
        return e.description or str(e) or "Failure"
    return f"{type(e).__name__}: {e}"


def lineage_run_id(context) -> str:
    """The lineage run of this step attempt: one per attempt (a retry is a run of its own), the same wherever it
    is computed (the recorder and the step's workers)."""
    partition_key, _ = _partition(context)
    key = f"{context.run.run_id}/{context.asset_key.to_user_string()}/{partition_key or ''}/{context.retry_number}"
    return str(uuid.uuid5(RUN_NAMESPACE, key))


def step_compute(context, settings: Settings) -> Compute:
    """Where the step's items run (``Settings.compute``), and, for an asset whose items the workers record
    (``radassets.lineage.items.ITEMS_OF_RESULTS``), the recorder that writes each result's items there."""
    compute = settings.compute()
    asset = context.asset_key.to_user_string()
    if asset not in ITEMS_OF_RESULTS:
        return compute
    recorder = ItemRecorder(lineage_run_id(context), asset, settings.layout().lineage_events_dir())
    return dataclasses.replace(compute, record=recorder)


def recorded(fn):
    """Record the asset's materializations (started, completed, failed or interrupted) in the lineage store."""

    @functools.wraps(fn)
    def wrapper(context, *args, **kwargs):
        asset = context.asset_key.to_user_string()
        layout = context.resources.storage.layout()  # every asset has the ``storage`` resource
        root, events = layout.lineage_dir(), layout.lineage_events_dir()
        partition_key, partition = _partition(context)
        run = {"run_id": lineage_run_id(context), "dagster_run_id": context.run.run_id,
               "partition_key": partition_key, "partition": partition,
               "code_version": context.assets_def.code_versions_by_key.get(context.asset_key),
               "git_commit": git_commit(), "radassets_version": radassets.__version__}
        job = {"namespace": "radassets", "name": asset, "description": context.assets_def.descriptions_by_key.get(
            context.asset_key)}
        # What the asset reads, as it starts: a concurrent run that rematerializes an upstream partition
        # meanwhile does not change what this one read.
        labels = {"asset": asset, "partition": partition_key}  # of the bench's phases (radassets.profile)
        with profile.phase("lineage: inputs and start event", **labels):
            inputs = _inputs(context, partition)
            store.write_event({"event_type": "START", "run": run, "job": job, "inputs": inputs}, root, events)
        ended = False

        def end(event_type: str, run_facets: dict, outputs: list[dict] | None = None) -> None:
            nonlocal ended
            store.write_event({"event_type": event_type, "run": {**run, **run_facets}, "job": job, "inputs": inputs,
                               **({"outputs": outputs} if outputs is not None else {})}, root, events)
            ended = True
            _merge(context, root, events)

        try:
            try:
                with profile.phase("asset function", **labels):
                    result = fn(context, *args, **kwargs)
            except Exception as e:
                end("FAIL", {"error": _error(e)})
                raise
            with profile.phase("lineage: items and end event", **labels):
                try:
                    # The items of an asset whose workers recorded them are in its chunks (step_compute).
                    settings, items = output_record(layout, asset, partition,
                                                    with_items=asset not in ITEMS_OF_RESULTS)
                    facets = {"settings": settings, "metadata": _metadata(result)}
                except Exception as e:  # noqa: BLE001 - the asset succeeded; a lineage reader's problem must not fail it
                    context.log.warning(f"lineage: the outputs of {asset} could not be read for their items: "
                                        f"{type(e).__name__}: {e}")
                    items, facets = [], {"metadata": _metadata(result), "lineage_error": f"{type(e).__name__}: {e}"}
                version = (result.data_version.value if isinstance(result, MaterializeResult) and result.data_version
                           else None)
                end("COMPLETE", {}, [{"asset": asset, "partition_key": partition_key, "version": version,
                                      "items": items, "facets": facets}] if version else [])
            return result
        except BaseException as e:
            # Anything but an Exception (an interrupt, Dagster terminating the run) is an abort, wherever it lands
            # after the start: in the asset, while its items are read, or before its end was written.
            if not ended:
                store.write_event({"event_type": "ABORT", "run": {**run, "error": _error(e)}, "job": job,
                                   "inputs": inputs}, root, events)  # merged later: an interrupt does not wait
            raise

    wrapper.radassets_recorded = True
    # One run at a time per partition (radassets.defs.locks): what a step writes and records is its own.
    return exclusive_partition(wrapper)
