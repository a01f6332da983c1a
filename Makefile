# Each target creates .venv itself, so `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

# torch and torchvision are pinned first so pip takes the builds served for this Python,
# then the package itself (editable) with its dev tools.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/unetkit demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n auto --maxprocesses 4 --durations=15

# speed against this machine's own convolution limit; run it alone on the machine
bench: $(STAMP)
	$(PY) benchmarks/speed.py --repeats 3

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs demo_run .pytest_cache
