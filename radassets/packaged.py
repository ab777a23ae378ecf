"""Where the definitions that ship with radassets are: dataset versions, models and reference tables.

The one place that knows it. ``Settings.data_dir`` (a user's own folder) takes precedence where set.
"""

from __future__ import annotations

from pathlib import Path


def packaged_data_dir() -> Path:
    """The folder holding ``datasets/``, ``models/`` and ``reference/`` as shipped."""
    return Path(__file__).resolve().parent.parent / "data"
