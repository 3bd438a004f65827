# One command each: `make test` (set up + run the tests), `make export` (set up + main job).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check --progress-bar off
SUM    := $(shell cksum < pyproject.toml | cut -d' ' -f1)
RUN_STAMP  := $(VENV)/.run-$(SUM)
TEST_STAMP := $(VENV)/.test-$(SUM)
# TensorRT API descriptions for the conformance tests, kept out of site-packages: the
# stubs' bare tensorrt/ folder would otherwise import as an empty namespace package.
TRT_REF := $(VENV)/trt-reference

.PHONY: setup setup-test test export clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The package and what it needs to run (PyTorch from the registry: a CUDA build of about
# 2.5 GB that also runs on CPU; the first setup takes a few minutes).
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	@echo "== setting up $(VENV): twins-deploy and its dependencies (first run: a few minutes, ~6 GB) =="
	$(PIP) install -e .
	@rm -f $(VENV)/.run-* && touch $@

# ... plus the test references (timm, the TensorRT API descriptions).
$(TEST_STAMP): $(RUN_STAMP)
	@echo "== adding the test dependencies and the TensorRT API references =="
	$(PIP) install -e ".[test]"
	$(PIP) install --no-deps --target $(TRT_REF)/stubs tensorrt-stubs==10.13.0.35.1
	$(PIP) download --no-deps -d $(TRT_REF)/wheels tensorrt-cu12-bindings==11.4.0.106
	@rm -f $(VENV)/.test-* && touch $@

setup: $(RUN_STAMP)
setup-test: $(TEST_STAMP)

# Line coverage of the TensorRT modules (engines/trt and the TensorRT runner), all of which
# run under the TensorRT test doubles; which files count is set in pyproject.toml. Paths,
# not module names: --cov=twins_deploy.engines imports torch too early and breaks it.
TRT_COV := --cov=engines --cov-report=term-missing:skip-covered --cov-fail-under=95

# -v prints every test as it finishes; --durations lists the slowest at the end.
test: $(TEST_STAMP)
	@echo "== running the tests (CPU only; about 10 minutes on 2 cores) =="
	$(BIN)/python -m pytest -v --durations=10 $(TRT_COV)

export: $(RUN_STAMP)
	$(BIN)/twins-export --model svt_s --fmt onnx --force

clean:
	rm -rf $(VENV) build *.egg-info
