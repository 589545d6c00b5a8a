# The two commands of the README:  make figures  (regenerate every table and figure at SCALE)
#                                  make test     (the whole test suite, notebooks at smoke scale)
PY        ?= python3
VENV      ?= .venv
TORCH     ?= torch==2.13.0
KRONFLUENCE ?= kronfluence==1.0.1
SCALE     ?= mini
# pytest-xdist processes for make test (auto: one per core; 0: run in this process)
TEST_WORKERS ?= auto
# the offline data mirror: UNTRAC_DATA_DIR if set, else ../shared/data if it exists (`make data` writes one)
MIRROR_DEFAULT := $(abspath ../shared/data)
UNTRAC_DATA_DIR ?= $(wildcard $(MIRROR_DEFAULT))
DATA_DIR  ?= $(or $(UNTRAC_DATA_DIR),$(MIRROR_DEFAULT))
DATA_ARGS ?=
# one intra-op thread: CPU results are then bit-identical from machine to machine (the thread count
# changes summation order), and tiny models gain little from more threads; raise it at will
OMP_NUM_THREADS ?= 1
export UNTRAC_DATA_DIR OMP_NUM_THREADS

BIN := $(VENV)/bin

.PHONY: device-check device-carry setup figures test bench clean-cache data check-mirror

# $(call mirror_check,STATUS,NOTE): name the mirror, or say why there is none and how to get one, then exit
# STATUS (with NOTE) when UNTRAC_DATA_DIR is unset, 1 when it names no directory (a mirror promised, not there)
MIRROR_WHY = $(if $(UNTRAC_DATA_DIR),UNTRAC_DATA_DIR=$(UNTRAC_DATA_DIR) is not a directory,UNTRAC_DATA_DIR is not set and there is no $(MIRROR_DEFAULT))
MIRROR_HOW = "  make data                    download one from the Hugging Face hub into $(DATA_DIR)" \
             "                               (python -m untrac.data.write_mirror DIR; DATA_DIR=DIR: elsewhere)" \
             "  make $(or $(MAKECMDGOALS),$@) UNTRAC_DATA_DIR=DIR   use a mirror you have (or export UNTRAC_DATA_DIR)"
mirror_check = if [ -n "$(UNTRAC_DATA_DIR)" ] && [ -d "$(UNTRAC_DATA_DIR)" ]; then \
	  echo "offline data mirror: $(UNTRAC_DATA_DIR)"; \
	else \
	  printf '%s\n' "no offline data mirror: $(MIRROR_WHY)." $(if $(UNTRAC_DATA_DIR),,$(2)) "Get one:" $(MIRROR_HOW) >&2; \
	  exit $(if $(UNTRAC_DATA_DIR),1,$(1)); \
	fi

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"  # dev = pytest + the notebooks, ray, kronfluence and trak extras
	$(BIN)/python -m pip install -q --no-deps "$(KRONFLUENCE)"  # see pyproject.toml: its torchvision pin is unused
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(BIN)/.installed

# every scale but paper reads the mirror (paper reads the hub)
figures: $(if $(filter paper,$(SCALE)),,check-mirror) setup
	$(BIN)/python -m untrac.run_notebooks --scale $(SCALE) --figures figures

check-mirror:
	@$(call mirror_check,1,"The notebooks at SCALE=$(SCALE) and the tests of the real data read it.")

# without a mirror the tests that need it are skipped (and the run ends saying so); a missing
# UNTRAC_DATA_DIR directory fails, and so does any missing mirror under UNTRAC_REQUIRE_MIRROR=1 (CI)
test: setup
	@$(call mirror_check,0,"The tests that need it (notebooks, corpora and test-set readers) will be SKIPPED.")
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) $(if $(filter 0,$(TEST_WORKERS)),,--dist worksteal)

# write an offline mirror from the Hugging Face hub (ToxiGen is gated: `huggingface-cli login` first,
# or DATA_ARGS="--testsets winobias truthfulqa"); `python -m untrac.data.write_mirror --help` for DATA_ARGS
data: setup
	$(BIN)/python -m untrac.data.write_mirror $(DATA_DIR) $(DATA_ARGS)
	@echo "use it: UNTRAC_DATA_DIR=$(abspath $(DATA_DIR)) (make finds $(MIRROR_DEFAULT) by itself)"

device-check: setup  # on a GPU box: CUDA tests, notebook 02 at OPT-125M shapes, the paper bench, K pipelines -> bench/RESULTS.md (--budget 560 s)
	$(BIN)/python -m bench.device_check

device-carry: setup  # for an offline GPU box whose python lacks datasets: .devwheels/ (cp312 wheels) and .devdata/ (the mirror) to carry
	@$(call mirror_check,1,)
	rm -rf .devwheels .devdata && $(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --platform manylinux2014_x86_64 -d .devwheels datasets==$$($(BIN)/python -c "import datasets; print(datasets.__version__)") \
	  dill multiprocess && cp -r $(UNTRAC_DATA_DIR) .devdata
	@echo "carry .devwheels and .devdata; there: pip install --no-index --no-deps .devwheels/*.whl && UNTRAC_DATA_DIR=\$$PWD/.devdata python -m bench.device_check"

bench: setup
	$(BIN)/python -m bench

clean-cache:
	rm -rf $${UNTRAC_CACHE:-$$HOME/.cache/untrac}
