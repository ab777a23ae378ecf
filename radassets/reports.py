"""What every pipeline step reports about the items it could not process: one failure shape.

A step records a failed item (a series that did not download or convert, a seed outside its volume, a patch
whose embedding is not finite, an endpoint that could not be evaluated) and carries on with the rest; its typed
report holds these as ``ItemFailure`` values. The files a step writes keep their own, established keys (a
manifest's ``failures`` list, the QC table's rows): each report's ``manifest()`` writes them as before.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ItemFailure:
    """One item a step could not process, and why (recorded, not raised: the rest of the step proceeds)."""

    stage: str  # the step: "dicom", "volumes", "seeds", "embeddings", "evaluation", "comparison"
    item: str  # the item's identifier: a SeriesInstanceUID, a seed id, an endpoint, a model
    reason: str  # the cause, in words
    patient: str | None = None  # the PatientID, where the item belongs to one
    series: str | None = None  # the SeriesInstanceUID, where the item belongs to one
    code: str | None = None  # a machine-readable cause, where the step has one (the volumes' QC codes)
