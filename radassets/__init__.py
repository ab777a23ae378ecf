"""radassets: reproducible radiology-AI pipelines as Dagster assets."""
__version__ = "0.1.0"
