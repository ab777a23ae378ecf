"""The one base of every error a user can act on.

A ``RadassetsError`` names the item (dataset version, series, file, model...) and the cause in its
message. The CLI catches this base once and prints the message as one line (exit status 2), with no
traceback; an asset lets it fail the step with the same message. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class RadassetsError(Exception):
    """An error caused by the input, the settings or the environment, explained in its message."""
