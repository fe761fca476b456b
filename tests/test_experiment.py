"""experiment.yaml loading: the template's format, our keys, overlays and file:line errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pytest_promptflow.config import ExperimentSpec, parse_mapping
from pytest_promptflow.experiment import is_experiment_file, load_experiment
from pytest_promptflow.errors import SpecError

TEMPLATE = """\
name: named_entity_recognition
flow: flows/standard
connections:
- name: aoai
  connection_type: AzureOpenAIConnection
  api_endpoint: https://x.openai.azure.com/
  api_version: 2023-07-01-preview
  api_key: ${api_key}
  api_type: azure
datasets:
- name: ner_train
  source: data/data.jsonl
  description: "train"
  mappings:
    text: "${data.text}"
    entity_type: "${data.entity_type}"
evaluators:
- name: matcher
  flow: flows/evaluation
  datasets:
  - name: ner_test
    reference: ner_train
    source: data/eval_data.jsonl
    description: "test"
    mappings:
      ground_truth: "${data.results}"
      entities: "${run.outputs.entities}"
  - name: ner_train
    mappings:
      ground_truth: "${data.results}"
      entities: "${target.entities}"
"""

OURS = """\
variants:
  strategy: one_at_a_time
  nodes:
    classify: "*"
    summarize: [variant_0, variant_1]
  overrides:
    nodes.classify.inputs.temperature: [0.0, 0.7]
    nodes.classify.inputs.max_tokens: 64
thresholds:
  accuracy: ">= 0.6"
  error_rate: "<= 0.05"
  f1_score: 0.5
"""


@pytest.fixture
def case(tmp_path: Path) -> Path:
    """A use-case folder like the template's: flows and data beside experiment.yaml."""
    folder = tmp_path / "named_entity_recognition"
    for flow in ("standard", "evaluation"):
        (folder / "flows" / flow).mkdir(parents=True)
        (folder / "flows" / flow / "flow.dag.yaml").write_text("nodes: []\n")
    (folder / "data").mkdir()
    (folder / "data" / "data.jsonl").write_text('{"text": "a", "entity_type": "b", "results": "c"}\n')
    (folder / "data" / "eval_data.jsonl").write_text('{"results": "c"}\n')
    return folder


