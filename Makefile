# make train / make test bootstrap the virtual environment on first use.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv train test test-fast lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --upgrade pip
	$(PYTHON) -m pip install -e ".[dev]"
	$(PYTHON) -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

venv: $(VENV)/.installed

train: venv
	$(PYTHON) scripts/train.py $(ARGS)

test: venv
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf outputs .pytest_cache
