# One command each: `make test` (set up + run the tests), `make export` (set up + main job).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: setup test export clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

export: $(STAMP)
	$(BIN)/python -c "import torch, twins_deploy as td; m = td.create_model('svt_s'); \
	x = torch.randn(1, 3, 224, 224); print('svt_s logits', tuple(m(x).shape), m.weights_info.note)"

clean:
	rm -rf $(VENV) build *.egg-info
