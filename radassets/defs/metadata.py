"""Helpers shared by the assets: Markdown tables for metadata, progress lines in the run log, and user
errors shown as a failure's message."""

from contextlib import contextmanager
from dataclasses import asdict

from dagster import AssetExecutionContext, Failure, MetadataValue

from radassets.errors import RadassetsError
from radassets.reports import ItemFailure

FAILURE_COLUMNS = ["patient", "item", "code", "reason"]


def markdown_table(rows: list[dict], columns: list[str], limit: int | None = None) -> str:
    """A Markdown table of ``rows`` (missing and null cells left empty), cut after ``limit`` rows."""
    shown = rows if limit is None else rows[:limit]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if r.get(c) is None else str(r[c]) for c in columns) + " |" for r in shown]
    if len(rows) > len(shown):
        lines.append(f"\n… {len(rows) - len(shown)} more rows")
    return "\n".join(lines)


def failures_table(failures: list[ItemFailure], limit: int = 50) -> MetadataValue:
    """A step's failures as a Markdown table (patient, item, code, reason), the one way every asset shows them."""
    return MetadataValue.md(markdown_table([asdict(f) for f in failures], FAILURE_COLUMNS, limit))


def progress_logger(context: AssetExecutionContext, flag: tuple[str, ...] = ("failed",)):
    """A ``progress(done, total, message)`` callback: every message starting with or containing a
    ``flag`` word, and about ten progress lines per partition."""
    def progress(done: int, total: int, message: str) -> None:
        if any(word in message for word in flag) or done == total or done % max(1, total // 10) == 0:
            context.log.info(f"[{done}/{total}] {message}")
    return progress


@contextmanager
def user_failure():
    """Turn a ``RadassetsError`` (a cause a user can fix: a missing step, weights, a bad definition) into a
    Dagster Failure whose message is the cause, shown in the UI without a traceback. Anything else
    propagates with its traceback: it is a bug."""
    try:
        yield
    except RadassetsError as e:
        raise Failure(description=str(e)) from None
