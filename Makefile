# The two commands a newcomer runs (see README.md):
#   make suite   - the validation suite on the virtual bench, and the HTML report
#   make test    - the framework's own tests
# Each installs what it needs into .venv (PyPI) and node_modules (npm, for the Allure report).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BENCH  ?= benches/sim.yaml
PYTEST_ARGS ?=

.PHONY: suite test setup report clean

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
suite: setup
	rm -rf reports/allure-results reports/evidence reports/fault-matrix.* reports/traceability.* reports/run-record.*
	$(PY) -m pytest testcases --bench $(BENCH) --alluredir reports/allure-results $(PYTEST_ARGS); \
	status=$$?; $(MAKE) --no-print-directory report; exit $$status

report:
	npx --no-install allure generate --config reports/allurerc.mjs --output reports/html reports/allure-results
	@echo "report: reports/html/index.html  fault matrix: reports/fault-matrix.md  traceability: reports/traceability.md"

## The framework's own tests (fast; in-process virtual benches, emulators on loopback), after mypy on hil/.
test: $(VENV)/.installed
	$(PY) -m mypy hil
	$(PY) -m pytest tests $(PYTEST_ARGS)

clean:
	rm -rf reports/allure-results reports/html reports/evidence .hil
