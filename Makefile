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

.PHONY: install run test docs lint format tensorboard clean study-a study-b study-c gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install  ## Study A1 baseline (override anything with ARGS="arch=cnn5 ...")
	$(PY) -m cnn_study experiment=a1_baseline $(ARGS)

# The bundled studies (conf/study/a.yaml, b.yaml, c.yaml), each one Hydra multirun in
# $CNN_STUDY_OUTPUT/studies/<name>, then its report there; the same command continues an
# interrupted study. ARGS: study.* settings or overrides, e.g. ARGS="study.scale=cpu".
study-a: install
	$(PY) -m cnn_study.study study=a $(ARGS)

study-b: install
	$(PY) -m cnn_study.study study=b $(ARGS)

study-c: install
	$(PY) -m cnn_study.study study=c $(ARGS)

test: install
	$(PY) -m pytest $(ARGS)

# The CUDA paths on a machine with a GPU (A1 in mixed precision with the data on the device,
# the benchmarks, DDP on every GPU, predict and Grad-CAM on CUDA); says so and exits 0 on a
# machine without one.
gpu-check: install
	$(PY) -m cnn_study.bench.gpu_check $(ARGS)

# The documentation site (docs/, mkdocs-material) in site/; its home page is README.md with
# its links made relative to docs/.
docs: install
	sed -e 's#](docs/#](#g' -e 's#](results/#](../results/#g' README.md > docs/index.md
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

tensorboard: install
	$(VENV)/bin/tensorboard --logdir "$$($(PY) -m cnn_study.paths output)"

clean:
	rm -rf $(VENV) build site docs/index.md *.egg-info .pytest_cache .ruff_cache
