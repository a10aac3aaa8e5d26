# The two commands: `make demo` (main job) and `make test` (test suite).
# Each creates .venv, installs the pinned torch first (see TORCH_INDEX), then the project.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
# PyTorch's wheel index for the torch install; empty = pip's configured indexes. `torch==2.13.0` names a
# version, not a build: pip takes the first matching wheel its indexes offer, which is the CPU build only
# where a CPU wheel is found first (a local wheelhouse, as on the CI machine); from plain PyPI on Linux it
# is the CUDA build (several GB). For the CPU build there:
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
# TORCH_INDEX_FLAG=--extra-index-url keeps pip's indexes as well (then the newest matching wheel wins).
TORCH_INDEX ?=
TORCH_INDEX_FLAG ?= --index-url
TORCH_INSTALL := $(TORCH_PIN) $(if $(strip $(TORCH_INDEX)),$(TORCH_INDEX_FLAG) $(TORCH_INDEX))
ORACLE_VENV ?= .venv-oracle
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
export OMP_NUM_THREADS ?= 1

.PHONY: demo test test-oracles install install-test bench bench-digits clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(PIP) install $(TORCH_INSTALL)
	$(PIP) install -e ".[all]"

install-test: $(BIN)/python
	$(PIP) install $(TORCH_INSTALL)
	$(PIP) install -e ".[test,all]"

## Main job: train a small FVDM model on the built-in moving-digits data, sample every task, write a report.
demo: install
	$(BIN)/fvdm demo --out demo_out --threads 2

## Test suite (CPU, 1 thread per process).
test: install-test
	$(BIN)/python -m pytest -q -ra

## Oracle tests against torchvision-based peers (pytorch-fid, cd-fvd) in a separate venv.
test-oracles:
	test -x $(ORACLE_VENV)/bin/python || $(PYTHON) -m venv $(ORACLE_VENV)
	$(ORACLE_VENV)/bin/python -m pip -q install torch==2.14.1 torchvision==0.29.1 pytorch-fid scikit-image
	$(ORACLE_VENV)/bin/python -m pip -q install --no-deps cd-fvd
	$(ORACLE_VENV)/bin/python -m pip -q install einops pluggy "pydantic>=2" pyyaml tqdm pytest scipy pillow numpy
	$(ORACLE_VENV)/bin/python -m pip -q install --no-deps -e .
	FVDM_ORACLES=1 $(ORACLE_VENV)/bin/python -m pytest -q -ra -m oracle tests

## Speed ratios (1 thread) and the paper's zero-shot table at CPU scale (~25 min, 2 cores).
bench: install
	$(BIN)/python -m fvdm bench run speed --threads 1 --out bench_out/speed  # -m: imports the scripts in benchmarks/

bench-digits: install
	$(BIN)/fvdm bench run digits_zero_shot --threads 2 --out bench_out/digits

## GPU check (<= 8 min on one H200): attention kernel parity (fp16/bf16, fwd+bwd), bf16 train-step
## steps/s and MFU (vs 989 TFLOP/s dense bf16), the quick digits suite on CUDA. Writes bench_out/gpu_check.
.PHONY: gpu-check
gpu-check: install
	$(BIN)/python -m benchmarks.gpu_check --device cuda --out bench_out/gpu_check

clean:
	rm -rf $(VENV) $(ORACLE_VENV) demo_out bench_out runs .pytest_cache

## fvdm's train step against the public FVDM code (a local checkout: PUBLIC_DIR=...). The public model imports
## timm, which needs torchvision: it runs in the oracle venv, never in .venv.
.PHONY: bench-speed-public
bench-speed-public:
	test -n "$(PUBLIC_DIR)" || (echo "give PUBLIC_DIR=<checkout of github.com/Yaofang-Liu/FVDM>"; exit 2)
	test -x $(ORACLE_VENV)/bin/python || $(MAKE) test-oracles
	$(ORACLE_VENV)/bin/python -m pip -q install timm ipdb
	OMP_NUM_THREADS=1 $(ORACLE_VENV)/bin/python -m benchmarks.speed_public_fvdm --public-dir $(PUBLIC_DIR) \
		--threads 1 --rounds 30 --out bench_out/speed_public_fvdm
