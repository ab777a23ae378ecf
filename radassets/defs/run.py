"""Materialize assets for dataset versions in the instance at $DAGSTER_HOME, from the command line.

The runs are recorded in the same instance the UI shows, so `make demo` and the UI agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dagster import DagsterInstance, materialize


def materialize_dataset_versions(names: Sequence[str], *, selection: str = "*",
                                 progress: Callable[[str], None] = print) -> bool:
    from radassets import datasets
    from radassets.definitions import defs

    for name in names:
        datasets.get(name)  # unknown names fail before anything runs
    instance = DagsterInstance.get()
    assets = list(defs.assets)
    ok = True
    for name in names:
        progress(f"materializing {selection!r} for dataset version {name} ...")
        result = materialize(assets, instance=instance, partition_key=name, selection=selection,
                             resources=defs.resources, raise_on_error=False,
                             run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}})
        status = "succeeded" if result.success else "FAILED"
        progress(f"{name}: run {result.run_id} {status}")
        ok &= result.success
    return ok
