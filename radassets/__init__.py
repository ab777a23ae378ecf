"""radassets: reproducible radiology-AI pipelines as Dagster assets."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__version__ = "0.1.0"


# Here, beside the version, so that the lineage runs (radassets.defs.lineage) and the reports' citations
# (radassets.evaluation.citations, below the Dagster layer) name the code the same way.
@functools.cache
def git_commit() -> str | None:
    """The commit of the code that runs (with ``-dirty`` when the working tree has changes), if in git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
