# The README's two commands. Each sets up .venv first (pinned dev requirements + this package, built
# with its C++ extension) and installs the Debian packages the tests and demo read when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FASHION_DIR := /usr/share/datasets/fashion-mnist
export OMP_NUM_THREADS ?= 2

.PHONY: demo test setup system-deps clean bench

setup: $(STAMP)

$(STAMP): requirements-dev.txt setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh)
	$(MAKE) system-deps
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	MAX_JOBS=2 $(BIN)/pip install --quiet --no-build-isolation -e .
	touch $(STAMP)

# Debian packages: the Fashion-MNIST idx files (dataset-fashion-mnist). Installed only when missing.
system-deps:
	@if [ ! -d $(FASHION_DIR) ]; then \
		if [ "$$(id -u)" = "0" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
		else echo "note: $(FASHION_DIR) missing; run 'sudo apt-get install dataset-fashion-mnist' for the Fashion-MNIST tests"; fi; \
	fi

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/wfn demo --out demo_out

bench: $(STAMP)
	$(BIN)/python bench/run.py --out bench/results/runner --repeats 20

clean:
	rm -rf build $(VENV) wfn_kernels/_C*.so *.egg-info
