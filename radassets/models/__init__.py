"""Models: registry, weights, architectures, preprocessing and embedding (no Dagster imports)."""
