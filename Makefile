# The two commands of the README:
#   make demo   set up the environment and run the main job
#   make test   set up the environment and run every check (lint, types, tests)
# Both create .venv on first use; later runs reuse it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup browser demo test lint typecheck pytest clean

setup: $(STAMP)

# torch==2.13.0 first: pip takes the CPU build from local disk; any other
# torch request would pull the registry's CUDA build (several GB).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[train,export,service,milvus,dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/reid demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The web page's browser tests drive Debian's Chromium (never a downloaded browser).
# Installed when missing and this runs as root with apt-get; otherwise those tests
# skip and say why.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
		|| echo "note: installing chromium failed: browser tests will skip"; \
	else echo "note: chromium not installed and not root: browser tests will skip"; fi

# pytest exits 5 when it collects no test; that is a failure of the suite here.
pytest: $(STAMP) browser
	$(BIN)/python -m pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
