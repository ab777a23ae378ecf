"""Evaluation: labels, probes, survival statistics, stability, comparison and figures (no Dagster imports)."""

# Seed-stability defaults (``perturbation``), here so that the definitions' run config shows them without
# importing the statistics stack.
TRIALS = 50
SD_VOXELS = 4.0  # variance 16 voxel² per axis
