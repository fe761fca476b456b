"""Shared helpers for the pytester acceptance tests: pure-Python flows, datasets and experiments.

Every flow written here is plain Python (DAG python nodes, flex entries, callables), so the
tests need no model server. ``project`` writes them into pytester's folder on demand.
"""

from __future__ import annotations

import json
import os
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import pytest

# numpy (intervals) loads once per process: imported first inside an in-process pytester run, it would be
# dropped with that run's modules and fail to load again in the next
import pytest_promptflow.stats  # noqa: F401

pytest_plugins = ["pytester"]

#: the agent-framework environment that `make setup` creates (`pytest-promptflow env maf`)
SECOND_ENV = Path(__file__).resolve().parents[1] / ".promptflow-envs" / "maf"
MAF_PYTHON = SECOND_ENV / "bin" / "python"


def require_second_environment() -> Path:
    """The second environment's python. Its absence skips the test, except on CI, where `make setup` made it."""
    if not MAF_PYTHON.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no second environment at {SECOND_ENV}: run `make setup` (pytest-promptflow env maf)")
        pytest.skip(f"no second environment at {SECOND_ENV} (pytest-promptflow env maf)")
    return MAF_PYTHON


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of an embedded model server of the test module's own."""
    import os

    from pytest_promptflow.llm.embedded import EmbeddedModel

    model = EmbeddedModel(tmp_path_factory.mktemp("shared"), owner_pid=os.getpid())
    yield model.address()
    model.stop()


@pytest.fixture
def layer(tmp_path: Path) -> Iterator[Any]:
    """Our LLM call layer, answering from a store of the test's own, in every HTTP client of this process."""
    from pytest_promptflow.llm.calls import CallLayer
    from pytest_promptflow.llm.intercept import activate
    from pytest_promptflow.llm.settings import LLMSettings

    layer = CallLayer(LLMSettings(store=tmp_path / "store"))
    activate(layer)
    yield layer
    activate(None)

#: 4 rows; the keyword classifier (variant_0) gets all right, the "always positive" one (variant_1) half.
SMALL = [
    {"text": "a good day", "label": "positive"},
    {"text": "a bad day", "label": "negative"},
    {"text": "good food", "label": "positive"},
    {"text": "awful service", "label": "negative"},
]
#: 2 rows, a second dataset axis.
HARD = [
    {"text": "not good at all", "label": "negative"},
    {"text": "good enough", "label": "positive"},
]
#: 5 rows, the last one makes every classifier here raise.
WITH_BOOM = SMALL + [{"text": "boom", "label": "negative"}]

CLASSIFY_PY = '''\
from promptflow.core import tool


@tool
def classify(text: str, temperature: float = 0.0) -> str:
    if "boom" in text:
        raise ValueError("boom row")
    return "positive" if "good" in text else "negative"
'''

ALWAYS_PY = '''\
from promptflow.core import tool


@tool
def always(text: str, temperature: float = 0.0) -> str:
    if "boom" in text:
        raise ValueError("boom row")
    return "positive"
'''

DECORATE_PY = '''\
from promptflow.core import tool


@tool
def decorate(label: str, upper: bool = False) -> str:
    return label.upper() if upper else label
'''

DAG_FLOW = """\
inputs:
  text:
    type: string
outputs:
  category:
    type: string
    reference: ${decorate.output}
nodes:
- name: classify
  use_variants: true
- name: decorate
  use_variants: true
node_variants:
  classify:
    default_variant_id: variant_0
    variants:
      variant_0:
        node:
          type: python
          source:
            type: code
            path: classify.py
          inputs:
            text: ${inputs.text}
            temperature: 0.0
      variant_1:
        node:
          type: python
          source:
            type: code
            path: always.py
          inputs:
            text: ${inputs.text}
            temperature: 0.0
  decorate:
    default_variant_id: plain
    variants:
      plain:
        node:
          type: python
          source:
            type: code
            path: decorate.py
          inputs:
            label: ${classify.output}
      lower:
        node:
          type: python
          source:
            type: code
            path: decorate.py
          inputs:
            label: ${classify.output}
            upper: false
"""

EVAL_FLOW = """\
inputs:
  groundtruth:
    type: string
  prediction:
    type: string
outputs:
  score:
    type: int
    reference: ${line_score.output}
nodes:
- name: line_score
  type: python
  source:
    type: code
    path: line_score.py
  inputs:
    groundtruth: ${inputs.groundtruth}
    prediction: ${inputs.prediction}
- name: aggregate
  type: python
  source:
    type: code
    path: aggregate.py
  inputs:
    scores: ${line_score.output}
  aggregation: true
"""

LINE_SCORE_PY = '''\
from promptflow.core import tool


@tool
def line_score(groundtruth: str, prediction: str) -> int:
    return int(groundtruth == prediction)
'''

AGGREGATE_PY = '''\
from typing import List

from promptflow.core import log_metric, tool


@tool
def aggregate(scores: List[int]) -> dict:
    accuracy = sum(scores) / len(scores)
    log_metric("accuracy", accuracy)
    return {"accuracy": accuracy}
'''


