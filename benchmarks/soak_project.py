"""The soak's project: one DAG flow whose LLM node reaches connection ``aoai``, the sample suite's
evaluation flow, a dataset, an experiment.yaml with variants and thresholds, a pytest.ini and a deployment_config.json.

The LLM answers by echoing the prompt's user message (``tests/fault_endpoint.py``), so every answer, and
so every verdict, follows from the prompt alone: variant_0 asks with the review and scores 0.875,
variant_1 adds "good" to every question and scores 0.5 (it reads every review as positive).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

FLOW = "classify"
#: the sample suite's evaluation flow, copied in as the soak's evaluator
SAMPLE_EVALUATOR = Path(__file__).resolve().parents[1] / "flows" / "sentiment_eval"
DEPLOYMENT = "gpt-35-turbo"

VARIANT = f"""\
      {{name}}:
        node:
          type: llm
          source:
            type: code
            path: {{prompt}}
          inputs:
            deployment_name: {DEPLOYMENT}
            temperature: 0.0
            max_tokens: 20
            text: ${{{{inputs.text}}}}
          provider: AzureOpenAI
          connection: aoai
          api: chat
          module: promptflow.tools.aoai
"""
FLOW_DAG = """\
inputs:
  text:
    type: string
outputs:
  category:
    type: string
    reference: ${parse.output}
nodes:
- name: ask
  use_variants: true
- name: parse
  type: python
  source:
    type: code
    path: parse.py
  inputs:
    answer: ${ask.output}
node_variants:
  ask:
    default_variant_id: variant_0
    variants:
""" + VARIANT.format(name="variant_0", prompt="ask.jinja2") + VARIANT.format(name="variant_1", prompt="ask_hint.jinja2")
ASK = "# system:\nSay whether the review is positive or negative.\n\n# user:\n{{text}}\n"
ASK_HINT = "# system:\nSay whether the review is positive or negative.\n\n# user:\nIs this good? {{text}}\n"
PARSE = '''\
from promptflow.core import tool


@tool
def parse(answer: str) -> str:
    return "positive" if "good" in answer.lower() else "negative"
'''
REVISION = "\n# soak revision {revision}: a change that alters no answer, so each release registers a new version\n"

#: 8 reviews; the keyword parser gets all but "not good at all" right.
ROWS = [
    {"text": "a good day out", "label": "positive"},
    {"text": "a bad day", "label": "negative"},
    {"text": "good food, friendly staff", "label": "positive"},
    {"text": "awful service", "label": "negative"},
    {"text": "not good at all", "label": "negative"},
    {"text": "good value", "label": "positive"},
    {"text": "cold and late", "label": "negative"},
    {"text": "really good coffee", "label": "positive"},
]

EXPERIMENT = f"""\
name: {FLOW}
flow: ../../flows/{FLOW}

connections:
- name: aoai
  connection_type: AzureOpenAIConnection
  api_base: ${{AOAI_API_BASE}}
  api_version: "2024-02-01"
  api_key: ${{AOAI_API_KEY}}
  api_type: azure

datasets:
- name: reviews
  source: ../../data/reviews.jsonl
  mappings:
    text: "${{data.text}}"

evaluators:
- name: accuracy
  flow: ../../flows/accuracy
  datasets:
  - name: reviews
    mappings:
      groundtruth: "${{data.label}}"
      prediction: "${{run.outputs.category}}"

variants:
  nodes:
    ask: "*"

thresholds:                     # faultless: 0.875 (variant_0) and 0.5 (variant_1), no errors;
  accuracy: ">= 0.25"           # a cell fails when 3 of its 8 rows end in errors
  error_rate: "<= 0.3"
"""

#: Retries fast, and a call that takes more than a second (a ``slow`` fault) times out.
PYTEST_INI = f"""\
[pytest]
promptflow_llm_backoff = 0.05
promptflow_llm_timeout = 1
promptflow_llm_retries = 4
promptflow_primary_metrics = {FLOW}: accuracy
"""


def write_project(folder: Path, deployments_llm: str) -> None:
    """The project in ``folder``; its deployments reach the LLM at ``deployments_llm``."""
    files = {
        f"flows/{FLOW}/flow.dag.yaml": FLOW_DAG,
        f"flows/{FLOW}/ask.jinja2": ASK,
        f"flows/{FLOW}/ask_hint.jinja2": ASK_HINT,
        f"flows/{FLOW}/parse.py": PARSE,
        "data/reviews.jsonl": "".join(json.dumps(row) + "\n" for row in ROWS),
        f"evals/{FLOW}/experiment.yaml": EXPERIMENT,
        "pytest.ini": PYTEST_INI,
        "deployment_config.json": json.dumps({"local_endpoint": [{
            "ENV_NAME": "dev", "ENVIRONMENT_VARIABLES": {"AOAI_API_BASE": deployments_llm}}]}, indent=1) + "\n",
    }
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    shutil.copytree(SAMPLE_EVALUATOR, folder / "flows/accuracy")  # 1 per matching label, accuracy their mean


def set_revision(folder: Path, revision: int) -> None:
    """Marks the flow's python node with ``revision``: the packaged flow changes, its answers do not."""
    (folder / f"flows/{FLOW}/parse.py").write_text(PARSE + REVISION.format(revision=revision), encoding="utf-8")
