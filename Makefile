# The README's two commands: `make demo` and `make test`; `make lint` and `make test-fast` for development.
VENV ?= .venv

.PHONY: setup demo test test-fast lint
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

demo: setup
	$(VENV)/bin/wtours demo

test: setup
	$(VENV)/bin/python -m pytest -q

# The edit-test loop: everything but the end-to-end runs marked slow.
test-fast: setup
	$(VENV)/bin/python -m pytest -q -m "not slow"

# ruff, mypy, and the layer contracts of pyproject.toml's [tool.importlinter] (no import cycle, no upward import).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