#: experiment.yaml over flows/clf (a DAG) scored by flows/ev, both variants of classify.
EXPERIMENT = """\
name: clf
flow: ../flows/clf
datasets:
- name: small
  source: ../data/small.jsonl
  mappings:
    text: "${data.text}"
evaluators:
- name: acc
  flow: ../flows/ev
  datasets:
  - name: small
    mappings:
      groundtruth: "${data.label}"
      prediction: "${run.outputs.category}"
variants:
  nodes:
    classify: "*"
thresholds:
  accuracy: ">= 0.75"
  error_rate: "<= 0.0"
"""


def jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


class Project:
    """A user's project inside pytester's folder: flows under flows/, datasets under data/."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.path = pytester.path

    def write(self, relative: str, text: str) -> Path:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text) if text.startswith("\n") else text, encoding="utf-8")
        return target

    def data(self, name: str = "small", rows: Iterable[Mapping[str, Any]] = SMALL) -> str:
        """data/<name>.jsonl; returns the path relative to the project."""
        self.write(f"data/{name}.jsonl", jsonl(rows))
        return f"data/{name}.jsonl"

    def dag_flow(self, name: str = "clf") -> str:
        """A DAG flow: classify (variant_0 keyword, variant_1 always positive) -> decorate (plain, lower)."""
        self.write(f"flows/{name}/flow.dag.yaml", DAG_FLOW)
        self.write(f"flows/{name}/classify.py", CLASSIFY_PY)
        self.write(f"flows/{name}/always.py", ALWAYS_PY)
        self.write(f"flows/{name}/decorate.py", DECORATE_PY)
        return f"flows/{name}"

    def eval_flow(self, name: str = "ev") -> str:
        """An evaluation DAG: per-row line_score and an aggregation node logging 'accuracy'."""
        self.write(f"flows/{name}/flow.dag.yaml", EVAL_FLOW)
        self.write(f"flows/{name}/line_score.py", LINE_SCORE_PY)
        self.write(f"flows/{name}/aggregate.py", AGGREGATE_PY)
        return f"flows/{name}"

    def flex_function(self, name: str = "flexfn", module: str = "fnentry", word: str = "good",
                      inputs: bool = False) -> str:
        """A flex flow whose entry is a function ``module:classify``."""
        declared = "inputs:\n  text:\n    type: string\n" if inputs else ""
        self.write(f"flows/{name}/flow.flex.yaml", f"entry: {module}:classify\n{declared}")
        self.write(f"flows/{name}/{module}.py", f'''\
def classify(text: str) -> dict:
    return {{"category": "positive" if {word!r} in text else "negative"}}
''')
        return f"flows/{name}"

    def flex_class(self, name: str = "flexcls", module: str = "clsentry", inputs: bool = False) -> str:
        """A flex flow whose entry is a class ``module:Classifier`` taking ``word`` at init."""
        declared = ("inputs:\n  text:\n    type: string\ninit:\n  word:\n    type: string\n" if inputs else "")
        self.write(f"flows/{name}/flow.flex.yaml", f"entry: {module}:Classifier\n{declared}")
        self.write(f"flows/{name}/{module}.py", '''\
class Classifier:
    def __init__(self, word: str):
        self.word = word

    def __call__(self, text: str) -> dict:
        return {"category": "positive" if self.word in text else "negative"}
''')
        return f"flows/{name}"

    def experiment(self, text: str, folder: str = "exp", name: str = "experiment.yaml") -> Path:
        return self.write(f"{folder}/{name}", textwrap.dedent(text))


@pytest.fixture(scope="session")
def _promptflow_loaded() -> None:
    """Import promptflow (the way the plugin does, with its home in a temp folder) and the LLM call
    layer once in this process, so in-process pytester runs, which drop modules imported during the
    run, neither pay those imports again nor get a second copy of httpcore2, whose exceptions
    httpx2 maps only for the copy it first saw."""
    import warnings

    from pytest_promptflow.flows import load_promptflow

    with warnings.catch_warnings():  # promptflow's own deprecation noise, not ours to report
        warnings.simplefilter("ignore")
        load_promptflow()
        import promptflow.core  # noqa: F401
        import promptflow.executor  # noqa: F401

        import pytest_promptflow.llm.calls  # noqa: F401


@pytest.fixture
def project(pytester: pytest.Pytester, _promptflow_loaded: None) -> Project:
    return Project(pytester)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """An in-process pytest run in the project, without cache files."""
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)


def outcomes(result: pytest.RunResult) -> dict[str, int]:
    """parseoutcomes() with zero counts dropped, and without warnings: not an outcome, and their count
    depends on which third-party modules (e.g. SQLAlchemy's dialects) earlier in-process runs imported."""
    return {key: value for key, value in result.parseoutcomes().items() if value and key != "warnings"}


def junit_properties(path: Path) -> dict[str, dict[str, str]]:
    """testcase name -> its <property> name/value pairs, from a --junitxml file."""
    found: dict[str, dict[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        found[case.get("name", "")] = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
    return found


#: The corpus's flows and suites are run by test_corpus.py inside pytester, not collected here.
collect_ignore_glob = ["corpus/*"]
