"""``radassets demo``: the generated demo collection."""

from __future__ import annotations

from pathlib import Path

import click

from radassets.cli.output import progress
from radassets.cli.settings import current_layout, current_settings


@click.group(help="the generated demo collection")
def demo() -> None:
    pass


@demo.command("generate", help="generate the demo collection (skipped if already current)")
@click.option("--root", default=None, help="output folder (default: $RADASSETS_HOME/demo)")
@click.option("--force", is_flag=True, help="regenerate even if present")
def generate(root: str | None, force: bool) -> None:
    # Inside: the generator (SimpleITK, highdicom) takes over 1 s to import, which `radassets --help` would pay.
    from radassets.demo import ensure_demo_collection, generate_demo_collection

    if not root:
        current_layout().require_local("radassets demo generate")
    folder = Path(root) if root else current_layout().demo_root()
    spec = current_settings().demo()
    collection = (generate_demo_collection(folder, spec, progress=progress) if force
                  else ensure_demo_collection(folder, spec, progress=progress))
    print(f"demo collection at {collection.root}")
