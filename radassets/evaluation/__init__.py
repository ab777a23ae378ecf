"""Evaluation: labels, probes, survival statistics, stability, comparison and figures (no Dagster imports)."""
