"""Label definitions: from a clinical table and an endpoint to per-patient times, events and binary labels.

A survival endpoint gives each patient a follow-up time in days and an event flag. Its binary
label at the horizon is 1 when the event happened on or before the horizon and 0 when the
patient was followed past it event-free. A patient censored before the horizon has no observed
label, and the literature handles that two ways, both recorded and never implicit:

- ``alive``: counted as 0 (alive at the horizon), as in Hosny et al. 2018;
- ``drop``: excluded from the binary analysis, as in Pai et al. 2024 (TumorImagingBench).

A binary endpoint reads its label column directly. Rows that cannot be used (missing id, time or
event, negative or infinite time) are counted by cause and reported, never dropped silently.

Event values are compared as written, ignoring case and surrounding spaces, a whole number in any
form (``1``, ``1.0``) being that integer: a column read as floats because one row is empty still
matches ``event_values: [1]``. A value that is neither an event value nor a censoring value
(``KNOWN_CENSORING_VALUES`` unless given) is an error listing it, never silently taken as censored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from radassets.datasets import Endpoint
from radassets.errors import RadassetsError

DAYS_PER_MONTH = 365.25 / 12
# Values of an event column that mean "no event (censored)" unless the caller names its own.
KNOWN_CENSORING_VALUES = ("0", "false", "no", "alive", "censored")


class LabelError(RadassetsError, ValueError):
    """The clinical table cannot give this endpoint its labels (a missing column, no usable row)."""


@dataclass
class Labels:
    """Per-patient outcome of one endpoint. ``frame`` has PatientID, time_days, event, label (0/1 or NaN)."""

    endpoint: str
    definition: dict[str, Any]
    frame: pd.DataFrame
    excluded: dict[str, int] = field(default_factory=dict)  # cause -> rows

    @property
    def binary(self) -> pd.DataFrame:
        """Patients with an observed binary label."""
        return self.frame[self.frame["label"].notna()]

    def summary(self) -> dict[str, Any]:
        b = self.binary
        out = {"endpoint": self.endpoint, "patients": int(len(self.frame)), "with_binary_label": int(len(b)),
               "positives": int(b["label"].sum()), "excluded": dict(self.excluded), **self.definition}
        if "event" in self.frame:
            out["events"] = int(self.frame["event"].sum())
            out["censored_before_horizon"] = int(self.frame["censored_before_horizon"].sum())
        return out


def _require(table: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in table]
    if missing:
        raise LabelError(f"{what}: column(s) {missing} not in the clinical table (it has {list(table.columns)[:12]})")


def _count(excluded: dict[str, int], cause: str, mask: pd.Series) -> None:
    n = int(mask.sum())
    if n:
        excluded[cause] = excluded.get(cause, 0) + n


def canonical_values(values: pd.Series | list) -> pd.Series:
    """Values of an event column as comparable strings: stripped, lower-case, and a finite whole number in
    any form (1, 1.0, "1.0") written as that integer ("1")."""
    text = pd.Series(values, dtype=object).astype(str).str.strip().str.lower()
    number = pd.to_numeric(text, errors="coerce")
    whole = number.notna() & (number.abs() < 2**53) & (number == np.round(number))  # exact as an integer
    return text.where(~whole, number.where(whole, 0).round().astype("int64").astype(str))


def binary_at_horizon(time_days: np.ndarray, event: np.ndarray, horizon_days: float,
                      censored_before_horizon: str) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels (NaN where unobserved) and the censored-before-horizon mask."""
    time_days, event = np.asarray(time_days, float), np.asarray(event, bool)
    label = np.where(event & (time_days <= horizon_days), 1.0, 0.0)
    censored_early = ~event & (time_days < horizon_days)
    if censored_before_horizon == "drop":
        label = np.where(censored_early, np.nan, label)
    elif censored_before_horizon != "alive":
        raise ValueError(f"censored_before_horizon must be 'alive' or 'drop', not {censored_before_horizon!r}")
    return label, censored_early


