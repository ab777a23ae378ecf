"""Partition dimensions: dataset versions (static, from data/datasets) and models (dynamic).

The dataset versions are read when the code location loads. An invalid definition does not stop it: the
valid ones become partitions, and each invalid one is logged as a warning (the terminal of ``dagster dev``)
and named, with its file and field, at the top of the ``cohort`` asset's description (``cohort_problems``),
where the UI shows it with no run and no daemon: the first line in the catalog's list of assets, the whole
of it on the asset's page. (Definitions metadata is not shown by the UI; a sensor's skip reason needs the
daemon and a look at the Automation tab; an asset check only shows after a run.) The cohort is the first
asset of every dataset version. Asking for the invalid one by name (a run, the CLI) is the error naming
file and field.
"""

from __future__ import annotations

import logging

from dagster import DynamicPartitionsDefinition, StaticPartitionsDefinition

from radassets import datasets
from radassets.settings import Settings

_valid, invalid_dataset_versions = datasets.scan_definitions(Settings.load().resolved_data_dir())
for _reason in invalid_dataset_versions.values():
    logging.getLogger(__name__).warning("dataset definition not loaded, so not a partition: %s", _reason)

dataset_version_partitions = StaticPartitionsDefinition(sorted(_valid))

# Keys are model-registry names; a sensor keeps them in sync with the registry.
model_partitions = DynamicPartitionsDefinition(name="model")


def cohort_problems() -> str:
    """Markdown ahead of the ``cohort`` description naming each invalid dataset definition; empty if none."""
    if not invalid_dataset_versions:
        return ""
    # Each reason a code span: file names and patterns hold Markdown's '_' and '*'.
    lines = "\n".join("- `" + reason.replace("`", "'") + "`" for _, reason in sorted(invalid_dataset_versions.items()))
    # The first line is what the catalog's list of assets shows, as plain text: no Markdown in it.
    return (f"Invalid dataset definitions, not partitions until fixed and the code location reloaded "
            f"({len(invalid_dataset_versions)}):\n\n{lines}\n\n")
