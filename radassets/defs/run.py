"""Materialize assets in the instance at $DAGSTER_HOME from the command line (``make demo``, the CLI).

The runs are recorded in the same instance the UI shows, so `make demo` and the UI agree. A
selection is split by partitioning: assets partitioned by dataset version run once per dataset
version; assets partitioned by (dataset version × model) run once per model, after the ``model``
partitions have been synced with the registry (what the sensor does when the daemon runs).

Reliability of the runs this process executes:
- the instance's storage is created once, under a file lock, so that two commands on a fresh
  ``DAGSTER_HOME`` do not both create its SQLite schema;
- every run carries its process's identity in its tags, and before each run (and while waiting for a
  pool slot) runs of this host whose process died are marked failed and their slots freed
  (``radassets.defs.dead_runs``);
- the slots of a run's pool steps (``embeddings`` in the ``gpu`` pool) are claimed here, before the run
  starts, with a line saying which run holds the pool; this wait can be interrupted. (Dagster's
  in-process executor would wait inside the run, silently, at full CPU, deaf to Ctrl-C.);
- an interrupt (SIGINT, SIGTERM, SIGHUP) stops the command: the current run ends failed, no later
  run starts (``radassets.interrupts``);
- a selection that does not parse, or that matches no asset, is an error before anything runs.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from dagster import (AssetKey, AssetSelection, BetaWarning, DagsterInstance, DagsterRun, Definitions,
                     MultiPartitionKey, MultiPartitionsDefinition, define_asset_job)
from dagster._core.definitions.asset_selection import DagsterInvalidAssetSelectionError
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from filelock import FileLock, Timeout

from radassets import interrupts
from radassets.defs.dead_runs import describe_owner, fail_dead_runs, owner_tags, remove_owner_file, write_owner_file
from radassets.defs.evaluation import OPT_IN
from radassets.errors import RadassetsError
from radassets.settings import Settings

RUN_JOB_NAME = "__ephemeral_asset_job__"  # the name Dagster's ``materialize`` gives its job: the UI shows it
SLOT_POLL_S = 1.0
SLOT_WAIT_REPORT_S = 60.0  # a waiting command says again who holds the pool this often


class SelectionError(RadassetsError, ValueError):
    """An asset selection that does not parse, or that matches no asset."""


def open_instance(progress: Callable[[str], None] = print) -> DagsterInstance:
    """The instance at $DAGSTER_HOME, its storage created under a file lock (two commands starting on a
    fresh home would otherwise both create the SQLite schema, and one fails)."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return DagsterInstance.get()  # Dagster's own error says what to set
    Path(home).mkdir(parents=True, exist_ok=True)
    lock = FileLock(Path(home) / ".radassets-instance.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        progress(f"waiting for another radassets command to open the Dagster instance at {home}")
        lock.acquire(poll_interval=0.2)
    try:
        instance = DagsterInstance.get()
        instance.get_runs(limit=1)  # run storage
        instance.event_log_storage.get_pool_limits()  # event log index
        instance.get_dynamic_partitions("model")
        instance.all_instigator_state()  # schedule storage
    finally:
        lock.release()
    return instance


def sync_model_partitions(instance: DagsterInstance) -> list[str]:
    """Add a ``model`` partition for every registered model (the sensor's job, done at once)."""
    from radassets.defs.models import registry_partition_changes

    added, _, _ = registry_partition_changes(set(instance.get_dynamic_partitions("model")))
    if added:
        instance.add_dynamic_partitions("model", added)
    return added


[(_OPT_IN_KEY, _OPT_IN_VALUE)] = OPT_IN.items()
DEFAULT_SELECTION = f"not tag:{_OPT_IN_KEY}={_OPT_IN_VALUE}"  # every asset but the opt-in ones


def _split(selection: str) -> tuple[list[AssetKey], list[AssetKey], list[AssetKey], list[AssetKey]]:
    """Keys of the selection: unpartitioned; by dataset version, upstream of the models; by dataset version ×
    model; by dataset version, downstream of the models (e.g. the comparison of every model)."""
    from radassets.definitions import defs

    graph = defs.resolve_asset_graph()
    with warnings.catch_warnings():  # Dagster's selection parser calls one of its own beta APIs
        warnings.simplefilter("ignore", BetaWarning)
        try:
            keys = AssetSelection.from_string(selection).resolve(graph)
        except DagsterInvalidAssetSelectionError:
            raise SelectionError(f"invalid asset selection {selection!r}: {_parser_complaint(selection)}") from None
    if not keys:
        names = ", ".join(sorted(k.to_user_string() for k in graph.get_all_asset_keys()))
        raise SelectionError(f"the asset selection {selection!r} matches no asset; the assets are: {names}")
    unpartitioned: list[AssetKey] = []
    single: list[AssetKey] = []
    multi: list[AssetKey] = []
    for key in sorted(keys, key=lambda k: k.to_user_string()):
        partitions = graph.get(key).partitions_def
        (unpartitioned if partitions is None else multi if isinstance(partitions, MultiPartitionsDefinition)
         else single).append(key)
    all_multi = [k for k in graph.get_all_asset_keys() if isinstance(graph.get(k).partitions_def, MultiPartitionsDefinition)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        after_models = AssetSelection.assets(*all_multi).downstream().resolve(graph) if all_multi else set()
    before = [k for k in single if k not in after_models]
    after = [k for k in single if k in after_models]
    return unpartitioned, before, multi, after


def _parser_complaint(selection: str) -> str:
    """What Dagster's selection grammar objects to (``AssetSelection.from_string`` drops it)."""
    try:
        from dagster._core.definitions.antlr_asset_selection.antlr_asset_selection import AntlrAssetSelectionParser

        AntlrAssetSelectionParser(selection)
    except Exception as e:  # noqa: BLE001 - the parser raises a bare Exception with the complaint
        return str(e)
    return "not a selection Dagster understands"


def _pool_steps(keys: list[AssetKey]) -> dict[str, str]:
    """Step key -> pool of the first selected asset (in run order) of each pool (``embeddings``: ``gpu``).

    One step per pool: a run's later step of the same pool (``seed_stability`` after ``embeddings``) can
    only claim the slot once the first has given it back, so Dagster's executor claims it in the run."""
    from radassets.definitions import defs

    selected = set(keys)
    steps: dict[str, str] = {}
    for key in defs.resolve_asset_graph().toposorted_asset_keys:
        op = defs.get_assets_def(key).op
        if key in selected and op.pool and op.pool not in steps.values():
            steps[op.name] = op.pool
    return steps


def _holders(instance: DagsterInstance, pool: str) -> str:
    info = instance.event_log_storage.get_concurrency_info(pool)
    held = []
    for slot in info.claimed_slots:
        run = instance.get_run_by_id(slot.run_id)
        held.append(f"run {slot.run_id} (step {slot.step_key}; "
                    f"{describe_owner(run.tags) if run else 'being started'})")
    return f"pool {pool!r} (limit {info.limit}) is held by {', '.join(held) or 'runs queued before this one'}"


def _claim_pool_slots(instance: DagsterInstance, run_id: str, pool_steps: dict[str, str],
                      progress: Callable[[str], None]) -> None:
    """Claim a slot for each pool step of the run about to start, as Dagster's executor would, but here,
    where the wait is reported, interruptible, and frees the slots of runs whose process died."""
    if not pool_steps:
        return
    waiting = dict(pool_steps)
    reported_at = None
    # The context reads the run id and priority only: the run itself is created when it starts. On an
    # interrupt it withdraws the claims still pending.
    with InstanceConcurrencyContext(instance, DagsterRun(job_name=RUN_JOB_NAME, run_id=run_id)) as claims:
        while True:
            for step, pool in list(waiting.items()):
                if claims.claim(pool, step):
                    del waiting[step]
            if not waiting:
                return
            if fail_dead_runs(instance, progress):
                continue
            if reported_at is None or time.monotonic() - reported_at > SLOT_WAIT_REPORT_S:
                for step, pool in waiting.items():
                    progress(f"{step} waits for a slot: {_holders(instance, pool)} (Ctrl-C stops)")
                reported_at = time.monotonic()
            time.sleep(SLOT_POLL_S)


def _materialize(keys: list[AssetKey], partition_key, instance: DagsterInstance,
                 progress: Callable[[str], None]) -> tuple[bool, str]:
    """One run of ``keys`` (what ``dagster.materialize`` does, with a run id known in advance so that its
    pool slots can be claimed first). Whatever happens, the run does not stay unfinished and holds no slot."""
    from radassets.definitions import defs

    run_id = str(uuid.uuid4())
    write_owner_file(instance, run_id)
    try:
        fail_dead_runs(instance, progress)
        _claim_pool_slots(instance, run_id, _pool_steps(keys), progress)
        job = Definitions(jobs=[define_asset_job(RUN_JOB_NAME, selection=keys)], assets=list(defs.assets),
                          resources=defs.resources).resolve_job_def(RUN_JOB_NAME)
        result = job.execute_in_process(
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}}, instance=instance,
            partition_key=partition_key, raise_on_error=False, tags=owner_tags(), run_id=run_id)
        interrupts.raise_if_interrupted(run_id)  # Dagster ended the run on the interrupt, then carried on
        return result.success, run_id
    except interrupts.Interrupted as e:
        if instance.get_run_by_id(run_id) is not None:  # else it was interrupted before its run was created
            e.run_id = run_id
        raise
    finally:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            instance.report_run_failed(run, "radassets: the command stopped before the run ended")
        remove_owner_file(instance, run_id)


