"""Where the definitions that ship with radassets are: dataset versions, models and reference tables.

The one place that knows it. ``Settings.data_dir`` (a user's own folder) takes precedence where set.

In the repository they are the top-level ``data/`` folder. A wheel carries that folder as the package
``radassets.data`` (setup.py maps it, pyproject's ``package-data`` lists its files), found through
``importlib.resources``. A source checkout (an editable install, or the code on ``PYTHONPATH``) is
recognised by the ``pyproject.toml`` beside the package, and reads its own ``data/``: not another
checkout's that an installed editable finder may map ``radassets.data`` to.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from radassets.errors import RadassetsError

PACKAGE = "radassets.data"


def packaged_data_dir() -> Path:
    """The folder holding ``datasets/``, ``models/`` and ``reference/`` as shipped."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "data" / "datasets").is_dir():
        return checkout / "data"
    try:
        root = resources.files(PACKAGE)
    except ModuleNotFoundError:
        raise RadassetsError(f"the shipped definitions (package {PACKAGE}) are not installed beside radassets "
                             f"({checkout}): reinstall radassets") from None
    if not isinstance(root, Path):  # e.g. a zip import: the pipeline reads the tables as files
        raise RadassetsError(f"the shipped definitions are not a folder but {root}: install radassets unpacked")
    return root
