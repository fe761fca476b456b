"""Packaging a flow for release: the chosen variants and overrides applied to a copy, the user's folder
untouched, run litter and secrets left out, and a content hash that changes only with the content."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ALWAYS_PY, CLASSIFY_PY, DAG_FLOW, DECORATE_PY, SMALL
from ruamel.yaml import YAML

from pytest_promptflow.errors import SpecError
from pytest_promptflow.flows import load_target
from pytest_promptflow.packaging import INIT_FILE, package_flow

CHOSEN = {"classify": "variant_1"}
HOT = {"nodes.classify.inputs.temperature": 0.7}


def write_dag_flow(folder: Path) -> Path:
    """The tests' DAG flow, with what runs and editors leave behind (and a secret) beside it."""
    files = {"flow.dag.yaml": DAG_FLOW, "classify.py": CLASSIFY_PY, "always.py": ALWAYS_PY,
             "decorate.py": DECORATE_PY, "__pycache__/classify.cpython-311.pyc": "bytecode",
             ".promptflow/flow.tools.json": "{}", ".runs/run_1/log.txt": "log", "stale.pyc": "bytecode",
             ".env": 'aoai={"api_key": "sk-secret"}\n'}
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    return write_dag_flow(tmp_path / "flows" / "clf")


def package(flow: Path, dest: Path, variants: dict = CHOSEN, overrides: dict = HOT) -> tuple[Path, str]:
    return package_flow(load_target(flow, flow.parent), variants, overrides, dest)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def test_dag_package_inlines_the_chosen_variant_and_writes_overrides_into_the_node(flow: Path, tmp_path: Path):
    folder, _ = package(flow, tmp_path / "pkg")

    dag = YAML(typ="safe").load((folder / "flow.dag.yaml").read_text(encoding="utf-8"))
    nodes = {node["name"]: node for node in dag["nodes"]}
    assert "node_variants" not in dag and not any(node.get("use_variants") for node in dag["nodes"])
    assert nodes["classify"]["source"]["path"] == "always.py"  # variant_1, chosen
    assert nodes["classify"]["inputs"] == {"text": "${inputs.text}", "temperature": 0.7}
    assert nodes["decorate"]["inputs"] == {"label": "${classify.output}"}  # its default variant, plain
    assert list(dag) == ["inputs", "outputs", "nodes"]  # the user's key order, block style
    assert ": {" not in (folder / "flow.dag.yaml").read_text(encoding="utf-8")


def test_package_leaves_out_run_litter_and_secrets_and_the_user_folder_untouched(flow: Path, tmp_path: Path):
    before = snapshot(flow)

    folder, _ = package(flow, tmp_path / "pkg")

    assert snapshot(flow) == before
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "always.py", "classify.py", "decorate.py", "flow.dag.yaml"]


def test_package_runs_like_the_cell_it_was_chosen_from(flow: Path, tmp_path: Path, _promptflow_loaded: None):
    variants, overrides = {"classify": "variant_0"}, {"nodes.decorate.inputs.upper": True}
    folder, _ = package(flow, tmp_path / "pkg", variants, overrides)

    cell = load_target(flow, flow.parent).executor(variants, overrides, {})
    released = load_target(folder, folder).executor({}, {}, {})

    rows = [{"text": row["text"]} for row in SMALL]
    assert [released(row) for row in rows] == [cell(row) for row in rows]
    assert released(rows[0]).outputs == {"category": "POSITIVE"}


def test_hash_is_the_same_for_the_same_flow_choice_and_overrides(flow: Path, tmp_path: Path):
    _, first = package(flow, tmp_path / "one")
    _, second = package(flow, tmp_path / "two")
    script = ("import sys; from pathlib import Path; from pytest_promptflow.flows import load_target; "
              "from pytest_promptflow.packaging import package_flow; f = Path(sys.argv[1]); "
              "print(package_flow(load_target(f, f.parent), {'classify': 'variant_1'}, "
              "{'nodes.classify.inputs.temperature': 0.7}, Path(sys.argv[2]))[1])")
    other_process = subprocess.run([sys.executable, "-c", script, str(flow), str(tmp_path / "three")],
                                   capture_output=True, text=True, check=True).stdout.strip()

    assert first == second == other_process
    assert len(first) == 64


