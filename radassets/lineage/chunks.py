"""Lineage items recorded by the data-plane workers that made them (``Compute.record``).

A step whose items run as data-plane tasks (the volumes' series, the patches' CT volumes) would otherwise read every
item back from its tables once it has finished, in the driver, and send them in one ``COMPLETE`` event: for a
dataset version of 200,000 series that is one process reading, holding and writing every row. Instead each task's
worker writes its result's items as one ``ITEMS`` chunk file to the event folder on the artifact store, right after
the task wrote its outputs (``radassets.dataplane`` calls the recorder after the task returned); the step's
``COMPLETE`` event then carries no items, and the merger gives the run's chunks to its output
(``radassets.lineage.store``). A retried task writes its chunk again: the store keeps one row per item.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radassets.lineage import store
from radassets.lineage.items import ITEMS_OF_RESULTS


@dataclass(frozen=True)
class ItemRecorder:
    """Writes the items of one data-plane result of ``asset`` for the lineage run ``run_id`` (picklable: it goes to
    the workers with the tasks)."""

    run_id: str
    asset: str
    events: Path  # Layout.lineage_events_dir(): under the artifact root, where every node writes

    def __post_init__(self) -> None:
        if self.asset not in ITEMS_OF_RESULTS:
            raise ValueError(f"no worker-recorded items for {self.asset!r}; known: {sorted(ITEMS_OF_RESULTS)}")

    def __call__(self, result: Any) -> None:
        items = ITEMS_OF_RESULTS[self.asset](result)
        if items:
            store.write_items(self.run_id, self.asset, items, self.events)