def write(folder: Path, text: str, name: str = "experiment.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def line_of(path: Path, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing ``needle``."""
    hits = [n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    return hits[nth - 1]


def error(path: Path, env: str | None = None) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_experiment(path, env)
    return info.value


def assert_error(exc: SpecError, path: Path, line: int | None, *fragments: str) -> None:
    text = str(exc)
    prefix = f"{path}:{line}: " if line else f"{path}: "
    assert text.startswith(prefix), text
    for fragment in fragments:
        assert fragment in text, text


# --- the template's format --------------------------------------------------------------------


def test_template_file_without_our_keys_loads(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("api_key", "s3cret")
    path = write(case, TEMPLATE)
    spec = load_experiment(path)
    assert isinstance(spec, ExperimentSpec)
    assert spec.name == "named_entity_recognition"
    assert spec.flow == case / "flows" / "standard"
    assert spec.variants is None and spec.thresholds == ()
    (train,) = spec.datasets
    assert train.source == case / "data" / "data.jsonl"
    assert train.mappings == {"text": "${data.text}", "entity_type": "${data.entity_type}"}
    assert train.reference is None and train.description == "train"
    assert train.where is not None and train.where.line == line_of(path, "mappings:")
    (matcher,) = spec.evaluators
    assert matcher.flow == case / "flows" / "evaluation"
    test_ds, same_ds = matcher.datasets
    assert (test_ds.name, test_ds.reference) == ("ner_test", "ner_train")
    assert test_ds.source == case / "data" / "eval_data.jsonl"
    assert test_ds.mappings["entities"] == "${run.outputs.entities}"
    # naming a standard dataset reuses its file; reference is always the dataset the flow ran on
    assert (same_ds.name, same_ds.reference, same_ds.source) == ("ner_train", "ner_train", train.source)
    assert same_ds.mappings["entities"] == "${run.outputs.entities}"  # ${target.x} normalised
    (aoai,) = spec.connections
    assert (aoai.name, aoai.type) == ("aoai", "AzureOpenAIConnection")
    assert aoai.values == {"api_base": "https://x.openai.azure.com/", "api_version": "2023-07-01-preview",
                           "api_key": "s3cret", "api_type": "azure"}
    assert "s3cret" not in repr(aoai)


def test_our_keys(case: Path) -> None:
    spec = load_experiment(write(case, TEMPLATE + OURS))
    variants = spec.variants
    assert variants is not None and variants.strategy == "one_at_a_time"
    assert variants.nodes == {"classify": "*", "summarize": ("variant_0", "variant_1")}
    assert variants.overrides == {"nodes.classify.inputs.temperature": (0.0, 0.7),
                                  "nodes.classify.inputs.max_tokens": (64,)}
    assert [str(t) for t in spec.thresholds] == ["accuracy >= 0.6", "error_rate <= 0.05", "f1_score >= 0.5"]
    assert spec.thresholds[0].where is not None and spec.thresholds[0].where.line == line_of(
        case / "experiment.yaml", "accuracy:")


def test_empty_variants_means_defaults(case: Path) -> None:
    spec = load_experiment(write(case, TEMPLATE + "variants:\n"))
    assert spec.variants is not None and spec.variants.strategy == "matrix" and not spec.variants.nodes


def test_default_name_is_the_folder(case: Path) -> None:
    spec = load_experiment(write(case, TEMPLATE.replace("name: named_entity_recognition\n", "")))
    assert spec.name == "named_entity_recognition"


def test_template_data_folder_fallback_and_prompty(case: Path) -> None:
    (case / "chat.prompty").write_text("---\n---\n")
    text = TEMPLATE.replace("flow: flows/standard", "flow: chat.prompty").replace("source: data/data.jsonl",
                                                                                 "source: data.jsonl")
    spec = load_experiment(write(case, text))
    assert spec.flow == case / "chat.prompty"
    assert spec.datasets[0].source == case / "data" / "data.jsonl"


def test_csv_and_literal_mapping(case: Path) -> None:
    (case / "data" / "rows.csv").write_text("text\nx\n")
    text = TEMPLATE.replace("data/data.jsonl", "data/rows.csv").replace('entity_type: "${data.entity_type}"',
                                                                        "entity_type: 3")
    spec = load_experiment(write(case, text))
    assert spec.datasets[0].mappings["entity_type"] == 3


# --- connections ----------------------------------------------------------------------------------


def test_env_values(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("api_key", raising=False)
    monkeypatch.setenv("RESOURCE", "myres")
    text = TEMPLATE.replace("https://x.openai.azure.com/", "https://${RESOURCE}.openai.azure.com/")
    (aoai,) = load_experiment(write(case, text)).connections
    assert aoai.values["api_key"] == ""  # unset: empty, never an error
    assert aoai.values["api_base"] == "https://myres.openai.azure.com/"


def test_custom_connection_configs_and_secrets(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN", "tok")
    text = TEMPLATE.replace("connections:\n", "connections:\n- name: custom\n  connection_type: CustomConnection\n"
                            "  configs:\n    url: http://h\n  secrets:\n    token: ${TOKEN}\n")
    custom = load_experiment(write(case, text)).connections[0]
    assert (custom.configs, custom.secrets) == ({"url": "http://h"}, {"token": "tok"})


def test_connection_errors_never_show_secrets(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("api_key", "s3cret")
    path = write(case, TEMPLATE.replace("  api_type: azure", "  api_type: [azure]"))
    exc = error(path)
    assert_error(exc, path, line_of(path, "api_type"), "'api_type' must be one value", "write 'key: value'")
    assert "s3cret" not in str(exc)
    path = write(case, TEMPLATE.replace("  connection_type: AzureOpenAIConnection\n", ""))
    assert_error(error(path), path, line_of(path, "- name: aoai"), "missing required key 'connection_type'")


def test_api_base_and_api_endpoint_both(case: Path) -> None:
    path = write(case, TEMPLATE.replace("  api_type: azure", "  api_base: https://y/"))
    assert_error(error(path), path, line_of(path, "api_base"), "api_base is given twice", "keep one")


# --- syntax and shape -------------------------------------------------------------------------------


def test_yaml_syntax_error(case: Path) -> None:
    path = write(case, "name: x\nflow: [flows/standard\ndatasets: []\n")
    assert_error(error(path), path, 3, "YAML syntax error", "fix the YAML at that line")


def test_duplicate_key(case: Path) -> None:
    path = write(case, TEMPLATE + "name: again\n")
    assert_error(error(path), path, line_of(path, "name: again"), "YAML syntax error", "duplicate key")


def test_top_level_not_a_mapping(case: Path) -> None:
    path = write(case, "- name: x\n")
    assert_error(error(path), path, 1, "top level must be a mapping", "write keys such as name, flow")
    path = write(case, "")
    assert_error(error(path), path, None, "got nothing")


def test_missing_file(case: Path) -> None:
    assert_error(error(case / "nope.yaml"), case / "nope.yaml", None, "file not found")


@pytest.mark.parametrize(
    ("old", "new", "needle", "fragments"),
    [
        ("datasets:\n", "dataset:\n", "dataset:", ("unknown key 'dataset' in experiment", "did you mean 'datasets'?",
                                                   "allowed keys: name, flow, connections, datasets")),
        ("  source: data/data.jsonl", "  sorce: data/data.jsonl", "sorce",
         ("unknown key 'sorce' in dataset #1", "did you mean 'source'?", "allowed keys: name, source,")),
        ("  flow: flows/evaluation", "  flows: flows/evaluation", "flows: flows/evaluation",
         ("unknown key 'flows' in evaluator #1", "did you mean 'flow'?")),
        ("    reference: ner_train", "    refrence: ner_train", "refrence",
         ("unknown key 'refrence' in evaluator 'matcher' dataset #1", "did you mean 'reference'?")),
    ],
)
def test_unknown_keys(case: Path, old: str, new: str, needle: str, fragments: tuple[str, ...]) -> None:
    path = write(case, TEMPLATE.replace(old, new, 1))
    assert_error(error(path), path, line_of(path, needle), *fragments)


def test_unknown_variants_key(case: Path) -> None:
    path = write(case, TEMPLATE + "variants:\n  node:\n    classify: '*'\n")
    assert_error(error(path), path, line_of(path, "node:"), "unknown key 'node' in variants",
                 "did you mean 'nodes'?", "allowed keys: strategy, nodes, overrides")


@pytest.mark.parametrize(("key", "fix"), [("flow", "add 'flow: "), ("datasets", "add 'datasets: ")])
def test_missing_required_top_key(case: Path, key: str, fix: str) -> None:
    text = TEMPLATE.replace("flow: flows/standard\n", "") if key == "flow" else "name: x\nflow: flows/standard\n"
    path = write(case, text)
    assert_error(error(path), path, None, f"missing required key {key!r}", fix)


def test_missing_dataset_source(case: Path) -> None:
    path = write(case, TEMPLATE.replace("  source: data/data.jsonl\n", ""))
    assert_error(error(path), path, line_of(path, "- name: ner_train"), "dataset #1 is missing required key 'source'",
                 "add 'source: ...'")


@pytest.mark.parametrize(
    ("old", "new", "needle", "fragments"),
    [
        ("datasets:\n- name: ner_train\n  source: data/data.jsonl\n  description: \"train\"\n  mappings:\n"
         "    text: \"${data.text}\"\n    entity_type: \"${data.entity_type}\"\n",
         "datasets: data/data.jsonl\n", "datasets:", ("'datasets' must be a list, got str", "'- name: ")),
        ("  mappings:\n    text: \"${data.text}\"\n    entity_type: \"${data.entity_type}\"\n", "  mappings: [text]\n",
         "mappings: [text]", ("'mappings' must be a mapping, got a list",)),
        ("datasets:\n- name: ner_train\n", "datasets:\n- ner_train\n- name: ner_train\n", "- ner_train",
         ("dataset #1 must be a mapping",)),
    ],
)
def test_wrong_types(case: Path, old: str, new: str, needle: str, fragments: tuple[str, ...]) -> None:
    path = write(case, TEMPLATE.replace(old, new, 1))
    assert_error(error(path), path, line_of(path, needle), *fragments)


def test_empty_datasets(case: Path) -> None:
    path = write(case, "flow: flows/standard\ndatasets: []\n")
    assert_error(error(path), path, 2, "'datasets' is empty", "add at least one")


def test_duplicate_dataset_names(case: Path) -> None:
    text = TEMPLATE.replace("evaluators:\n", "- name: ner_train\n  source: data/data.jsonl\nevaluators:\n")
    path = write(case, text)
    assert_error(error(path), path, line_of(path, "- name: ner_train", 2), "two datasets are named 'ner_train'")


# --- paths --------------------------------------------------------------------------------------------


def test_flow_folder_missing(case: Path) -> None:
    path = write(case, TEMPLATE.replace("flow: flows/standard", "flow: flows/standrd"))
    assert_error(error(path), path, 2, "flow 'flows/standrd' not found", "flow.dag.yaml or flow.flex.yaml",
                 ".prompty file")


def test_flow_folder_without_flow_file(case: Path) -> None:
    (case / "flows" / "empty").mkdir()
    path = write(case, TEMPLATE.replace("flow: flows/standard", "flow: flows/empty"))
    assert_error(error(path), path, 2, "has neither flow.dag.yaml nor flow.flex.yaml", "a .prompty file")


def test_evaluator_flow_missing(case: Path) -> None:
    path = write(case, TEMPLATE.replace("flow: flows/evaluation", "flow: flows/eval"))
    assert_error(error(path), path, line_of(path, "flows/eval"), "evaluator 'matcher' flow 'flows/eval' not found")


def test_evaluator_flow_defaults_to_its_name(case: Path) -> None:
    (case / "matcher").mkdir()
    (case / "matcher" / "flow.flex.yaml").write_text("entry: x:y\n")
    spec = load_experiment(write(case, TEMPLATE.replace("  flow: flows/evaluation\n", "")))
    assert spec.evaluators[0].flow == case / "matcher"


def test_paths_relative_to_the_yaml_not_cwd(case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = load_experiment(write(case, TEMPLATE))
    assert spec.flow == case / "flows" / "standard"


def test_dataset_source_missing(case: Path) -> None:
    path = write(case, TEMPLATE.replace("source: data/data.jsonl", "source: data/nope.jsonl"))
    assert_error(error(path), path, line_of(path, "nope.jsonl"), "dataset 'ner_train': source file not found",
                 f"it is relative to {case}")


def test_dataset_source_unsupported_or_remote(case: Path) -> None:
    (case / "data" / "rows.parquet").write_bytes(b"")
    path = write(case, TEMPLATE.replace("source: data/data.jsonl", "source: data/rows.parquet"))
    assert_error(error(path), path, line_of(path, "rows.parquet"), "unsupported data file", ".jsonl, .csv")
    path = write(case, TEMPLATE.replace("source: data/data.jsonl", "source: azureml:ner:1"))
    assert_error(error(path), path, line_of(path, "azureml:"), "cannot be read locally", "download the data asset")


# --- evaluator datasets -------------------------------------------------------------------------------


def test_reference_to_unknown_dataset(case: Path) -> None:
    path = write(case, TEMPLATE.replace("reference: ner_train", "reference: ner_trian"))
    assert_error(error(path), path, line_of(path, "ner_trian"), "reference 'ner_trian' is not a standard dataset",
                 "did you mean 'ner_train'?", "standard datasets: ner_train")


def test_evaluator_dataset_neither_standard_nor_sourced(case: Path) -> None:
    path = write(case, TEMPLATE.replace("  - name: ner_train\n", "  - name: ner_trains\n"))
    assert_error(error(path), path, line_of(path, "- name: ner_trains"),
                 "dataset 'ner_trains' is neither a standard dataset nor has a source", "did you mean 'ner_train'?",
                 "or add source: and reference:")


def test_evaluator_dataset_source_without_reference(case: Path) -> None:
    path = write(case, TEMPLATE.replace("    reference: ner_train\n", ""))
    assert_error(error(path), path, line_of(path, "- name: ner_test"), "has a source but no reference",
                 "add 'reference: ", "one of: ner_train")


def test_evaluator_dataset_standard_name_with_source(case: Path) -> None:
    path = write(case, TEMPLATE.replace("  - name: ner_test\n", "  - name: ner_train\n"))
    assert_error(error(path), path, line_of(path, "eval_data.jsonl"),
                 "has a standard dataset's name and its own source", "remove source")


@pytest.mark.parametrize(
    ("old", "new", "fragments"),
    [
        ('"${data.results}"', '"${data:results}"', ("is not a mapping we know", '"${data.<column>}"')),
        ('"${run.outputs.entities}"', '"${run.inputs.text}"', ("is not a mapping we know",)),
        ('text: "${data.text}"', 'text: {a: 1}', ("must be a reference or a literal, got a mapping",)),
        ('text: "${data.text}"', 'text: "${run.outputs.text}"', ("reads a flow output", "use ${data.<column>} here")),
    ],
)
def test_bad_mapping_values(case: Path, old: str, new: str, fragments: tuple[str, ...]) -> None:
    path = write(case, TEMPLATE.replace(old, new, 1))
    needle = new.split(":")[0].strip() + ":"
    line = line_of(path, new.split('"')[1] if '"' in new else needle)
    assert_error(error(path), path, line, *fragments)


# --- variants and thresholds --------------------------------------------------------------------------


def test_unknown_strategy(case: Path) -> None:
    path = write(case, TEMPLATE + "variants:\n  strategy: one_at_time\n")
    assert_error(error(path), path, line_of(path, "strategy:"), "unknown strategy 'one_at_time'",
                 "did you mean 'one_at_a_time'?", "matrix, one_at_a_time, defaults")


@pytest.mark.parametrize(
    ("body", "needle", "fragments"),
    [
        ("  nodes:\n    classify: []\n", "classify:", ('write "*" for all variants',)),
        ("  nodes: [classify]\n", "nodes:", ("'nodes' must be a mapping",)),
        ("  overrides:\n    classify.temperature: [0.1]\n", "classify.temperature",
         ("does not name a node setting", "nodes.<node>.inputs.<input>")),
        ("  overrides:\n    nodes.c.inputs.t: []\n", "nodes.c.inputs.t", ("has no values",)),
    ],
)
def test_bad_variants(case: Path, body: str, needle: str, fragments: tuple[str, ...]) -> None:
    path = write(case, TEMPLATE + "variants:\n" + body)
    assert_error(error(path), path, line_of(path, needle), *fragments)


def test_unparsable_threshold(case: Path) -> None:
    path = write(case, TEMPLATE + "thresholds:\n  accuracy: '>= 0.6'\n  f1: 'at least 0.5'\n")
    assert_error(error(path), path, line_of(path, "f1:"), "cannot parse threshold f1", 'e.g. ">= 0.6"')


def test_threshold_list(case: Path) -> None:
    spec = load_experiment(write(case, TEMPLATE + "thresholds:\n  accuracy: ['>= 0.6', '<= 1']\n"))
    assert [str(t) for t in spec.thresholds] == ["accuracy >= 0.6", "accuracy <= 1"]


# --- overlays -----------------------------------------------------------------------------------------


def test_overlay_replaces_whole_sections(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PR_KEY", "k")
    (case / "data" / "small.jsonl").write_text('{"text": "s"}\n')
    path = write(case, TEMPLATE + OURS)
    write(case, """\
        name: ner_pr
        datasets:
        - name: ner_small
          source: data/small.jsonl
        evaluators:
        connections:
        - name: aoai
          connection_type: AzureOpenAIConnection
          api_key: ${PR_KEY}
        thresholds:
          accuracy: ">= 0.9"
        """, "experiment.pr.yaml")
    spec = load_experiment(path, env="pr")
    assert spec.name == "ner_pr"
    assert [d.name for d in spec.datasets] == ["ner_small"]
    assert spec.evaluators == ()  # present but empty: cleared
    assert spec.connections[0].values == {"api_key": "k"}  # replaced whole, not merged
    assert [str(t) for t in spec.thresholds] == ["accuracy >= 0.9"]
    assert spec.variants is not None and spec.variants.strategy == "one_at_a_time"  # not in overlay: kept
    assert spec.flow == case / "flows" / "standard"
    base = load_experiment(path)  # without env the overlay is not read
    assert [d.name for d in base.datasets] == ["ner_train"] and len(base.evaluators) == 1


def test_overlay_evaluators_reference_overlay_datasets(case: Path) -> None:
    path = write(case, TEMPLATE)
    overlay = write(case, """\
        datasets:
        - name: other
          source: data/data.jsonl
        """, "experiment.dev.yaml")
    # the base's evaluators reference ner_train, which the overlay's datasets no longer have
    assert_error(error(path, "dev"), path, line_of(path, "reference: ner_train"),
                 "reference 'ner_train' is not a standard dataset", "standard datasets: other")
    write(case, "", "experiment.dev.yaml")  # an empty overlay changes nothing
    assert load_experiment(path, "dev").datasets[0].name == "ner_train"
    assert overlay.exists()


def test_overlay_errors_point_at_the_overlay(case: Path) -> None:
    path = write(case, TEMPLATE)
    overlay = write(case, "datasets:\n- name: x\n  source: data/missing.jsonl\n", "experiment.pr.yaml")
    assert_error(error(path, "pr"), overlay, 3, "source file not found")
    overlay = write(case, "datasetz: []\n", "experiment.pr.yaml")
    assert_error(error(path, "pr"), overlay, 1, "unknown key 'datasetz'", "did you mean 'datasets'?")


def test_an_environment_without_an_overlay_reads_the_base_file(case: Path) -> None:
    path = write(case, TEMPLATE)
    assert load_experiment(path, "prod") == load_experiment(path)


def test_overlay_name_follows_the_file(case: Path) -> None:
    path = write(case, TEMPLATE, "large.yaml")
    write(case, "name: big\n", "large.ci.yaml")
    assert load_experiment(path, "ci").name == "big"


# --- helpers ------------------------------------------------------------------------------------------


def test_parse_mapping() -> None:
    assert parse_mapping("${data.question}") == ("data", "question")
    assert parse_mapping("${run.outputs.answer}") == ("run", "answer")
    assert parse_mapping("${target.answer}") == ("run", "answer")
    assert parse_mapping("plain text") is None
    assert parse_mapping(3) is None
    with pytest.raises(SpecError, match="not a mapping we know"):
        parse_mapping("${data:question}")


def test_is_experiment_file(tmp_path: Path) -> None:
    for name in ("experiment.yaml", "experiment.pr.yaml", "experiment_big.yml", "experiment_big.dev.yml",
                 "experiments.yml", "orphan.yaml"):
        (tmp_path / name).write_text("")
    assert is_experiment_file(tmp_path / "experiment.yaml")
    assert is_experiment_file(tmp_path / "experiment_big.yml")
    assert is_experiment_file(tmp_path / "experiments.yml")
    assert not is_experiment_file(tmp_path / "experiment.pr.yaml")  # overlay of experiment.yaml
    assert not is_experiment_file(tmp_path / "experiment_big.dev.yml")
    (tmp_path / "experiment.yaml").unlink()
    assert is_experiment_file(tmp_path / "experiment.pr.yaml")  # its base is gone
    assert not is_experiment_file(tmp_path / "orphan.yaml")
    assert not is_experiment_file(tmp_path / "experiment.json")


def test_init_for_the_flow_and_an_evaluator(case: Path) -> None:
    text = TEMPLATE.replace("flow: flows/standard\n", "flow: flows/standard\ninit:\n  model_config:\n"
                            "    connection: aoai\n    azure_deployment: gpt-35-turbo\n  max_total_token: 2048\n")
    text = text.replace("  flow: flows/evaluation\n", "  flow: flows/evaluation\n  init:\n    threshold: 0.5\n")
    spec = load_experiment(write(case, text))
    assert spec.init == {"model_config": {"connection": "aoai", "azure_deployment": "gpt-35-turbo"},
                         "max_total_token": 2048}
    assert spec.evaluators[0].init == {"threshold": 0.5}
    assert load_experiment(write(case, TEMPLATE)).init == {}


@pytest.mark.parametrize("old, new, needle, what", [
    ("flow: flows/standard\n", "flow: flows/standard\ninit: [word]\n", "init:", "experiment: 'init'"),
    ("  flow: flows/evaluation\n", "  flow: flows/evaluation\n  init: good\n", "  init:", "evaluator 'matcher': 'init'"),
])
def test_init_must_be_a_mapping(case: Path, old: str, new: str, needle: str, what: str) -> None:
    path = write(case, TEMPLATE.replace(old, new))
    assert_error(error(path), path, line_of(path, needle), f"{what} must be a mapping", "'init:' followed by")