def test_hash_changes_with_a_prompt_edit_an_override_and_a_variant(flow: Path, tmp_path: Path):
    _, base = package(flow, tmp_path / "base")
    _, other_override = package(flow, tmp_path / "override", overrides={"nodes.classify.inputs.temperature": 0.0})
    _, other_variant = package(flow, tmp_path / "variant", variants={"classify": "variant_0"})
    (flow / "always.py").write_text(ALWAYS_PY.replace('"positive"', '"neutral"'), encoding="utf-8")
    _, edited = package(flow, tmp_path / "edited")

    assert len({base, other_override, other_variant, edited}) == 4


def test_prompty_package_holds_the_file_and_the_files_it_names_not_its_folder(tmp_path: Path):
    flows = tmp_path / "flows"
    write_dag_flow(flows / "clf")
    (flows / "capital.prompty").write_text(
        "---\nname: Capital\nmodel:\n  api: chat\n  configuration:\n    type: azure_openai\n"
        "    connection: aoai\ninputs:\n  country:\n    type: string\nsample: ${file:samples/capital.json}\n"
        "---\nuser:\nWhat is the capital of {{country}}?\n", encoding="utf-8")
    (flows / "samples").mkdir()
    (flows / "samples" / "capital.json").write_text('{"country": "France"}', encoding="utf-8")

    folder, _ = package_flow(load_target("flows/capital.prompty", tmp_path), {}, {}, tmp_path / "pkg")

    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "capital.prompty", "samples/capital.json"]


def test_flex_package_keeps_its_init_arguments(tmp_path: Path):
    flow = tmp_path / "flows" / "flexcls"
    flow.mkdir(parents=True)
    (flow / "flow.flex.yaml").write_text("entry: clsentry:Classifier\n", encoding="utf-8")
    (flow / "clsentry.py").write_text("class Classifier:\n    pass\n", encoding="utf-8")
    target = load_target(flow, tmp_path)

    folder, with_good = package_flow(target, {}, {}, tmp_path / "good", init={"word": "good"})
    _, with_bad = package_flow(target, {}, {}, tmp_path / "bad", init={"word": "bad"})

    assert json.loads((folder / INIT_FILE).read_text(encoding="utf-8")) == {"word": "good"}
    assert with_good != with_bad


def test_a_callable_cannot_be_packaged_and_the_error_says_what_to_do(tmp_path: Path):
    def classify(text: str) -> str:
        return "positive"

    with pytest.raises(SpecError) as raised:
        package_flow(load_target(classify, tmp_path), {}, {}, tmp_path / "pkg")

    message = str(raised.value)
    assert "\n" not in message
    assert "'classify' is a Python callable and cannot be packaged" in message
    assert "flex flow" in message and "leave it out of the release" in message
    assert not (tmp_path / "pkg").exists()


@pytest.mark.parametrize(("variants", "overrides", "problem"), [
    ({"classify": "variant_9"}, {}, "node 'classify' has no variant 'variant_9'; choose one of variant_0, variant_1"),
    ({"nowhere": "variant_0"}, {}, "node 'nowhere' has no variants"),
    ({}, {"nodes.nowhere.inputs.x": 1}, "override 'nodes.nowhere.inputs.x' names unknown node 'nowhere'"),
], ids=["unknown-variant", "node-without-variants", "unknown-node"])
def test_a_choice_the_flow_does_not_have_is_refused_before_anything_is_copied(
        flow: Path, tmp_path: Path, variants: dict, overrides: dict, problem: str):
    with pytest.raises(SpecError, match=problem.replace("(", r"\(")):
        package(flow, tmp_path / "pkg", variants, overrides)
    assert not (tmp_path / "pkg").exists()


CLASSIFY_WITH_HELPER = """\
from helpers import label
from promptflow.core import tool


@tool
def classify(text: str, temperature: float = 0.0) -> str:
    return label(text)
"""
HELPERS_PY = """\
def label(text: str) -> str:
    with open("words/good.txt", encoding="utf-8") as stream:  # relative to the (merged) flow folder
        good = stream.read().split()
    return "positive" if any(word in text for word in good) else "negative"
"""


