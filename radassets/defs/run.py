"""Materialize assets in the instance at $DAGSTER_HOME from the command line (``make demo``, the CLI).

The runs are recorded in the same instance the UI shows, so `make demo` and the UI agree. A
selection is split by partitioning: assets partitioned by dataset version run once per dataset
version; assets partitioned by (dataset version × model) run once per model, after the ``model``
partitions have been synced with the registry (what the sensor does when the daemon runs).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

from dagster import (AssetKey, AssetSelection, BetaWarning, DagsterInstance, MultiPartitionKey,
                     MultiPartitionsDefinition, materialize)

from radassets.defs.evaluation import OPT_IN


def sync_model_partitions(instance: DagsterInstance) -> list[str]:
    """Add a ``model`` partition for every registered model (the sensor's job, done at once)."""
    from radassets.defs.models import registry_partition_changes

    added, _ = registry_partition_changes(set(instance.get_dynamic_partitions("model")))
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
        keys = AssetSelection.from_string(selection).resolve(graph)
    unpartitioned, single, multi = [], [], []
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


def _materialize(keys: list[AssetKey], partition_key, instance: DagsterInstance) -> tuple[bool, str]:
    from radassets.definitions import defs

    result = materialize(list(defs.assets), instance=instance, partition_key=partition_key, selection=keys,
                         resources=defs.resources, raise_on_error=False,
                         run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}})
    return result.success, result.run_id


def materialize_dataset_versions(names: Sequence[str], *, selection: str | None = None,
                                 models: Sequence[str] | None = None, progress: Callable[[str], None] = print) -> bool:
    """Materialize ``selection`` for each dataset version, and for each model where partitioned by model.

    ``selection``: default, every asset but the opt-in ones (``OPT_IN``).
    ``models``: default, every registered model that can run here without a download.
    """
    from radassets import datasets
    from radassets.models import registry
    from radassets.models.pipeline import default_models

    for name in names:
        datasets.get(name)  # unknown names fail before anything runs
    if models is None:
        models, skipped = default_models()
        for model, why in skipped.items():
            progress(f"model {model} skipped: {why}")
    for model in models:
        registry.get(model)  # unknown models too
    instance = DagsterInstance.get()
    added = sync_model_partitions(instance)
    if added:
        progress(f"model partitions added: {', '.join(added)}")
    unpartitioned, single, multi, after = _split(selection or DEFAULT_SELECTION)
    ok = True
    if unpartitioned:  # e.g. reproductions of published analyses: once, not per dataset version
        success, run_id = _materialize(unpartitioned, None, instance)
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
            success, run_id = _materialize(keys, partition_key, instance)
            progress(f"{name}{label}: run {run_id} {'succeeded' if success else 'FAILED'}")
            ok &= success
            if not success and keys is single:
                break  # the model steps need this dataset version's patches
    return ok


def backfill_model(model: str, dataset_versions: Sequence[str] | None = None,
                   progress: Callable[[str], None] = print) -> bool:
    """Materialize one model's assets (embeddings and what depends on them) for every dataset version
    whose patches are materialized: nothing upstream is recomputed."""
    from radassets import datasets
    from radassets.imaging.pipeline import step_dir
    from radassets.models import registry

    registry.get(model)
    names = list(dataset_versions) if dataset_versions else sorted(datasets.load_all())
    ready = [n for n in names if (step_dir("patches", n) / "manifest.json").is_file()]
    for n in sorted(set(names) - set(ready)):
        progress(f"{n}: skipped, its patches are not materialized")
    instance = DagsterInstance.get()
    sync_model_partitions(instance)
    _, _, multi, after = _split(f"key:embeddings+ and {DEFAULT_SELECTION}")
    ok = True
    for name in ready:
        success, run_id = _materialize(multi, MultiPartitionKey({"dataset_version": name, "model": model}), instance)
        progress(f"{name} × {model}: run {run_id} {'succeeded' if success else 'FAILED'}")
        ok &= success
        if success and after:  # what compares every model of the dataset version, now with this one
            success, run_id = _materialize(after, name, instance)
            progress(f"{name} (every model): run {run_id} {'succeeded' if success else 'FAILED'}")
            ok &= success
    return ok
