"""A project whose DAG flow's LLM node has two prompt variants, and a .prompty judge, both reaching a real
local endpoint (fault_endpoint.py) through connection ``aoai``: their transcripts are predictable."""

from __future__ import annotations

import pytest
from conftest import Project
from fault_endpoint import FaultEndpoint

DEPLOYMENT = "gpt-35-turbo"
#: the system message of each variant of node ``classify``; the user message is the row's text in both
SYSTEM = {"variant_0": "Answer with one word: positive or negative.",
          "variant_1": "You are a careful sentiment rater. Reply with positive or negative only."}

DAG = """\
inputs:
  text:
    type: string
outputs:
  category:
    type: string
    reference: ${classify.output}
nodes:
- name: classify
  use_variants: true
node_variants:
  classify:
    default_variant_id: variant_0
    variants:
""" + "".join(f"""\
      {variant}:
        node:
          type: llm
          source:
            type: code
            path: {variant}.jinja2
          inputs:
            deployment_name: {DEPLOYMENT}
            temperature: 0.0
            max_tokens: {20 + i}
            text: ${{inputs.text}}
          provider: AzureOpenAI
          connection: aoai
          api: chat
          module: promptflow.tools.aoai
""" for i, variant in enumerate(SYSTEM))

JUDGE = f"""\
---
name: Judge
model:
  api: chat
  configuration:
    type: azure_openai
    azure_deployment: {DEPLOYMENT}
    connection: aoai
  parameters:
    temperature: 0.0
    max_tokens: 5
inputs:
  answer:
    type: string
---
system:
Rate the answer from 1 to 5.

user:
{{{{answer}}}}
"""


def write_flows(project: Project, endpoint: FaultEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    """flows/clf (the two-variant LLM DAG) and flows/judge.prompty, with connection ``aoai`` at ``endpoint``."""
    monkeypatch.setenv("AOAI_API_KEY", "test-key-not-secret")
    monkeypatch.setenv("AOAI_API_BASE", endpoint.url)
    project.write("flows/clf/flow.dag.yaml", DAG)
    for variant, system in SYSTEM.items():
        project.write(f"flows/clf/{variant}.jinja2", f"# system:\n{system}\n\n# user:\n{{{{text}}}}\n")
    project.write("flows/judge.prompty", JUDGE)
    project.pytester.makeini("[pytest]\npromptflow_llm_backoff = 0.01\n")
