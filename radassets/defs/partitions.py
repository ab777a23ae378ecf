"""Partition dimensions: dataset versions (static, from data/datasets) and models (dynamic)."""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition, StaticPartitionsDefinition

from radassets import datasets
from radassets.settings import Settings

dataset_version_partitions = StaticPartitionsDefinition(sorted(datasets.load_all(Settings.load().resolved_data_dir())))

# Keys are model-registry names; a sensor keeps them in sync with the registry.
model_partitions = DynamicPartitionsDefinition(name="model")
