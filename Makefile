# The README's two commands. Both create .venv on first use and reuse it afterwards;
# the environment is reinstalled only when pyproject.toml changes.
#   make lab    open the course in JupyterLab (installs the `notebooks` extra)
#   make test   unit tests + every notebook (nbval) + the browser test under spawn; unit tests and
#               notebooks under fork; notebooks under forkserver (installs the `test` extra)
#   make test-minimum   the unit tests and notebooks under spawn, in .venv-minimum, where every
#               dependency is at the lowest version pyproject.toml allows (tools/lowest_versions.py)
# Another interpreter gets a venv of its own beside .venv, e.g.
#   make test PYTHON=python3.13         (.venv-python3.13)

PYTHON ?= python3
VENV := $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
BIN := $(VENV)/bin
MINIMUM := $(VENV)-minimum
# JupyterLab refuses to run as root without this flag (CI and containers run as root).
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
# nbval: compare only cells marked "# NBVAL_CHECK_OUTPUT", fail any cell running over 120 s.
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=120

.PHONY: lab test test-minimum

# One stamp file per extra, so that `make test` after `make lab` installs what the tests add:
# $(VENV)/.installed-notebooks for lab, $(VENV)/.installed-test for test ($* is the extra).
$(VENV)/.installed-%: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[$*]"
	touch $@

lab: $(VENV)/.installed-notebooks
	$(BIN)/jupyter lab $(ALLOW_ROOT) notebooks/00_start_here.ipynb

test: $(VENV)/.installed-test
	MPDEMO_SIZE=small MPDEMO_START_METHOD=spawn $(BIN)/python -m pytest $(NBVAL) tests notebooks
	MPDEMO_SIZE=small MPDEMO_START_METHOD=fork $(BIN)/python -m pytest $(NBVAL) -m "not browser and not container" tests notebooks
	MPDEMO_SIZE=small MPDEMO_START_METHOD=forkserver $(BIN)/python -m pytest $(NBVAL) notebooks

# Made afresh (--clear) whenever pyproject.toml changes, so nothing newer is left over.
# The pins go in first, then mpdemo itself without letting pip choose its dependencies again.
$(MINIMUM)/.installed: pyproject.toml tools/lowest_versions.py
	$(PYTHON) -m venv --clear $(MINIMUM)
	$(MINIMUM)/bin/python -m pip install --upgrade pip packaging 'tomli; python_version < "3.11"'
	$(MINIMUM)/bin/python tools/lowest_versions.py > $(MINIMUM)/lowest-versions.txt
	$(MINIMUM)/bin/python -m pip install -r $(MINIMUM)/lowest-versions.txt
	$(MINIMUM)/bin/python -m pip install -e . --no-deps
	touch $@

test-minimum: $(MINIMUM)/.installed
	MPDEMO_SIZE=small MPDEMO_START_METHOD=spawn $(MINIMUM)/bin/python -m pytest $(NBVAL) -m "not browser and not container" tests notebooks
