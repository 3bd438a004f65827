# One command each: `make test` (set up + run the tests), `make export` (set up + main job).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: setup test export clean

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

# Line coverage of the TensorRT modules, all of which run under the TensorRT test doubles
# (paths, not module names: --cov=twins_deploy.engines.trt imports torch too early and breaks it).
TRT_COV := --cov=engines/trt --cov-report=term-missing:skip-covered --cov-fail-under=95

test: $(STAMP)
	$(BIN)/python -m pytest -q $(TRT_COV)

export: $(STAMP)
	$(BIN)/twins-export --model svt_s --fmt onnx --force

clean:
	rm -rf $(VENV) build *.egg-info
