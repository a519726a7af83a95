# Two commands do everything on a fresh clone: `make run` and `make test`.
# Both create .venv/ on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch and torchvision are pinned here (not in pyproject.toml) so that pip takes
# the wheels this machine kind keeps on disk instead of downloading several GB.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

# Offline machines of this project keep CIFAR-10 beside the repo; use it unless
# the user chose a data root. Elsewhere the package falls back to ./data + download.
SHARED_CIFAR := ../shared/data/cifar10-jpeg
ifeq ($(origin CNN_STUDY_DATA), undefined)
  ifneq ($(wildcard $(SHARED_CIFAR)/train),)
    export CNN_STUDY_DATA := $(abspath $(SHARED_CIFAR))
  endif
endif

ARGS ?=

.PHONY: install run test lint format tensorboard clean study-a

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install  ## Study A1 baseline (override anything with ARGS="arch=cnn5 ...")
	$(PY) -m cnn_study experiment=a1_baseline $(ARGS)

# Every part of Study A, then one report: `make study-a ARGS="trainer.max_epochs=2 seed=0,1,2"`.
# A part that fails (A5 without ImageNet weights offline) shows as failed in the report.
STUDY_A_SWEEPS := a2_depth a3_regularization a7_lr_schedule
STUDY_A_RUNS := a1_baseline a4_batchnorm a5_linear a5_partial a6_augmentation a8_gradcam
study-a: install
	@set -u; dir="$$($(PY) -m cnn_study.paths output)/study-a/$$(date +%Y-%m-%d_%H-%M-%S)"; \
	for part in $(STUDY_A_RUNS) $(STUDY_A_SWEEPS); do \
	  $(PY) -m cnn_study -m experiment=$$part hydra.sweep.dir="$$dir/$$part" $(ARGS) \
	    || echo "study-a: $$part failed (see its results.json)"; \
	done; \
	$(PY) -m cnn_study.report "$$dir"

test: install
	$(PY) -m pytest $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

tensorboard: install
	$(VENV)/bin/tensorboard --logdir "$$($(PY) -m cnn_study.paths output)"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
