# One command each: `make test` (set up + run the tests), `make export` (set up + main job).
# `make serve-env` makes .venv-serve, where twins-serve runs (`make test` makes it too).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := PIP_PROGRESS_BAR=off $(BIN)/python -m pip --disable-pip-version-check
SUM    := $(shell cksum < pyproject.toml | cut -d' ' -f1)
RUN_STAMP  := $(VENV)/.run-$(SUM)
TEST_STAMP := $(VENV)/.test-$(SUM)
# TensorRT API descriptions for the conformance tests, kept out of site-packages: the
# stubs' bare tensorrt/ folder would otherwise import as an empty namespace package.
TRT_REF := $(VENV)/trt-reference

.PHONY: setup setup-test serve-env test export clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The package and what it needs to run (PyTorch from the registry: a CUDA build of about
# 2.5 GB that also runs on CPU; the first setup takes a few minutes).
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	@echo "== setting up $(VENV): twins-deploy and its dependencies (first run: a few minutes, ~6 GB) =="
	$(PIP) install -e .
	@rm -f $(VENV)/.run-* && touch $@

# ... plus the test references (timm, Polygraphy, the TensorRT API descriptions).
$(TEST_STAMP): $(RUN_STAMP)
	@echo "== adding the test dependencies and the TensorRT API references =="
	$(PIP) install -e ".[test]"
	$(PIP) install --no-deps --target $(TRT_REF)/stubs tensorrt-stubs==10.13.0.35.1
	$(PIP) download --no-deps -d $(TRT_REF)/wheels tensorrt-cu12-bindings==11.4.0.106
	@rm -f $(VENV)/.test-* && touch $@

setup: $(RUN_STAMP)
setup-test: $(TEST_STAMP)

# The serving environment: PyTriton pins numpy<2 (its python backend returns empty outputs
# under numpy 2), so twins-serve and its tests get a venv of their own beside .venv. torch is
# there because `import twins_deploy` imports it: SERVE_TORCH names a CPU build (2.13.0 lies on
# this project's machines' disk; elsewhere point pip at PyTorch's CPU wheels, or drop the pin).
SERVE_VENV  ?= .venv-serve
SERVE_BIN   := $(SERVE_VENV)/bin
SERVE_STAMP := $(SERVE_VENV)/.installed-$(SUM)
SERVE_TORCH ?= torch==2.13.0
SPIP        := PIP_PROGRESS_BAR=off $(SERVE_BIN)/python -m pip --disable-pip-version-check
SERVE_TESTS := tests/test_serving_repo.py tests/test_serving_server.py

$(SERVE_STAMP): pyproject.toml
	@echo "== setting up $(SERVE_VENV) for twins-serve (numpy<2, PyTriton's Triton server; ~1.5 GB) =="
	@test -x $(SERVE_BIN)/python || $(PYTHON) -m venv $(SERVE_VENV)
	$(SPIP) install "$(SERVE_TORCH)"
	$(SPIP) install -e ".[serve]" "pytest>=7"
	@rm -f $(SERVE_VENV)/.installed-* && touch $@

serve-env: $(SERVE_STAMP)

# Line coverage of the TensorRT modules (engines/trt and the TensorRT runner), all of which
# run under the TensorRT test doubles; which files count is set in pyproject.toml. Paths,
# not module names: --cov=twins_deploy.engines imports torch too early and breaks it.
# Measured over the TensorRT test files only: coverage's tracer slows every other test too
# (about 2 of the suite's 15 minutes on 2 cores), for lines only these files are about.
TRT_COV   := --cov=engines --cov-report=term-missing:skip-covered --cov-fail-under=95
TRT_TESTS := $(sort $(wildcard tests/test_trt_*.py)) tests/test_bench_trt.py

# -v prints every test as it finishes; --durations lists the slowest at the end. All three
# runs always run; the target fails if any did.
# The two environments are independent: they are set up side by side (pip is mostly waiting on
# disk and unpacking; about 50 s less than one after the other on 2 cores), their output
# interleaved.
test:
	@$(MAKE) --no-print-directory -j2 $(TEST_STAMP) $(SERVE_STAMP)
	@echo "== running the tests (CPU only): the main suite, the TensorRT tests under the doubles, then the serving tests in $(SERVE_VENV) =="
	$(BIN)/python -m pytest -v --durations=10 $(addprefix --ignore=,$(TRT_TESTS)); main=$$?; \
	echo "== the TensorRT tests, under the test doubles (line coverage of the TensorRT modules) =="; \
	$(BIN)/python -m pytest -v $(TRT_COV) $(TRT_TESTS); trt=$$?; \
	echo "== the serving tests (a real Triton server) =="; \
	$(SERVE_BIN)/python -m pytest -v $(SERVE_TESTS); serve=$$?; \
	test $$main -eq 0 && test $$trt -eq 0 && test $$serve -eq 0

export: $(RUN_STAMP)
	$(BIN)/twins-export --model svt_s --fmt onnx --force

clean:
	rm -rf $(VENV) $(SERVE_VENV) build *.egg-info
