"""Materialize assets in the instance at $DAGSTER_HOME from the command line (``make demo``, the CLI).

The runs are submitted to the same instance the UI shows, through its run queue and pools, and followed
to their end (``radassets.defs.launch``), so `make demo` and the UI agree. A selection is split by
partitioning: assets partitioned by dataset version run once per dataset version; assets partitioned by
(dataset version × model) run once per model, after the ``model`` partitions have been synced with the
registry (what the sensor does when the daemon runs). The runs of a command follow one another: a later
one needs what the earlier made (the models' runs need the patches).

Reliability:
- the instance's storage is created once, under a file lock, so that two commands on a fresh
  ``DAGSTER_HOME`` do not both create its SQLite schema;
- runs whose worker died are marked failed and their slots freed, pool waits are reported, and an
  interrupt (SIGINT, SIGTERM, SIGHUP) ends the current run failed and starts no later one
  (``radassets.defs.launch``, ``radassets.defs.dead_runs``, ``radassets.interrupts``);
- a selection that does not parse, or that matches no asset, is an error before anything runs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from dagster import AssetKey, AssetSelection, BetaWarning, DagsterInstance, MultiPartitionKey, MultiPartitionsDefinition
from dagster._core.definitions.asset_selection import DagsterInvalidAssetSelectionError
from filelock import FileLock, Timeout

from radassets import profile
from radassets.defs.launch import Launcher, describe
from radassets.defs.evaluation import OPT_IN
from radassets.errors import RadassetsError
from radassets.settings import Settings

class SelectionError(RadassetsError, ValueError):
    """An asset selection that does not parse, or that matches no asset."""


class InstanceConfigError(RadassetsError):
    """A dagster.yaml whose storage cannot be opened for a reason the user fixes in that file."""


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
        try:
            instance = DagsterInstance.get()
        except ModuleNotFoundError as e:
            if e.name != "psycopg":
                raise
            # SQLAlchemy 2.1 opens a bare postgresql:// URL with psycopg 3; dagster-postgres ships psycopg2.
            raise InstanceConfigError(
                f"{Path(home) / 'dagster.yaml'}: storage postgres_url must name the driver: "
                "postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DATABASE (a bare postgresql:// URL needs psycopg 3, "
                "which is not installed)") from None
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


class _MergingLauncher(Launcher):
    """A launcher that merges the lineage events of each run once it ended, here in the command's process, between
    runs (issue 18: the merge's DuckDB connect, commit and checkpoint were most of a quick step's recording): the
    steps do not merge (``radassets.defs.lineage``), readers merge what is still pending. Not in a background
    thread: an interrupt must find the command between runs, not creating one.
    Without waiting for the store's lock: a store another process holds or cannot open costs the command nothing,
    its events wait for the next merge."""

    def __init__(self, instance: DagsterInstance, progress: Callable[[str], None], settings: Settings):
        super().__init__(instance, progress)
        self.layout = settings.layout()

    def run(self, keys: Sequence[AssetKey], partition_key: str | None, label: str,
            more: bool = False) -> tuple[bool, str]:
        result = super().run(keys, partition_key, label, more=more)
        self._merge()
        return result

    def _merge(self) -> None:
        from radassets.lineage import store

        try:
            with profile.phase("command: lineage merge"):
                store.merge(self.layout.lineage_dir(), wait=False, events=self.layout.lineage_events_dir())
        except Exception as e:  # noqa: BLE001 - the events are written: merged by the next merge or reader
            self.progress(f"lineage events written, not merged yet: {type(e).__name__}: {e}")


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
    launcher = _MergingLauncher(instance, progress, settings)
    if added:
        progress(f"model partitions added: {', '.join(added)}")
    ok = True
    runs_of = {name: ([(single, name, "")] if single else []) +
               [(multi, MultiPartitionKey({"dataset_version": name, "model": m}), f" × {m}") for m in models if multi] +
               ([(after, name, " (every model)")] if after else []) for name in names}
    left = bool(unpartitioned) + sum(len(runs) for runs in runs_of.values())  # runs that may still follow
    try:
        if unpartitioned:  # e.g. reproductions of published analyses: once, not per dataset version
            left -= 1
            success, _ = launcher.run(unpartitioned, None, describe(unpartitioned), more=left > 0)
            ok &= success
        for name in names:
            for keys, partition_key, label in runs_of[name]:
                left -= 1
                progress(f"materializing {describe(keys)} for {name}{label} ...")
                success, _ = launcher.run(keys, partition_key, f"{name}{label}", more=left > 0)
                ok &= success
                if not success and keys is single:
                    left -= len(runs_of[name]) - 1
                    break  # the model steps need this dataset version's patches
    finally:
        launcher.close()  # a worker started for a run that did not come (a failure, an interrupt) exits
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
    launcher = _MergingLauncher(instance, progress, settings)
    _, _, multi, after = _split(f"key:embeddings+ and {DEFAULT_SELECTION}")
    ok = True
    try:
        for i, name in enumerate(ready):
            last = i == len(ready) - 1
            success, _ = launcher.run(multi, MultiPartitionKey({"dataset_version": name, "model": model}),
                                      f"{name} × {model}", more=bool(after) or not last)
            ok &= success
            if success and after:  # what compares every model of the dataset version, now with this one
                success, _ = launcher.run(after, name, f"{name} (every model)", more=not last)
                ok &= success
    finally:
        launcher.close()
    return ok
