"""The settings of one command line: read once (environment, ``radassets.toml``, defaults), then shared by
its command. The CLI is an edge: it reads the settings and hands paths and the layout to the library."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from radassets.layout import Layout
    from radassets.settings import Settings

_KEY = "radassets.settings"


def current_settings() -> Settings:
    """The settings of the command line being run (read on first use, kept in the root context's meta)."""
    meta = click.get_current_context().find_root().meta
    if _KEY not in meta:
        from radassets.settings import Settings  # pydantic-settings: not paid by `radassets --help`

        meta[_KEY] = Settings.load()
    return meta[_KEY]


def current_layout() -> Layout:
    """Where the artifacts of the current settings are."""
    return current_settings().layout()
