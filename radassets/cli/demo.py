"""``radassets demo``: the generated demo collection."""

from __future__ import annotations

from pathlib import Path

import click

from radassets.cli.output import progress


@click.group(help="the generated demo collection")
def demo() -> None:
    pass


@demo.command("generate", help="generate the demo collection (skipped if already current)")
@click.option("--root", default=None, help="output folder (default: $RADASSETS_HOME/demo)")
@click.option("--force", is_flag=True, help="regenerate even if present")
def generate(root: str | None, force: bool) -> None:
    # Inside: the generator (SimpleITK, highdicom) takes over 1 s to import, which `radassets --help` would pay.
    from radassets.demo import DemoSpec, ensure_demo_collection, generate_demo_collection
    from radassets.idc.index import demo_root

    folder = Path(root) if root else demo_root()
    spec = DemoSpec.from_env()
    collection = (generate_demo_collection(folder, spec, progress=progress) if force
                  else ensure_demo_collection(folder, spec, progress=progress))
    print(f"demo collection at {collection.root}")
