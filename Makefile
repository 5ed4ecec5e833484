# The two commands a newcomer runs (see README.md):
#   make suite   - the validation suite on the virtual bench, and the HTML report
#   make test    - the framework's own tests
# Each installs what it needs into .venv (PyPI) and node_modules (npm, for the Allure report).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BENCH  ?= benches/sim.yaml
RACK   ?=
WORKERS ?= 2
PYTEST_ARGS ?=
TEST_WORKERS ?= 4

# A run starts a hundred Python processes (benches, pytest subprocesses, imgtool). With PYTHONDONTWRITEBYTECODE
# set (some shells and containers do), each one compiles every module of hil/ again, and pytest rewrites the
# asserts of every module of its plugins' distributions (all of hypothesis) again: ~1 s of CPU per pytest process.
# Python's default instead: bytecode cached in __pycache__ (ignored by git), written once, read by every process.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: suite test test-fast setup report clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed

## Validation suite on the virtual bench, then reports/html/index.html (Allure, one self-contained file).
## RACK=benches/racks/sim-rack.yaml WORKERS=2: spread over the benches of a rack. HIL_NIGHTLY=1: the long work.
suite: setup
	rm -rf reports/allure-results reports/evidence reports/fault-matrix.* reports/traceability.* reports/run-record.*
	$(PY) -m pytest testcases $(if $(RACK),-n $(WORKERS) --rack $(RACK),--bench $(BENCH)) --alluredir reports/allure-results $(PYTEST_ARGS); \
	status=$$?; $(MAKE) --no-print-directory report || status=1; \
	$(PY) -m hil report check reports/html/index.html --screenshot reports/html/requirements.png || status=1; \
	exit $$status

## The single-file HTML from reports/allure-results: Allure 3, then its analytics script stripped (hil/report/html.py).
## The nightly trend lives in reports/history.jsonl (kept across runs; see reports/README.md).
report:
	$(PY) -m hil report html --results reports/allure-results --output reports/html --config reports/allurerc.mjs
	@echo "report: reports/html/index.html  fault matrix: reports/fault-matrix.md  traceability: reports/traceability.md"

## The framework's own tests on both cores (pytest-xdist; TEST_WORKERS=1 runs them in one process), and mypy on
## hil/ beside them (the tests leave a fifth of the two cores idle waiting on the bus; mypy's output comes after
## theirs, and either failing fails the target).
## Four workers on two cores: the integration tests mostly wait on the paced bus, flash timing and resets, so
## two per core keep both busy (quiet 2-core machine: 2 workers 5 min 6 s, 4 workers 3 min; benchmarks/README.md).
## Hermetic: their own lock directory, benches and ports, so a validation run may go on beside them.
## worksteal: the integration tests come first (tests/conftest.py) and an idle worker takes over half of the
## other's queue (xdist's default `load` hands each worker a fixed first batch: one got every long test).
## node_modules too: tests/test_report_html.py generates a report with Allure 3.
test: $(VENV)/.installed node_modules/.installed
	out=$$(mktemp); $(PY) -m mypy hil > $$out 2>&1 & mypy=$$!; \
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS); status=$$?; \
	wait $$mypy; mypy_status=$$?; echo "mypy hil:"; cat $$out; rm -f $$out; \
	[ $$status -eq 0 ] && [ $$mypy_status -eq 0 ]

## The fast loop while developing: every framework test but the integration ones (a whole virtual bench, or
## validation cases in a subprocess: @pytest.mark.integration); under a minute on 2 cores (benchmarks/README.md).
test-fast: $(VENV)/.installed node_modules/.installed
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist worksteal -m "not integration" $(PYTEST_ARGS)

clean:
	rm -rf reports/allure-results reports/html reports/evidence .hil
