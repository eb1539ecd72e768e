# The README's two commands: `make demo` and `make test`.
VENV ?= .venv

.PHONY: setup demo test
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

demo: setup
	$(VENV)/bin/wtours demo

test: setup
	$(VENV)/bin/python -m pytest -q
