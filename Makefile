# rims-lab: `make test` and `make demo` set up .venv on first use (a CPU torch; see README for CUDA).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: test test-fast demo lint bench gpu-test clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP) | $(FASHION)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "not gpu"

# the quick loop while editing: all but the tests marked slow (and gpu); CI runs `make test`
test-fast: $(STAMP) | $(FASHION)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "not gpu and not slow"

# Fashion-MNIST (Debian's dataset-fashion-mnist, apt as root) for the sequential-image tests; a warning, not a
# failure, where it cannot be installed (those tests then skip, naming the command)
$(FASHION):
	@SUDO=; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; APT="$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get"; \
	{ command -v apt-get >/dev/null && { $$APT install -y -qq dataset-fashion-mnist >/dev/null \
	  || { $$APT update -qq && $$APT install -y -qq dataset-fashion-mnist >/dev/null; }; }; } \
	|| echo "warning: could not install dataset-fashion-mnist (apt-get, as root); the Fashion-MNIST tests will skip" >&2

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
