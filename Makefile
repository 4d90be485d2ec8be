# Two commands do all set-up on a fresh machine:
#   make run    create .venv if missing, then run the demo workflow
#   make test   create .venv if missing, then run the test suite (what CI runs)
#   make test-fast   the unit tests and the small workflow tests (under 2 minutes)
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2

.PHONY: run test test-fast lint venv

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

run: venv
	@$(VENV)/bin/snakemake --cores $(CORES) --quiet all
	@$(PY) -m layerfuse summary results/demo
	@echo "  tables: results/demo/tables.md; report: $(VENV)/bin/snakemake --report report.html"

test: venv
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q -rs

test-fast: venv
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q -rs -m "not slow"

lint: venv
	$(VENV)/bin/snakemake --lint
