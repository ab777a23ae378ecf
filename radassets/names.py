"""Names a user gives to dataset versions and models, checked before they become anything else.

Such a name becomes a file name (``data/datasets/NAME.yaml``, ``data/models/NAME.yaml``), a folder
(``$RADASSETS_HOME/local/NAME``) and a Dagster partition key, so it must be safe as all three:
1 to ``NAME_MAX_LENGTH`` characters among ``a-z``, ``0-9`` and ``_``. The whole string must match
(``re.fullmatch``): ``re.match`` with ``$`` would accept a trailing newline, and a name like
``../x`` would reach outside its folder.
"""

from __future__ import annotations

import re

from radassets.errors import RadassetsError

NAME_MAX_LENGTH = 64
NAME_RULE = f"1 to {NAME_MAX_LENGTH} characters among a-z, 0-9 and _"
_NAME = re.compile(rf"[a-z0-9_]{{1,{NAME_MAX_LENGTH}}}")
_SHOWN_CHARACTERS = 40  # of a rejected name in the message: a 300-character name stays on a readable line


class InvalidNameError(RadassetsError, ValueError):
    """A dataset version or model name that cannot be a file name and a partition key."""


def is_valid_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def shown(value: object) -> str:
    """``value`` as one printable line (``repr`` escapes newlines), shortened when long."""
    if isinstance(value, str) and len(value) > _SHOWN_CHARACTERS:
        return f"{value[:_SHOWN_CHARACTERS]!r}... ({len(value)} characters)"
    return repr(value)


def name_problem(kind: str, value: object) -> str | None:
    """Why ``value`` is not a valid ``kind`` name (e.g. "dataset version"), or None if it is."""
    if is_valid_name(value):
        return None
    return f"{kind} name {shown(value)} is not valid: use {NAME_RULE} (it is a file name and a partition key)"


def check_name(kind: str, value: object) -> str:
    """``value`` if it is a valid ``kind`` name, else an ``InvalidNameError`` saying the rule."""
    problem = name_problem(kind, value)
    if problem:
        raise InvalidNameError(problem)
    return value  # type: ignore[return-value]  # a str, checked above
