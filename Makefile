# The two commands of the README:  make figures  (regenerate every table and figure at SCALE)
#                                  make test     (the whole test suite, notebooks at smoke scale)
PY        ?= python3
VENV      ?= .venv
TORCH     ?= torch==2.13.0
SCALE     ?= mini
UNTRAC_DATA_DIR ?= $(wildcard $(abspath ../shared/data))
# one intra-op thread: CPU results are then bit-identical from machine to machine (the thread count
# changes summation order), and tiny models gain little from more threads; raise it at will
OMP_NUM_THREADS ?= 1
export UNTRAC_DATA_DIR OMP_NUM_THREADS

BIN := $(VENV)/bin

.PHONY: setup figures test bench clean-cache

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"  # dev = pytest + the notebooks extra
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(BIN)/.installed

figures: setup
	$(BIN)/python -m untrac.run_notebooks --scale $(SCALE) --figures figures

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m bench

clean-cache:
	rm -rf $${UNTRAC_CACHE:-$$HOME/.cache/untrac}
