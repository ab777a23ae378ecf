"""The error every QC table records: a short code, the item it names and the cause."""

from __future__ import annotations

from radassets.errors import RadassetsError


class QCError(RadassetsError, ValueError):
    """A failure recorded in a QC table: a short ``code`` (one of ``CODES``) and a message naming the item."""

    CODES: tuple[str, ...] = ()
    NOUN = "item"

    def __init__(self, code: str, series: str, message: str):
        assert code in self.CODES, code
        self.code = code
        self.series = series
        super().__init__(f"{self.NOUN} {series}: {message}")
