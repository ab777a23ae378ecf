"""``radassets models``: the model registry (data/models), and the Dagster partitions of its models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from radassets.cli.output import print_json, progress
from radassets.cli.settings import current_layout, current_settings

# The library is imported inside the commands: the registry (pydantic) takes 0.3 s, checking or running a model
# (torch, onnxruntime) and Dagster over 10 s, which `radassets --help` would pay.


@click.group(help="the model registry (data/models)")
def models() -> None:
    pass


@models.command("list", help="registered models, and whether each can run here")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    from radassets.models import registry
    from radassets.models.pipeline import runnable_here

    settings = current_settings()
    # An invalid entry is listed as such; the others still are.
    entries, invalid = registry.scan_registry(settings.resolved_models_dir())
    if as_json:
        for reason in invalid.values():  # on stderr, so that standard output stays a mapping of entries
            print(f"radassets: warning: {reason}", file=sys.stderr)
        print_json({name: e.model_dump(mode="json") for name, e in entries.items()})
        return
    rows = {name: None for name in invalid} | dict(entries)
    for name in sorted(rows):
        e = rows[name]
        if e is None:
            print(f"{name:16s} {'?':11s} {'?':>5} {'invalid':13s} {invalid[name]}")
            continue
        ok, _ = runnable_here(e, current_layout().weights_dir(), settings.resolved_data_dir())
        pinned = "" if e.weights is None or e.weights.sha256 else "  (weights sha256 not pinned)"
        print(f"{name:16s} {e.kind:11s} {e.embedding_dim or '?':>5} {'ready' if ok else 'needs weights':13s} "
              f"{e.title}{pinned}")


FILE = click.Path(path_type=Path)


@models.command("add", help="register your own model: a TorchScript or ONNX file with a preprocessing spec, or a table "
                            "of precomputed embeddings")
@click.argument("name", help="model name, [a-z0-9_]: its partition key")
@click.option("--torchscript", type=FILE, default=None, help="a TorchScript file (torch.jit.save)")
@click.option("--onnx", type=FILE, default=None, help="an ONNX file")
@click.option("--table", type=FILE, default=None, help="a CSV or parquet table of embeddings")
@click.option("--preprocessing", type=FILE, default=None,
              help="YAML: spacing_mm, input_size, axes, intensity (for --torchscript and --onnx)")
@click.option("--id-column", default=None, help="--table: the id column")
@click.option("--id-kind", default="PatientID", type=click.Choice(["PatientID", "SeriesInstanceUID", "seed_id"]))
@click.option("--title", default=None)
@click.option("--licence", default="as stated by the model's authors")
def add(name: str, torchscript: Path | None, onnx: Path | None, table: Path | None, preprocessing: Path | None,
        id_column: str | None, id_kind: str, title: str | None, licence: str) -> None:
    from radassets.models.add import add_model

    entry, path = add_model(name, torchscript=torchscript, onnx=onnx, table=table,
                            preprocessing=preprocessing, id_column=id_column, id_kind=id_kind,
                            title=title, licence=licence, registry_dir=current_settings().resolved_models_dir(),
                            weights_dir=current_layout().weights_dir())
    print(f"registered {entry.name} ({entry.kind}, {entry.embedding_dim}-d) in {path}")
    _sync_partitions()
    print(f"next: radassets models backfill {entry.name}   (or launch a backfill of its partitions in the UI)")


def _sync_partitions() -> None:
    if not os.environ.get("DAGSTER_HOME"):
        print("DAGSTER_HOME is not set: the sensor model_registry_sensor adds the partition when the UI runs")
        return
    from radassets.defs.run import open_instance, sync_model_partitions

    added = sync_model_partitions(open_instance())
    print(f"model partitions added: {', '.join(added)}" if added else "model partitions already match the registry")


@models.command("sync", help="add a 'model' partition for every registered model (what the sensor does)")
def sync() -> None:
    _sync_partitions()


@models.command("backfill",
                help="materialize a model's embeddings for every dataset version with patches; nothing upstream reruns")
@click.argument("name")
@click.option("--dataset-version", multiple=True, help="only these (repeatable)")
def backfill(name: str, dataset_version: tuple[str, ...]) -> None:
    from radassets.defs.run import backfill_model

    if not backfill_model(name, list(dataset_version) or None, settings=current_settings(), progress=progress):
        sys.exit(1)