def survival_labels(table: pd.DataFrame, id_column: str, endpoint: Endpoint,
                    censored_values: list[str] | tuple[str, ...] | None = None) -> Labels:
    """Times, events and binary labels of a survival endpoint (see the module docstring). ``censored_values``:
    the event column's values that mean censored (default ``KNOWN_CENSORING_VALUES``, less the event values)."""
    what = f"endpoint {endpoint.name!r}"
    excluded: dict[str, int] = {}
    if endpoint.time_from_dates is not None:
        d = endpoint.time_from_dates
        _require(table, [id_column, d.start_column, d.end_column, endpoint.event_column], what)
        start = pd.to_datetime(table[d.start_column], errors="coerce")
        end = pd.to_datetime(table[d.end_column], errors="coerce")
        time = (end - start).dt.days.astype(float)
    else:
        _require(table, [id_column, endpoint.time_column, endpoint.event_column], what)
        time = pd.to_numeric(table[endpoint.time_column], errors="coerce")
        if endpoint.time_unit == "months":
            time = time * DAYS_PER_MONTH
    events_raw = table[endpoint.event_column]
    positive = set(canonical_values(list(endpoint.event_values)))
    censoring = set(canonical_values(list(censored_values or KNOWN_CENSORING_VALUES))) - positive
    events = canonical_values(events_raw).set_axis(table.index)
    event = events.isin(positive)
    unknown = events_raw.notna() & ~event & ~events.isin(censoring)
    if unknown.any():
        counts = events_raw[unknown].astype(str).value_counts()
        listed = ", ".join(f"{v!r} ({n} row{'s' * (n > 1)})" for v, n in counts.head(5).items())
        raise LabelError(f"{what}: column {endpoint.event_column!r} has value(s) that are neither an event "
                         f"{sorted(positive)} nor censored {sorted(censoring)}: {listed}"
                         f"{' and more' if len(counts) > 5 else ''}; declare each as an event or a censoring value")
    ids = table[id_column].astype(str).str.strip()
    bad_id = table[id_column].isna() | (ids == "")
    bad_time = time.isna() | np.isinf(time)
    negative = time < 0
    bad_event = events_raw.isna()
    _count(excluded, "missing id", bad_id)
    _count(excluded, "missing or unreadable time", bad_time & ~bad_id)  # unreadable: text, or infinite
    _count(excluded, "negative time", negative & ~bad_id & ~bad_time)
    _count(excluded, "missing event", bad_event & ~bad_id & ~bad_time & ~negative)
    usable = ~(bad_id | bad_time | negative | bad_event)
    if not usable.any():
        raise LabelError(f"{what}: no usable row in the clinical table ({excluded})")
    label, censored_early = binary_at_horizon(time[usable].to_numpy(), event[usable].to_numpy(),
                                              endpoint.horizon_days, endpoint.censored_before_horizon)
    frame = pd.DataFrame({"PatientID": ids[usable].to_numpy(), "time_days": time[usable].to_numpy(float),
                          "event": event[usable].to_numpy(bool), "label": label,
                          "censored_before_horizon": censored_early})
    duplicated = frame["PatientID"].duplicated(keep=False)
    if duplicated.any():
        raise LabelError(f"{what}: patients listed more than once in the clinical table: "
                         f"{sorted(frame.loc[duplicated, 'PatientID'].unique())[:5]}")
    if endpoint.censored_before_horizon == "drop":
        excluded["censored before the horizon (drop)"] = int(censored_early.sum())
    definition = {"kind": "survival", "horizon_days": endpoint.horizon_days,
                  "censored_before_horizon": endpoint.censored_before_horizon,
                  "event": f"{endpoint.event_column} in {sorted(positive)}",
                  "censored": f"{endpoint.event_column} in {sorted(censoring)}",
                  "time": (f"{endpoint.time_from_dates.end_column} - {endpoint.time_from_dates.start_column}"
                           if endpoint.time_from_dates else f"{endpoint.time_column} ({endpoint.time_unit})")}
    return Labels(endpoint.name, definition, frame, excluded)


def binary_labels(table: pd.DataFrame, id_column: str, endpoint: Endpoint) -> Labels:
    what = f"endpoint {endpoint.name!r}"
    _require(table, [id_column, endpoint.label_column], what)
    excluded: dict[str, int] = {}
    values = table[endpoint.label_column]
    missing = values.isna()
    _count(excluded, "missing label", missing)
    positive = {str(v) for v in endpoint.positive_values}
    frame = pd.DataFrame({"PatientID": table.loc[~missing, id_column].astype(str).to_numpy(),
                          "label": values[~missing].astype(str).isin(positive).astype(float).to_numpy()})
    definition = {"kind": "binary", "label": f"{endpoint.label_column} in {sorted(positive)}"}
    return Labels(endpoint.name, definition, frame, excluded)


def labels_for(table: pd.DataFrame, id_column: str, endpoint: Endpoint) -> Labels:
    return (survival_labels if endpoint.kind == "survival" else binary_labels)(table, id_column, endpoint)
