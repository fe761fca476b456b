"""The CI/CD pipelines: valid against their schemas, running only what exists, staged as the life cycle says.

azure-pipelines.yml and .github/workflows/promptflow.yml run make targets; the targets' pytest
command lines are expanded with ``make -n`` and checked against this project's ``pytest --help``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from ruamel.yaml import YAML

from pytest_promptflow import cli
from pytest_promptflow.deploy.settings import env_names
from pytest_promptflow.experiment import is_experiment_file, load_experiment, overlay_envs
from pytest_promptflow.registry.azureml import WORKSPACE_VARIABLES

ROOT = Path(__file__).resolve().parents[1]
AZURE = ROOT / "azure-pipelines.yml"
GITHUB = ROOT / ".github" / "workflows" / "promptflow.yml"
SCHEMA_ARGS = {
    # check-jsonschema's own pre-commit settings for Azure Pipelines
    AZURE: ["--builtin-schema", "vendor.azure-pipelines", "--data-transform", "azure-pipelines",
            "--regex-variant", "nonunicode"],
    GITHUB: ["--builtin-schema", "vendor.github-workflows"],
}
DEAD_PROXY = "http://127.0.0.1:9"  # a schema fetched from the network would fail, not pass
#: Where each environment is released from, in both pipelines.
RELEASES = {"dev": "development", "prod": "main"}
OPERATORS = {"&&", "||", ";", "|", "&"}


def load(path: Path) -> Any:
    return YAML(typ="safe").load(path)


def commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a shell script, line by line (continuations joined, comments dropped)."""
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token not in OPERATORS:
                command.append(token)
            elif command:
                yield command
                command = []


def step_commands(step: dict[str, Any]) -> list[list[str]]:
    """What one step runs: ``script``/``bash``/``run``, or an Azure task's inline script."""
    inputs = step.get("inputs") or {}
    scripts = [step.get(key) for key in ("script", "bash", "run")] + [inputs.get("inlineScript")]
    found = [command for script in scripts if script for command in commands(script)]
    found += [[inputs[key]] for key in ("scriptPath", "filePath") if key in inputs]
    return found


