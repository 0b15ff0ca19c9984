# rims-lab: `make test` and `make demo` set up .venv on first use (a CPU torch; see README for CUDA).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-fast demo lint bench gpu-test clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "not gpu"

# the quick loop while editing: all but the tests marked slow (and gpu); CI runs `make test`
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "not gpu and not slow"

demo: $(STAMP)
	$(VENV)/bin/rims sweep run sweeps/specs/copying_demo.yaml
	$(VENV)/bin/rims analyze report --experiment copying_demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) bench/rim_speed.py

gpu-test: $(STAMP)
	$(PY) -m pytest -m gpu

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
