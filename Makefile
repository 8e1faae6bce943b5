# Set-up and entry points. Each target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
# The PyTorch pair known to work together here; override e.g. TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup data browser demo test test-fast lint docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Fashion-MNIST from Debian's dataset-fashion-mnist package (IDX files in $(FMNIST_DIR)).
data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then echo "Fashion-MNIST found in $(FMNIST_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else echo "no apt-get: put the Fashion-MNIST IDX files in a folder and set data.root, or data.download: true"; fi

# Headless Chromium for the report's browser test (tests/test_report.py; skipped when missing).
browser:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium found: $$(command -v chromium)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null \
	    || echo "could not install chromium; the report's browser test will be skipped"; \
	else echo "no apt-get: install chromium to run the report's browser test (it is skipped otherwise)"; fi

demo: setup data
	$(VENV)/bin/softlabels demo

test: setup data browser
	$(PY) -m pytest -q

# Development subset: the whole suite but the end-to-end tests marked slow (CI and `make test` run them all).
test-fast: setup data
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check src tests

# docs/configs.md from the config models (tests/test_config.py fails when it is stale).
docs: setup
	$(PY) -m softlabels.config.docs --write docs/configs.md

clean:
	rm -rf $(VENV) runs .pytest_cache