def materialize_dataset_versions(names: Sequence[str], *, settings: Settings, selection: str | None = None,
                                 models: Sequence[str] | None = None, progress: Callable[[str], None] = print) -> bool:
    """Materialize ``selection`` for each dataset version, and for each model where partitioned by model.

    ``selection``: default, every asset but the opt-in ones (``OPT_IN``).
    ``models``: default, every registered model that can run here without a download.
    """
    from radassets import datasets
    from radassets.models import registry
    from radassets.models.pipeline import default_models

    for name in names:
        datasets.get(name, settings.resolved_data_dir())  # unknown names fail before anything runs
    unpartitioned, single, multi, after = _split(selection or DEFAULT_SELECTION)  # a bad selection, too
    if models is None:
        models, skipped = default_models(settings.layout().weights_dir(), settings.resolved_models_dir(),
                                         settings.resolved_data_dir())
        for model, why in skipped.items():
            progress(f"model {model} skipped: {why}")
    for model in models:
        registry.get(model, settings.resolved_models_dir())  # unknown models too
    instance = open_instance(progress)
    added = sync_model_partitions(instance)
    if added:
        progress(f"model partitions added: {', '.join(added)}")
    ok = True
    if unpartitioned:  # e.g. reproductions of published analyses: once, not per dataset version
        success, run_id = _materialize(unpartitioned, None, instance, progress)
        progress(f"{', '.join(k.to_user_string() for k in unpartitioned)}: run {run_id} "
                 f"{'succeeded' if success else 'FAILED'}")
        ok &= success
    for name in names:
        runs = ([(single, name, "")] if single else []) + \
               [(multi, MultiPartitionKey({"dataset_version": name, "model": m}), f" × {m}") for m in models if multi] + \
               ([(after, name, " (every model)")] if after else [])
        for keys, partition_key, label in runs:
            what = ", ".join(k.to_user_string() for k in keys)
            progress(f"materializing {what} for {name}{label} ...")
            success, run_id = _materialize(keys, partition_key, instance, progress)
            progress(f"{name}{label}: run {run_id} {'succeeded' if success else 'FAILED'}")
            ok &= success
            if not success and keys is single:
                break  # the model steps need this dataset version's patches
    return ok