def write_flow_with_includes(root: Path) -> Path:
    """flows/inc, whose node imports a module of ../shared and reads a file of folder ../common/words."""
    flow = root / "flows" / "inc"
    dag = DAG_FLOW.replace("inputs:\n  text:", "additional_includes:\n- ../shared/helpers.py\n- ../common/words\n"
                           "inputs:\n  text:", 1)
    files = {flow / "flow.dag.yaml": dag, flow / "always.py": ALWAYS_PY, flow / "decorate.py": DECORATE_PY,
             flow / "classify.py": CLASSIFY_WITH_HELPER, root / "flows" / "shared" / "helpers.py": HELPERS_PY,
             root / "flows" / "common" / "words" / "good.txt": "good\n"}
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return flow


def test_package_holds_the_additional_includes_and_runs_without_the_original_tree(tmp_path: Path,
                                                                                 _promptflow_loaded: None):
    flow = write_flow_with_includes(tmp_path)
    cell = load_target(flow, flow.parent).executor({}, {}, {})
    folder, _ = package(flow, tmp_path / "pkg", {}, {})

    assert (folder / "helpers.py").read_text(encoding="utf-8") == HELPERS_PY  # in its top level, as pf does
    assert (folder / "words" / "good.txt").is_file()
    assert "additional_includes" not in YAML(typ="safe").load((folder / "flow.dag.yaml").read_text(encoding="utf-8"))
    for name in ("shared", "common"):
        for path in sorted((tmp_path / "flows" / name).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    released = load_target(folder, folder).executor({}, {}, {})
    rows = [{"text": row["text"]} for row in SMALL]
    assert [released(row) for row in rows] == [cell(row) for row in rows]
    assert cell(rows[0]).outputs == {"category": "positive"}


def test_a_missing_include_is_one_line_naming_the_flow_file_and_the_include(tmp_path: Path):
    flow = write_flow_with_includes(tmp_path)
    (tmp_path / "flows" / "shared" / "helpers.py").unlink()

    with pytest.raises(SpecError) as error:
        package(flow, tmp_path / "pkg", {}, {})
    assert str(error.value) == (f"{flow / 'flow.dag.yaml'}:2: flow inc: additional include '../shared/helpers.py' "
                                f"not found (looked for {tmp_path / 'flows' / 'shared' / 'helpers.py'}); fix the path: "
                                "additional_includes are relative to the flow folder")


def test_a_workflow_package_is_its_module_folder_with_a_manifest_of_factory_and_arguments(tmp_path: Path):
    from pytest_promptflow.flows import FlowTarget
    from pytest_promptflow.packaging import WORKFLOW_MANIFEST, is_workflow

    module = tmp_path / "flows/sentiment_maf/workflow.py"
    module.parent.mkdir(parents=True)
    module.write_text("def make():\n    pass\n", encoding="utf-8")
    (module.parent / "prompts.txt").write_text("Answer with one word.", encoding="utf-8")
    (module.parent / "__pycache__").mkdir()
    (module.parent / ".env").write_text("OPENAI_API_KEY=secret", encoding="utf-8")
    target = FlowTarget("sentiment_maf", "maf", module, definition={"factory": "make"})
    folder, first = package_flow(target, {}, {"temperature": 0.7}, tmp_path / "a", init={"prompt": "zero_shot"})
    assert sorted(p.name for p in folder.iterdir()) == [WORKFLOW_MANIFEST, "prompts.txt", "workflow.py"]
    assert json.loads((folder / WORKFLOW_MANIFEST).read_text()) == {
        "module": "workflow.py", "factory": "make", "args": {"prompt": "zero_shot", "temperature": 0.7}}
    assert is_workflow(folder)
    assert package_flow(target, {}, {"temperature": 0.7}, tmp_path / "b", init={"prompt": "zero_shot"})[1] == first
    assert package_flow(target, {}, {"temperature": 0.0}, tmp_path / "c", init={"prompt": "zero_shot"})[1] != first
