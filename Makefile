# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= out/demo
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONWARNINGS ?= ignore

.PHONY: demo test install clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH, or make PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# A real sweep over the sample archive that ships in data/sample_archive.
demo: install
	rm -rf $(DEMO_OUT)
	$(VENV)/bin/changesweep sweep --input data/sample_archive --output $(DEMO_OUT)

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) out .pytest_cache
