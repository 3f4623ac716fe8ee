# One command each: `make test` (set up + run the tests), `make run` (set up + run the main job).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: setup test run clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # the CPU wheel; must come before anything that pulls torch
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

# The main job on the embedded default: a generated sample archive in a local folder,
# converted by the real batch job on a local Ray cluster into a local results root, then audited.
run: setup
	$(PY) -m cli synth data/sample --n 36 --seed 7
	-$(PY) -m cli batch data/sample results/sample   # exits 1 if any scan failed; the audit still runs
	$(PY) -m cli audit results/sample

clean:
	rm -rf $(VENV) data runs results
