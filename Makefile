# Every target installs the project into .venv first, so a fresh clone needs only Python 3.11 (with venv: Debian's
# python3-venv), gcc, make and git.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# xsc's modules compiled to bytecode, as pip compiles a package it installs: where PYTHONDONTWRITEBYTECODE is set,
# every node and CLI process would otherwise compile them again as it starts (~0.4 s of CPU for a node).
# Only the files changed since are compiled again.
COMPILE := $(BIN)/python -m compileall -q -j 0 xsc
MINIO_SDIST := 7.2.20

.PHONY: run test bench demo wasm trials fuzz fuzz-wasm fuzz-api fuzz-s3 clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,plot]'
	# MinIO's functional test program ships only in minio-py's source package (tests/s3/test_s3_minio.py runs it).
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: 'minio==$(MINIO_SDIST)' -d $(VENV)/sdists
	$(COMPILE)
	touch $(STAMP)

run: $(STAMP)
	$(COMPILE)
	$(BIN)/xsc node start

# The tests' temporary folders, their nodes' data dirs among them, go on a tmpfs where /dev/shm has 8 GiB free: a
# node's synced writes cost the suite's workers nothing there to wait on, and the suite runs about a tenth faster.
PYTEST_DEBUG_TEMPROOT ?= $(shell [ -w /dev/shm ] && [ "$$(df -Pk /dev/shm | awk 'NR == 2 {print $$4}')" -ge 8388608 ] \
	&& echo /dev/shm)

test: $(STAMP)
	$(COMPILE)
	$(if $(PYTEST_DEBUG_TEMPROOT),PYTEST_DEBUG_TEMPROOT=$(PYTEST_DEBUG_TEMPROOT)) \
		$(BIN)/python -m pytest -n 3 --dist worksteal -q -rs

bench: $(STAMP)
	$(COMPILE)
	$(BIN)/python -m bench

# A scripted tour on a local devnet of 6 nodes: placement, two nodes killed, get, restart, repair.
demo: $(STAMP)
	bash scripts/demo.sh

# Crash trials on a 6-node devnet: N times a random workload, kill -9 of one or two nodes, restart, invariants.
trials: N ?= 100
trials: $(STAMP)
	$(BIN)/python -m bench.trials --trials $(N)

# Fuzzing against real node processes (seeded: a failing case prints the seed that replays it).
fuzz-wasm: N ?= 5000
fuzz-wasm: $(STAMP)
	$(BIN)/python -m bench.wasm_fuzz --n $(N)

EXAMPLES ?= 100
fuzz-api: $(STAMP)
	$(BIN)/python -m bench.api_fuzz --examples $(EXAMPLES)

REQUESTS ?= 10000
fuzz-s3: $(STAMP)
	$(BIN)/python -m bench.s3_fuzz --requests $(REQUESTS)

fuzz: fuzz-wasm fuzz-api fuzz-s3

# Rebuild fixtures/wasm/*.wasm from their .wat sources (the .wasm files are committed).
wasm: $(STAMP)
	$(BIN)/python -m fixtures.wasm.build

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