def backfill_model(model: str, dataset_versions: Sequence[str] | None = None, *, settings: Settings,
                   progress: Callable[[str], None] = print) -> bool:
    """Materialize one model's assets (embeddings and what depends on them) for every dataset version
    whose patches are materialized: nothing upstream is recomputed."""
    from radassets import datasets
    from radassets.models import registry

    registry.get(model, settings.resolved_models_dir())
    if dataset_versions:
        names = list(dataset_versions)
    else:  # an invalid definition is named and left out; the others are backfilled
        valid, invalid = datasets.scan_definitions(settings.resolved_data_dir())
        names = sorted(valid)
        for reason in invalid.values():
            progress(f"skipped, not a valid definition: {reason}")
    layout = settings.layout()
    ready = [n for n in names if layout.is_finished("patches", n)]
    for n in sorted(set(names) - set(ready)):
        progress(f"{n}: skipped, its patches are not materialized")
    instance = open_instance(progress)
    sync_model_partitions(instance)
    _, _, multi, after = _split(f"key:embeddings+ and {DEFAULT_SELECTION}")
    ok = True
    for name in ready:
        success, run_id = _materialize(multi, MultiPartitionKey({"dataset_version": name, "model": model}), instance,
                                       progress)
        progress(f"{name} × {model}: run {run_id} {'succeeded' if success else 'FAILED'}")
        ok &= success
        if success and after:  # what compares every model of the dataset version, now with this one
            success, run_id = _materialize(after, name, instance, progress)
            progress(f"{name} (every model): run {run_id} {'succeeded' if success else 'FAILED'}")
            ok &= success
    return ok
