# resnet_switch: every target creates/uses .venv/ in the repo root.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export WANDB_MODE ?= offline

.PHONY: install train test test-slow lint bench gpu-check docs experiments clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1 || $(BIN)/pip install -q torch torchvision
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)  ## main job: RS-Net on the embedded synthetic data (ARGS="method=san ...")
	$(BIN)/python -m resnet_switch.train $(ARGS)

test: $(STAMP)  ## fast tests
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(ARGS)

test-slow: $(STAMP)  ## long tests (training runs, DDP, kill/resume)
	$(BIN)/python -m pytest -q -m slow -p no:xdist $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests

bench: $(STAMP)  ## the headline benchmarks (1 thread)
	$(BIN)/python -m resnet_switch.bench train_step method=rsnet model=resnet18 batch_size=8 resolutions=[64,56,48,40,32] num_classes=1000 threads=1

gpu-check: $(STAMP)  ## every CUDA path in one go, ~8 min on one GPU (docs/benchmarks.md "GPU check"); skipped without CUDA
	PY=$(BIN)/python bash tools/gpu_check.sh $(ARGS)

docs: $(STAMP)  ## the documentation site (docs/, mkdocs.yml) into site/, warnings are errors
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) outputs multirun site .pytest_cache
