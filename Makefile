# Two commands for a newcomer: `make quickstart` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# pip on this kind of machine takes torch/torchvision from local disk; never force another torch.
PIP    := $(BIN)/pip install --disable-pip-version-check -q

.PHONY: quickstart test sim2real bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.pipeline-installed: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[pipeline]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[pipeline,demo,diffusion,test]'
	touch $(VENV)/.pipeline-installed $@

quickstart: $(VENV)/.pipeline-installed
	$(BIN)/pomona quickstart

test: $(VENV)/.test-installed
	bash tests/install_browser.sh || true
	$(BIN)/python -m pytest

sim2real: $(VENV)/.pipeline-installed
	$(BIN)/pomona recipe sim2real

bench: $(VENV)/.test-installed
	$(BIN)/python benchmarks/latency/run.py

clean:
	rm -rf runs .pytest_cache
