# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Reinstall when the dependencies or the checkout location change.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)-$(shell echo $(CURDIR) | sha1sum | cut -c1-8)

.PHONY: demo test lint install clean-venv docs

demo: $(STAMP)
	$(VENV)/bin/dance run graphs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q

# ruff on the whole tree, mypy on the runtime (settings: pyproject.toml); .ci/run runs it after the tests
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

install: $(STAMP)

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test,perception,scale]'
	rm -f $(VENV)/.installed-*
	touch $@

docs: $(STAMP)
	$(VENV)/bin/dance nodes --markdown > docs/nodes.md

clean-venv:
	rm -rf $(VENV)
