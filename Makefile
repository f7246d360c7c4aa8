# make train / make test bootstrap the virtual environment on first use: `train` installs
# what training needs (the package), `test` and `lint` add the dev extra.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv venv-dev train evaluate test test-slow test-all lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --upgrade pip
	$(PYTHON) -m pip install -e .
	$(PYTHON) -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PYTHON) -m pip install -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

venv-dev: $(VENV)/.installed-dev

# make train ARGS="experiment=smoke trainer.max_epochs=2"
train: venv
	$(PYTHON) scripts/train.py $(ARGS)

# make evaluate ARGS="ckpt_path=outputs/train/runs/<run>/checkpoints/best-epochNNN.ckpt"
evaluate: venv
	$(PYTHON) scripts/evaluate.py $(ARGS)

# the default test run (minutes); the slow tests (multi-process DDP, kill and resume,
# multiruns, notebooks) run with test-slow; CI runs both
test: venv-dev
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: venv-dev
	$(PYTHON) -m pytest -m slow $(PYTEST_ARGS)

test-all: venv-dev
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint: venv-dev
	$(VENV)/bin/ruff check .

clean:
	rm -rf outputs .pytest_cache
