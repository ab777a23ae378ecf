"""Imaging: DICOM series to volumes and masks, seeds and patches (no Dagster imports)."""
