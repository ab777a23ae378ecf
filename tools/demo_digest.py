"""sha256 of every output `make demo` wrote, to check that a refactor changed no byte.

    python tools/demo_digest.py var/data > before.json   # ... refactor, make demo again ...
    python tools/demo_digest.py var/data | diff before.json -

JSON files are hashed without the fields that record when or by which code version a file was written
(listed in VOLATILE), so two runs of the same code on the same inputs give the same digest. Parquet files
are hashed by their table (content and schema), not their bytes: the writer's footer names the library
version. The Dagster instance, the lineage store and the demo collection itself are left out (they
record run ids and times).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

VOLATILE = {"created", "created_at", "written_at", "started_at", "finished_at", "timestamp", "time",
            "duration_s", "elapsed_s", "radassets_version", "git_commit", "code_version", "run_id",
            "dagster_run_id", "python", "platform", "host", "versions", "seconds", "patches_per_second"}
SKIPPED = {"demo", "lineage", ".locks", "local", "weights"}


def _without_volatile(value):
    if isinstance(value, dict):
        return {k: _without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_without_volatile(v) for v in value]
    return value


def digest(path: Path) -> str:
    if path.suffix == ".json":
        data = _without_volatile(json.loads(path.read_text()))
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        h = hashlib.sha256(str(table.schema.remove_metadata()).encode())
        for column in table.columns:
            h.update(json.dumps(column.to_pylist(), default=str).encode())
        return h.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(root: str) -> None:
    base = Path(root)
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.relative_to(base).parts[0] not in SKIPPED
                   and not p.name.startswith("."))
    print(json.dumps({str(p.relative_to(base)): digest(p) for p in files}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
