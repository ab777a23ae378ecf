# radassets: `make demo` runs the pipeline on the embedded demo collection, `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch that pip finds on our machines. Elsewhere, bring your own:
#   make install TORCH_SPEC='torch==2.5.1'   (pyproject only asks for torch>=2.2)
TORCH_SPEC ?= torch==2.13.0
UI_PORT ?= 3000

# Generated data and the Dagster instance live outside git (var/ is ignored). `make install` records them in
# radassets.toml (ignored too), the project's settings, so that `.venv/bin/radassets` run from any directory
# finds what `make demo` made; the environment still overrides the file.
export RADASSETS_HOME ?= $(CURDIR)/var/data
export DAGSTER_HOME ?= $(CURDIR)/var/dagster_home

STAMP := $(VENV)/.radassets-installed
DOCS_STAMP := $(VENV)/.radassets-docs-installed
SETTINGS := radassets.toml

.PHONY: install demo lint test test-package test-reliability test-automation test-services test-ui ui bench docs clean

# pyradiomics 3.0.1 ships only an sdist whose setup imports numpy: it is built against ours,
# without build isolation, before the project's own install.
$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet numpy setuptools wheel
	$(BIN)/python -m pip install --quiet --no-build-isolation "pyradiomics==3.0.1"
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	@touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml $(STAMP)
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@
	$(BIN)/dagster instance concurrency set gpu 1 >/dev/null

# Paths in it are relative to its folder. Written once: a user's edits are kept.
$(SETTINGS):
	@printf '%s\n' '# radassets settings of this checkout (written by `make install`; environment variables override them).' \
	  'home = "var/data"' 'dagster_home = "var/dagster_home"' > $@

install: $(STAMP) $(DAGSTER_HOME)/dagster.yaml $(SETTINGS)

demo: install
	$(BIN)/radassets demo generate
	$(BIN)/radassets pipeline run demo_v1 demo_v2
	@$(BIN)/radassets cohort diff demo_v1 demo_v2
	@echo
	@echo "Outputs are under $(RADASSETS_HOME); $(BIN)/radassets finds them from any directory (radassets.toml)."
	@echo "  cohort/<dataset_version>/cohort.lock.json   the pinned series list (radassets cohort show demo_v1)"
	@echo "  dicom/<dataset_version>/manifest.json       every series, verified, with its files"
	@echo "  volumes/<dataset_version>/qc.parquet        one QC row per series; ct/ and masks/ hold the NRRDs"
	@echo "  seeds/<dataset_version>/seeds.csv           one seed per lesion, LPS mm, with its distance to the reference"
	@echo "  patches/<dataset_version>/montage.png       the QC montage of the patches (also in the UI)"
	@echo "  embeddings/<dataset_version>/<model>/       one vector per seed (radassets models list)"
	@echo "  evaluation/<dataset_version>/<model>/report.html   probes, survival, stability, figures"
	@echo "  stability/<dataset_version>/<model>/        seed-perturbation stability, opt-in (minutes per model):"
	@echo "      $(BIN)/radassets pipeline run demo_v1 --select seed_stability --models radiomics"
	@echo "  reports/hosny2018_figure2/km.png            Hosny et al. 2018 Figure 2, reproduced"
	@echo "  lineage/lineage.duckdb                      every run; trace a figure back to the cohort:"
	@echo "      $(BIN)/radassets lineage trace $(RADASSETS_HOME)/comparison/demo_v1/auc_os_2y.png"
	@echo "Next: 'make ui' and open http://127.0.0.1:$(UI_PORT) to see the assets and their runs."

# Style and bug patterns (ruff), the layer contracts (import-linter; also a test), types (mypy): under a minute,
# so CI runs it before the tests. Configured in pyproject.toml.
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-logo
	$(BIN)/mypy

test: install
	$(BIN)/python -m pytest -m "not ui and not reliability and not packaging and not daemon and not services"

# The wheel, built and installed in a fresh virtualenv outside the checkout (one to two minutes, so apart).
test-package: install
	$(BIN)/python -m pytest -m packaging

# Kill-and-rerun and concurrent-run harnesses (issue 13), and the commands' runs killed, interrupted and queued:
# about 30 minutes on 2 cores, so apart from `make test`.
test-reliability: install
	$(BIN)/python -m pytest -m reliability --durations=0

# Declarative automation with the Dagster daemon running (about 8 minutes on 2 cores, so apart).
test-automation: install
	$(BIN)/python -m pytest -m daemon

# Against real services on loopback (PostgreSQL from Debian's package: apt-get install postgresql), each started in
# a temporary folder and stopped by its own pid (radassets_tests/services.py). Skipped where a service's binaries
# are missing, unless RADASSETS_SERVICES_REQUIRED=1 (CI).
test-services: install
	$(BIN)/python -m pytest -m services

test-ui: install
	$(BIN)/python -m pytest -m ui

# Timings against peer tools (dcm2niix and plastimatch: their PyPI wheels, in the test extras).
bench: install
	$(BIN)/python bench/imaging.py
	$(BIN)/python bench/embeddings.py
	$(BIN)/python bench/evaluation.py
	$(BIN)/python bench/lineage.py
	$(BIN)/python bench/patch_store.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/demo.py

# The manual (docs/, mkdocs.yml) as a site in site/. --strict: a broken link or anchor, or a page missing
# from the nav, fails the build. The CLI page imports radassets.cli, hence the project's install first.
$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,lint,docs]'
	@touch $@

docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict --clean --site-dir site

ui: install
	$(BIN)/dagster dev -h 127.0.0.1 -p $(UI_PORT) -w workspace.yaml

clean:
	rm -rf var .pytest_cache site .mypy_cache .ruff_cache .import_linter_cache
