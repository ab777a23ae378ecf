"""The layers hold: the import contracts in pyproject.toml (``[tool.importlinter]``) are kept.

import-linter reads the imports of every module of radassets statically (grimp), lazy imports inside
functions included, and checks the layer order (cli > definitions, defs > lineage > evaluation > models >
imaging | demo > idc > foundations), that only the entry points generate the demo collection, and that
the library layers import no Dagster. A broken contract fails with import-linter's report, which names
each offending import chain with its line numbers.
"""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# lint_imports puts the working directory first on sys.path, so the radassets checked is the one in REPO.
LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")


def test_the_import_contracts_are_kept():
    result = subprocess.run([sys.executable, "-c", LINT], cwd=REPO, capture_output=True, text=True, timeout=300)
    report = result.stdout + result.stderr
    broken = report.partition("Broken contracts")[2]
    if result.returncode != 0:
        pytest.fail(f"lint-imports (make lint) failed:\n{broken.strip() or report}", pytrace=False)


def test_loading_the_definitions_and_the_registry_imports_no_heavy_library():
    """Every run worker and CLI command imports the definitions and reads the model registry (``pipeline run``
    syncs the model partitions): torch and MONAI (7 s to import on 2 cores) load only where a model runs
    (``radassets.models.pipeline.run_model``), not with the code location or a definition's family check; the
    statistics stack, pandas, highdicom, zarr and dagster_gcp (with the Google clients: over a second) load in
    the steps that use them (a pipeline run starts five processes that import the code location)."""
    heavy = ["dagster_gcp", "highdicom", "lifelines", "monai", "pandas", "scipy.stats", "sklearn", "torch", "zarr"]
    probe = ("import sys, radassets.definitions\n"
             "from radassets.models.registry import scan_registry\n"
             "entries, invalid = scan_registry()\n"
             "assert entries and not invalid, invalid\n"
             f"print(sorted(set({heavy!r}) & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
