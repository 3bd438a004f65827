# One command each: `make test` (set up + run the tests), `make export` (set up + main job).
# `make serve-env` makes .venv-serve, where twins-serve runs (`make test` makes it too).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: setup serve-env test export clean

# TensorRT API descriptions for the conformance tests, kept out of site-packages: the
# stubs' bare tensorrt/ folder would otherwise import as an empty namespace package.
TRT_REF := $(VENV)/trt-reference
PIP     := $(BIN)/python -m pip --disable-pip-version-check

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -e ".[test]"
	$(PIP) install --quiet --no-deps --target $(TRT_REF)/stubs tensorrt-stubs==10.13.0.35.1
	$(PIP) download --quiet --no-deps -d $(TRT_REF)/wheels tensorrt-cu12-bindings==11.4.0.106
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

# The serving environment: PyTriton pins numpy<2 (its python backend returns empty outputs
# under numpy 2), so twins-serve and its tests get a venv of their own beside .venv. torch is
# there because `import twins_deploy` imports it: SERVE_TORCH names a CPU build (2.13.0 lies on
# this project's machines' disk; elsewhere point pip at PyTorch's CPU wheels, or drop the pin).
SERVE_VENV  ?= .venv-serve
SERVE_BIN   := $(SERVE_VENV)/bin
SERVE_STAMP := $(SERVE_VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
SERVE_TORCH ?= torch==2.13.0
SPIP        := $(SERVE_BIN)/python -m pip --disable-pip-version-check
SERVE_TESTS := tests/test_serving_repo.py tests/test_serving_server.py

$(SERVE_STAMP): pyproject.toml
	@test -x $(SERVE_BIN)/python || $(PYTHON) -m venv $(SERVE_VENV)
	$(SPIP) install --quiet "$(SERVE_TORCH)"
	$(SPIP) install --quiet -e ".[serve]" "pytest>=7"
	@rm -f $(SERVE_VENV)/.installed-* && touch $@

serve-env: $(SERVE_STAMP)

# both runs always run; the target fails if either did
test: $(STAMP) $(SERVE_STAMP)
	@echo "$(BIN)/python -m pytest -q"; $(BIN)/python -m pytest -q; main=$$?; \
	echo "$(SERVE_BIN)/python -m pytest -q $(SERVE_TESTS)"; \
	$(SERVE_BIN)/python -m pytest -q $(SERVE_TESTS); serve=$$?; \
	test $$main -eq 0 && test $$serve -eq 0

export: $(STAMP)
	$(BIN)/twins-export --model svt_s --fmt onnx --force

clean:
	rm -rf $(VENV) $(SERVE_VENV) build *.egg-info
