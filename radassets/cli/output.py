"""What every command prints the same way: JSON on standard output, progress on standard error."""

from __future__ import annotations

import json
import sys
from typing import Any


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def progress(message: str) -> None:
    """One line of progress on standard error, at once: standard output stays the command's result."""
    print(message, file=sys.stderr, flush=True)
