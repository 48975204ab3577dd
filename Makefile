# Two commands for a newcomer: `make quickstart` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# pip on this kind of machine takes torch/torchvision from local disk; never force another torch.
# No wheel cache: it would hold a second copy of what the venv holds (CI runs on a clean machine anyway).
PIP    := $(BIN)/pip install --disable-pip-version-check --no-cache-dir -q
# torch's CUDA build alone is ~5.5 GB; the whole venv ~7 GB. Say so up front instead of dying mid-install.
NEED_KB := 7500000

.PHONY: quickstart test sim2real bench clean

$(BIN)/python:
	@free=$$(df -Pk . | awk 'NR==2 {print $$4}'); if [ "$$free" -lt $(NEED_KB) ]; then \
	  echo "pomona: .venv needs about 7.5 GB of free disk here, only $$((free / 1048576)) GB free" >&2; exit 1; fi
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
	bash tests/install_rtsp.sh || true
	$(BIN)/python -m pytest

sim2real: $(VENV)/.pipeline-installed
	$(BIN)/pomona recipe sim2real

bench: $(VENV)/.test-installed
	$(BIN)/python benchmarks/latency/run.py

clean:
	rm -rf runs .pytest_cache
