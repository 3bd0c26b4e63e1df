# The two commands of the README: `make demo` and `make test`. Both set up .venv themselves.
PY ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN = $(VENV)/bin

.PHONY: setup test demo lint bench clean

$(BIN)/curate: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	# the peer AL methods (curate/acquisition/peers.py); bmdal-reg's own requirements (openml, seaborn, ...) are not used
	$(BIN)/pip install -q --no-deps "bmdal_reg==3.0.2" "dill>=0.3"
	$(BIN)/python -c "import torch, ray, lmdb, diffcurate.curate.cli.app"
	touch $(BIN)/curate

setup: $(BIN)/curate

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

DEMO ?= runs/demo
demo: setup
	$(BIN)/curate init $(DEMO) --preset small
	$(BIN)/curate run $(DEMO) --rounds 2 --no-dashboard
	$(BIN)/curate status $(DEMO)
	$(BIN)/curate report $(DEMO)

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	$(BIN)/python bench/solvers.py

clean:
	rm -rf $(VENV) runs/*/
