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

# Study A at its protocol (10 epochs), then one report. Every part at seed 0 first, then
# the parts the main claims rest on (A1, A4, A6, A7 cosine) at every seed of SEEDS, then A8
# (A4's Grad-CAM figure). A7's constant LR is the A1 baseline itself. resume=auto: run it
# again with the same STUDY_DIR to continue an interrupted study (completed runs are kept).
# `make study-a STUDY_DIR=~/study-a REPORT_DIR=results/study-a` regenerates results/study-a/.
SEEDS ?= 0,1,2
STUDY_DIR ?=
REPORT_DIR ?=
study-a: install
	@set -u; dir="$(STUDY_DIR)"; \
	[ -n "$$dir" ] || dir="$$($(PY) -m cnn_study.paths output)/study-a/$$(date +%Y-%m-%d_%H-%M-%S)"; \
	part() { name=$$1; shift; \
	  $(PY) -m cnn_study -m resume=auto "hydra.sweep.dir=$$dir/$$name" \
	    'hydra.sweep.subdir=$${hydra.job.num}_seed$${seed}' "$$@" $(ARGS) \
	    || echo "study-a: $$name failed (see its results.json)"; }; \
	start=$$(date +%s); \
	part a1_baseline experiment=a1_baseline seed=0; \
	part a4_batchnorm experiment=a4_batchnorm seed=0; \
	part a6_augmentation experiment=a6_augmentation seed=0; \
	part a7_cosine experiment=a7_lr_schedule scheduler=cosine seed=0; \
	part a7_step experiment=a7_lr_schedule scheduler=step seed=0; \
	part a2_depth experiment=a2_depth seed=0; \
	part a3_regularization experiment=a3_regularization seed=0; \
	part a5_linear experiment=a5_linear seed=0; \
	part a5_partial experiment=a5_partial seed=0; \
	part a1_baseline experiment=a1_baseline seed=$(SEEDS); \
	part a4_batchnorm experiment=a4_batchnorm seed=$(SEEDS); \
	part a6_augmentation experiment=a6_augmentation seed=$(SEEDS); \
	part a7_cosine experiment=a7_lr_schedule scheduler=cosine seed=$(SEEDS); \
	part a8_gradcam experiment=a8_gradcam seed=0; \
	echo "study-a: $$(( ($$(date +%s) - start) / 60 )) min wall in this invocation"; \
	$(PY) -m cnn_study.report "$$dir" $(if $(REPORT_DIR),--out "$(REPORT_DIR)")

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
