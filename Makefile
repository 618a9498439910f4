# resnet_switch: every target creates/uses .venv/ in the repo root.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export WANDB_MODE ?= offline

.PHONY: install train train-seeds test test-slow lint bench gpu-check device-bundle device-rehearsal docs claims experiments clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1 || $(BIN)/pip install -q torch torchvision
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# make train's run folder: RUN_DIR=... to choose it (one date per make call)
ifeq ($(RUN_DIR),)
RUN_DIR := outputs/main/$(shell date +%Y-%m-%d_%H-%M-%S)
endif
# The I-Net's lr: the multi-resolution methods sum one loss per resolution (5 at lr 0.02), so one loss
# at 0.1 takes the same step per loss (experiments/main_job/README.md compares it with lr 0.02)
INET32  := method=individual data.resolutions=[32] data.test_resolutions=[32,28,24,20,16] optim.lr=0.1

train: $(STAMP)  ## main job: RS-Net on the embedded data, and at the same budget the I-Net at 32 px; one table + plot of both (ARGS="seed=1 ..." go to both)
	$(BIN)/python -m resnet_switch.train $(ARGS) hydra.run.dir=$(RUN_DIR)/switchable
	$(BIN)/python -m resnet_switch.train $(ARGS) $(INET32) hydra.run.dir=$(RUN_DIR)/inet32
	$(BIN)/python -m resnet_switch.report $(RUN_DIR) table=wide out=$(RUN_DIR)/report.md \
	    plot=$(RUN_DIR)/top1_vs_resolution.png title="make train: the switchable net and the I-Net at 32 px"

train-seeds: $(STAMP)  ## the main job for seeds 0..4 and its report over seeds (experiments/main_job)
	bash experiments/main_job/run.sh $(ARGS)

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

device-bundle:  ## .device/wheels: what the lent GPU machines' image lacks, cp312 wheels (docs/benchmarks.md "GPU check")
	PY=$(PY) bash tools/device_bundle.sh

device-rehearsal:  ## the GPU machine's offline start rehearsed here: bundle-only venv over an image-like venv, gpu_check.sh to its skip line, every module imported
	PY=$(PY) bash tools/device_rehearsal.sh

claims: $(STAMP)  ## docs/claims.md, the experiment READMEs' claims blocks and docs/img/experiments/ from the committed results (tests/test_claims.py checks them)
	$(BIN)/python tools/claims_ledger.py

docs: $(STAMP)  ## the documentation site (docs/, mkdocs.yml) into site/, warnings are errors
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) outputs multirun site .pytest_cache
