"""The Dagster layer: partitions, resources and thin assets over the library layers."""