def azure_steps(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for stage in doc["stages"]:
        for job in stage["jobs"]:
            yield from job.get("steps", [])


def github_steps(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for job in doc["jobs"].values():
        yield from job["steps"]


def pipeline_commands() -> list[list[str]]:
    steps = [*azure_steps(load(AZURE)), *github_steps(load(GITHUB))]
    return [command for step in steps for command in step_commands(step)]


def make_call(command: list[str]) -> tuple[list[str], dict[str, str]]:
    """``make T1 T2 VAR=value`` -> (targets, variables)."""
    assert command[0] == "make", command
    variables = dict(arg.split("=", 1) for arg in command[1:] if "=" in arg)
    return [arg for arg in command[1:] if "=" not in arg and not arg.startswith("-")], variables


def make_calls(steps: list[dict[str, Any]]) -> list[tuple[list[str], dict[str, str]]]:
    return [make_call(command) for step in steps for command in step_commands(step) if command[0] == "make"]


def is_pytest(command: list[str]) -> bool:
    program = Path(command[0]).name
    return program == "pytest" or (program.startswith("python") and command[1:3] == ["-m", "pytest"])


def is_cli(command: list[str]) -> bool:
    return Path(command[0]).name == "pytest-promptflow"


def cli_problems(command: list[str]) -> list[str]:
    """Why ``pytest-promptflow ARGS`` would be refused by its parser ([] when it parses)."""
    try:
        cli._parser().parse_args(command[1:])
    except SystemExit:
        return [f"{shlex.join(command)}: pytest-promptflow refuses these arguments"]
    return []


def pytest_args(command: list[str]) -> list[str]:
    return command[1:] if Path(command[0]).name == "pytest" else command[3:]


def run(*args: str | Path, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(arg) for arg in args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def make_rules(makefile: Path) -> set[str]:
    """The targets that have a rule (``target: prerequisites``) in ``makefile``."""
    rules = re.findall(r"^([^\s:#=][^:=]*):(?!=)", makefile.read_text(), re.MULTILINE)
    return {target for targets in rules for target in targets.split()}


def dry_run(args: list[str], cwd: Path = ROOT, *make_options: str) -> subprocess.CompletedProcess[str]:
    """``make -n ARGS``: what ``make ARGS`` would run, without running it."""
    return run("make", "-n", *make_options, *args, cwd=cwd)


def expanded_pytest(args: list[str], cwd: Path = ROOT, *make_options: str) -> list[list[str]]:
    """The pytest command lines ``make ARGS`` would run; make's error fails the test."""
    result = dry_run(args, cwd, *make_options)
    assert result.returncode == 0, f"make {' '.join(args)}: {result.stderr.strip()}"
    return [command for command in commands(result.stdout) if is_pytest(command)]


def parse_help(text: str) -> dict[str, bool]:
    """``pytest --help`` -> {option: whether it takes a value}, from the option lines' first column."""
    options = {}
    for line in text.splitlines():
        match = re.match(r"  (-\S.*?)(?:\s{2,}|$)", line)
        for part in match.group(1).split(", ") if match else ():
            name = re.match(r"--?[\w-]+", part)
            if name:
                options[name.group()] = part != name.group()
    return options


@dataclass(frozen=True)
class Project:
    """What exists in this project for a pipeline to run: make targets, pytest options, CLI subcommands."""

    root: Path
    pytest_options: dict[str, bool]
    subcommands: frozenset[str]

    def problems(self, command: list[str]) -> list[str]:
        """Why ``command`` cannot run here ([] when it can)."""
        program, *args = command
        if program == "make":
            targets, _ = make_call(command)
            missing = set(targets) - make_rules(self.root / "Makefile")
            if missing:  # a .PHONY name without a rule would run nothing, successfully
                return [f"{shlex.join(command)}: no rule for {', '.join(sorted(missing))} in the Makefile"]
            result = dry_run(args, self.root)
            if result.returncode:
                return [f"{shlex.join(command)}: {result.stderr.strip()}"]
            lines = list(commands(result.stdout))
            return [*(problem for line in lines if is_pytest(line) for problem in self.pytest_problems(line)),
                    *(problem for line in lines if is_cli(line) for problem in cli_problems(line))]
        if is_pytest(command):
            return self.pytest_problems(command)
        if program == "pytest-promptflow":
            if args and args[0] in self.subcommands:
                return []
            return [f"{shlex.join(command)}: subcommands are {', '.join(sorted(self.subcommands))}"]
        script = args[0] if program in ("bash", "sh", "python", "python3") and args else program
        if "/" in script or script.endswith((".sh", ".py")):
            return [] if (self.root / script).is_file() else [f"{shlex.join(command)}: no file {script}"]
        return [f"{shlex.join(command)}: a pipeline step runs a make target, pytest or pytest-promptflow"]

    def pytest_problems(self, command: list[str]) -> list[str]:
        problems, args = [], iter(pytest_args(command))
        for arg in args:
            if arg.startswith("-"):
                name = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
                if name not in self.pytest_options:
                    problems.append(f"{shlex.join(command)}: pytest --help has no {name}")
                elif self.pytest_options[name] and arg == name:
                    next(args, None)
            elif not (self.root / arg).exists():
                problems.append(f"{shlex.join(command)}: no file or folder {arg}")
        return problems


@pytest.fixture(scope="module")
def project() -> Project:
    help_text = run(sys.executable, "-m", "pytest", "--help")
    cli = run(sys.executable, "-m", "pytest_promptflow.cli", "--help")
    assert help_text.returncode == 0 and cli.returncode == 0, help_text.stderr + cli.stderr
    subcommands = re.search(r"\{([\w,-]+)\}", cli.stdout)
    assert subcommands, cli.stdout
    return Project(ROOT, parse_help(help_text.stdout), frozenset(subcommands.group(1).split(",")))


@pytest.fixture(scope="module")
def pytest_lines() -> list[list[str]]:
    """Every pytest command line the pipelines run, through their make targets."""
    return [line for command in pipeline_commands() if command[0] == "make" for line in expanded_pytest(command[1:])]


# --- (a) valid files ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [AZURE, GITHUB], ids=["azure-pipelines", "github-workflow"])
def test_valid_against_the_schema(path: Path) -> None:
    if importlib.util.find_spec("check_jsonschema") is None:
        pytest.fail("needs check-jsonschema: pip install check-jsonschema")
    result = run(sys.executable, "-m", "check_jsonschema", *SCHEMA_ARGS[path], path,
                 HTTP_PROXY=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY, NO_PROXY="")
    assert result.returncode == 0, result.stdout + result.stderr


# --- (b) every command exists ---------------------------------------------------------------------


def test_every_step_runs_what_exists(project: Project) -> None:
    assert [problem for command in pipeline_commands() for problem in project.problems(command)] == []


def test_pytest_accepts_every_option_value(pytest_lines: list[list[str]]) -> None:
    """``pytest --help ARGS`` parses ARGS: a value its type or choices refuse (``--promptflow-llm=bogus``) fails."""
    args = [arg for line in pytest_lines for arg in pytest_args(line)]
    result = run(sys.executable, "-m", "pytest", "--help", *args)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("command", "problem"), [
    ("make ci-evalz", "no rule for ci-evalz"),
    ("make ci-evals", ""),
    (".venv/bin/python -m pytest evals/ --promptflow-nope=1", "pytest --help has no --promptflow-nope"),
    ("pytest missing_folder/", "no file or folder missing_folder/"),
    ("pytest-promptflow releases", ""),
    ("pytest-promptflow deploy", "subcommands are"),
    ("bash .ci/run", ""),
    ("scripts/deploy.sh", "no file scripts/deploy.sh"),
    ("az ml online-endpoint create", "runs a make target, pytest or pytest-promptflow"),
])
def test_a_broken_command_is_found(project: Project, command: str, problem: str) -> None:
    problems = project.problems(shlex.split(command))
    if problem:
        assert any(problem in found for found in problems), problems
    else:
        assert problems == []


@pytest.mark.parametrize(("store", "mode"), [(None, "cache"), ("untracked", "cache"), ("committed", "replay")])
def test_ci_evals_replays_a_committed_store(tmp_path: Path, store: str | None, mode: str) -> None:
    (tmp_path / "pyproject.toml").touch()
    run("git", "init", "-q", cwd=tmp_path)
    if store:
        answer = tmp_path / ".promptflow-llm" / "ab" / "abcdef.json"
        answer.parent.mkdir(parents=True)
        answer.write_text("{}")
        if store == "committed":
            run("git", "add", ".promptflow-llm", cwd=tmp_path)
    [line] = expanded_pytest(["ci-evals"], tmp_path, "-f", str(ROOT / "Makefile"))
    assert f"--promptflow-llm={mode}" in line


def release_variables() -> list[dict[str, str]]:
    """The variables of every ``make release`` the pipelines run."""
    calls = [make_call(command) for command in pipeline_commands() if command[0] == "make"]
    return [variables for targets, variables in calls if "release-report" in targets]


def test_every_release_target_exists() -> None:
    """Checked when a release starts, not by pytest's parser: ``TARGET`` must name a deployment target."""
    from pytest_promptflow.deploy.stage import TARGETS

    assert {variables["TARGET"] for variables in release_variables()} <= set(TARGETS)


def test_every_release_environment_has_its_overlays() -> None:
    """``--promptflow-env ENV`` needs ``experiment.<ENV>.yaml`` beside every experiment file of evals/."""
    envs = {variables["ENV"] for variables in release_variables()}
    assert envs == set(RELEASES)
    experiments = [path for path in sorted((ROOT / "evals").rglob("experiment*.y*ml")) if is_experiment_file(path)]
    for env in sorted(envs):
        for path in experiments:
            load_experiment(path, env=env)


def test_every_release_environment_is_known_to_an_overlay_or_a_deployment_entry() -> None:
    """Else ``--promptflow-env ENV`` is a usage error: a typo must not deploy with default settings."""
    experiments = [path for path in (ROOT / "evals").rglob("experiment*.y*ml") if is_experiment_file(path)]
    known = set().union(*map(overlay_envs, experiments)) | env_names(ROOT / "deployment_config.json")
    assert set(RELEASES) <= known


# --- (c) the stages -------------------------------------------------------------------------------

AZURE_BRANCH = re.compile(r"eq\(variables\['Build\.SourceBranch'\], 'refs/heads/([^']+)'\)")


def azure_branch(stage: dict[str, Any]) -> str | None:
    """The branch a stage's condition restricts it to (None: it runs on pull requests too)."""
    match = AZURE_BRANCH.search(stage.get("condition", ""))
    return match.group(1) if match else None


def test_azure_pull_requests_only_evaluate() -> None:
    doc = load(AZURE)
    assert set(doc["pr"]["branches"]["include"]) >= {"main", "development"}
    on_pull_requests = [stage for stage in doc["stages"] if azure_branch(stage) is None]
    assert [stage["stage"] for stage in on_pull_requests] == ["evaluate"]
    jobs = {job["job"]: job for job in on_pull_requests[0]["jobs"]}
    assert list(jobs) == ["evaluate", "merge"]
    evaluate, merge = jobs["evaluate"], jobs["merge"]
    assert azure_shards(doc) == ["1/2", "2/2"]
    assert make_calls(evaluate["steps"]) == [(["ci-evals"], {})]
    published = {step["task"]: step for step in evaluate["steps"] if "task" in step}
    assert published["PublishTestResults@2"]["inputs"]["testResultsFiles"] == "reports/junit.xml"
    assert published["PublishPipelineArtifact@1"]["inputs"]["targetPath"] == "reports"
    assert published["PublishPipelineArtifact@1"]["inputs"]["artifact"].startswith("promptflow-shard-")
    assert {published[task].get("condition") for task in ("PublishTestResults@2", "PublishPipelineArtifact@1")} == {
        "always()"}
    assert merge["dependsOn"] == "evaluate" and merge["condition"] == "succeededOrFailed()"
    tasks = {step["task"]: step["inputs"] for step in merge["steps"] if "task" in step}
    assert tasks["DownloadPipelineArtifact@2"]["itemPattern"] == "promptflow-shard-*/**"
    assert tasks["DownloadPipelineArtifact@2"]["targetPath"] == "shards"
    assert make_calls(merge["steps"]) == [(["merge"], {})]
    assert tasks["PublishPipelineArtifact@1"] == {"targetPath": "reports/promptflow", "artifact": "promptflow-report"}
    for stage in doc["stages"]:
        if stage not in on_pull_requests:
            assert "ne(variables['Build.Reason'], 'PullRequest')" in stage["condition"]


def azure_shards(doc: dict[str, Any]) -> list[str]:
    """The SHARD values of the evaluate job's matrix."""
    job = doc["stages"][0]["jobs"][0]
    return sorted(leg["SHARD"] for leg in job["strategy"]["matrix"].values())


def github_shards(doc: dict[str, Any]) -> list[str]:
    job = doc["jobs"]["evaluate"]
    assert job["env"]["SHARD"] == "${{ matrix.shard }}"
    return sorted(job["strategy"]["matrix"]["shard"])


@pytest.mark.parametrize("path", [AZURE, GITHUB], ids=["azure-pipelines", "github-workflow"])
def test_the_shards_run_every_cell_once_and_the_release_reads_their_merge(path: Path) -> None:
    """Each leg of the matrix runs ``make ci-evals`` as shard I/N of one N, together every I; ``make merge`` writes
    the report ``make release-report`` releases."""
    from pytest_promptflow.shard import parse_shard

    values = azure_shards(load(path)) if path == AZURE else github_shards(load(path))
    shards = []
    for value in values:
        [line] = expanded_pytest(["ci-evals", f"SHARD={value}"])
        shards.append(parse_shard(pytest_args(line)[pytest_args(line).index("--promptflow-shard") + 1]))
    assert sorted(shards) == [(number, len(values)) for number in range(1, len(values) + 1)]
    merge = [line for line in commands(dry_run(["merge"]).stdout) if is_cli(line)]
    release = [line for line in commands(dry_run(["release-report", "ENV=dev"]).stdout) if is_cli(line)]
    merged = cli._parser().parse_args(merge[0][1:])
    released = cli._parser().parse_args(release[0][1:])
    assert merged.command == "merge" and merged.dirs == ["shards/*/promptflow"]
    assert released.command == "release" and released.report == merged.out / "report.json"
    assert released.promptflow_env == "dev"


@pytest.mark.parametrize(("env", "branch"), RELEASES.items())
def test_azure_release_waits_for_approval(env: str, branch: str) -> None:
    doc = load(AZURE)
    assert branch in doc["trigger"]["branches"]["include"]
    [stage] = [stage for stage in doc["stages"] if azure_branch(stage) == branch]
    assert stage["condition"].startswith("and(succeeded(),") and stage["dependsOn"] == "evaluate"
    assert any("group" in variable for variable in stage["variables"])
    jobs = {job["job"]: job for job in stage["jobs"]}
    [approve] = [job for job in jobs.values() if job.get("pool") == "server"]
    [validation] = approve["steps"]
    assert validation["task"] == "ManualValidation@0"
    assert re.fullmatch(r"\$\(\w+\)", validation["inputs"]["notifyUsers"])
    merge = next(job for job in doc["stages"][0]["jobs"] if job["job"] == "merge")
    artifact = next(step["inputs"]["artifact"] for step in merge["steps"]
                    if step.get("task") == "PublishPipelineArtifact@1")
    assert artifact in validation["inputs"]["instructions"]
    [release] = [job for job in jobs.values() if make_calls(job.get("steps", []))]
    assert release["dependsOn"] == approve["job"]
    assert make_calls(release["steps"]) == [(["release-report"], {"ENV": env, "TARGET": "azureml",
                                                                  "REGISTRY": "azureml"})]
    download = next(step["inputs"] for step in release["steps"] if step.get("task") == "DownloadPipelineArtifact@2")
    assert download == {"buildType": "current", "artifactName": artifact, "targetPath": "reports/promptflow"}
    [azure_cli] = [step for step in release["steps"] if step.get("task") == "AzureCLI@2"]
    assert azure_cli["inputs"]["azureSubscription"].startswith("$(")
    assert azure_cli["env"] == {name: f"$({name})" for name in WORKSPACE_VARIABLES}


def test_github_pull_requests_only_evaluate() -> None:
    doc = load(GITHUB)
    assert set(doc["on"]["pull_request"]["branches"]) >= {"main", "development"}
    assert doc["permissions"] == {"contents": "read"}
    assert all("permissions" not in job for job in doc["jobs"].values())
    on_pull_requests = {name: job for name, job in doc["jobs"].items() if "github.ref" not in job.get("if", "")}
    assert list(on_pull_requests) == ["evaluate", "merge"]
    assert github_shards(doc) == ["1/2", "2/2"] and doc["jobs"]["evaluate"]["strategy"]["fail-fast"] is False
    steps = on_pull_requests["evaluate"]["steps"]
    assert make_calls(steps) == [(["ci-evals"], {})]
    [upload] = [step for step in steps if step.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["if"] == "always()" and upload["with"]["path"] == "reports/"
    assert upload["with"]["name"].startswith("promptflow-shard-")
    merge = on_pull_requests["merge"]
    assert merge["needs"] == "evaluate" and merge["if"] == "always()"
    [download] = [step for step in merge["steps"] if step.get("uses", "").startswith("actions/download-artifact@")]
    assert download["with"] == {"pattern": "promptflow-shard-*", "path": "shards/"}
    assert make_calls(merge["steps"]) == [(["merge"], {})]
    [upload] = [step for step in merge["steps"] if step.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["with"] == {"name": "promptflow-report", "path": "reports/"}


@pytest.mark.parametrize(("env", "branch"), RELEASES.items())
def test_github_release_waits_for_its_environment(env: str, branch: str) -> None:
    doc = load(GITHUB)
    assert branch in doc["on"]["push"]["branches"]
    [job] = [job for job in doc["jobs"].values() if f"github.ref == 'refs/heads/{branch}'" in job.get("if", "")]
    assert "github.event_name == 'push'" in job["if"]
    assert job["needs"] == ["evaluate", "merge"] and job["environment"] == env
    assert make_calls(job["steps"]) == [(["release-report"], {"ENV": env, "TARGET": "azureml",
                                                              "REGISTRY": "azureml"})]
    [download] = [step for step in job["steps"] if step.get("uses", "").startswith("actions/download-artifact@")]
    assert download["with"] == {"name": "promptflow-report", "path": "reports/"}
    assert set(WORKSPACE_VARIABLES) <= set(job["env"])
    assert all(re.fullmatch(r"\$\{\{ (secrets|vars)\.\w+ \}\}", value) for value in job["env"].values())
