"""deployment_config.json as the GenAIOps template writes it: sections per target, entries per env."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_promptflow.deploy.base import DeploymentSettings
from pytest_promptflow.deploy.settings import deployment_settings
from pytest_promptflow.errors import SpecError

TEMPLATE_ENTRY = {  # the template's azure_managed_endpoint entry, values as it writes them
    "ENV_NAME": "dev", "TEST_FILE_PATH": "sample-request.json", "ENDPOINT_NAME": "", "ENDPOINT_DESC": "An endpoint",
    "DEPLOYMENT_DESC": "prompt flow deployment", "PRIOR_DEPLOYMENT_NAME": "", "PRIOR_DEPLOYMENT_TRAFFIC_ALLOCATION": "",
    "CURRENT_DEPLOYMENT_NAME": "", "CURRENT_DEPLOYMENT_TRAFFIC_ALLOCATION": "100",
    "DEPLOYMENT_VM_SIZE": "Standard_F4s_v2", "DEPLOYMENT_BASE_IMAGE_NAME": "mcr.microsoft.com/azureml/promptflow/x",
    "DEPLOYMENT_CONDA_PATH": "environment/conda.yml", "DEPLOYMENT_INSTANCE_COUNT": 1,
    "ENVIRONMENT_VARIABLES": {"example-name": "example-value"},
}


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "deployment_config.json"
    path.write_text(json.dumps(document, indent=2))
    return path


def test_the_templates_entry_reads_as_is(tmp_path: Path) -> None:
    path = write(tmp_path, {"azure_managed_endpoint": [TEMPLATE_ENTRY, {**TEMPLATE_ENTRY, "ENV_NAME": "prod",
                                                                      "DEPLOYMENT_INSTANCE_COUNT": "3"}]})
    dev = deployment_settings(path, "azureml", "dev", "sentiment")
    assert dev.instance_type == "Standard_F4s_v2" and dev.instance_count == 1 and dev.current_traffic == 100
    assert dev.prior_traffic is None and dev.test_file == "sample-request.json"
    assert dev.environment_variables == {"example-name": "example-value"}
    assert deployment_settings(path, "azureml", "prod", "sentiment").instance_count == 3


def test_the_entry_is_chosen_by_env_then_flow_and_defaults_apply_elsewhere(tmp_path: Path) -> None:
    path = write(tmp_path, {"local_endpoint": [
        {"ENV_NAME": "dev", "CURRENT_DEPLOYMENT_TRAFFIC_ALLOCATION": 30, "PRIOR_DEPLOYMENT_TRAFFIC_ALLOCATION": 70},
        {"ENV_NAME": "dev", "FLOW": "qa", "CURRENT_DEPLOYMENT_TRAFFIC_ALLOCATION": 10, "ENDPOINT_NAME": "qa-x"}]})
    assert deployment_settings(path, "local", "dev", "qa").endpoint_name == "qa-x"
    assert deployment_settings(path, "local", "dev", "sentiment").prior_traffic == 70
    assert deployment_settings(path, "local", "prod", "sentiment") == DeploymentSettings()
    assert deployment_settings(path, "kubernetes", "dev", "sentiment") == DeploymentSettings()
    assert deployment_settings(tmp_path / "absent.json", "local", "dev", "qa") == DeploymentSettings()


def test_a_twin_is_named_per_flow_for_the_cut_over(tmp_path: Path) -> None:
    twin = "maf:flows/sentiment_maf/workflow.py:create_workflow"
    path = write(tmp_path, {"local_endpoint": [{"ENV_NAME": "dev", "FLOW": "sentiment", "TWIN": f" {twin} "},
                                               {"ENV_NAME": "dev"}]})
    assert deployment_settings(path, "local", "dev", "sentiment").twin == twin
    assert deployment_settings(path, "local", "dev", "qa").twin == ""


def test_a_single_entry_applies_when_no_env_is_given(tmp_path: Path) -> None:
    path = write(tmp_path, {"local_endpoint": [{"ENV_NAME": "dev", "CURRENT_DEPLOYMENT_TRAFFIC_ALLOCATION": "30"}]})
    assert deployment_settings(path, "local", "", "sentiment").current_traffic == 30


@pytest.mark.parametrize(("document", "message"), [
    ('{"local_endpoint": [{"ENV_NAME": "dev",}]}', "deployment_config.json:1: not valid JSON"),
    ({"local_endpoint": {"ENV_NAME": "dev"}}, "local_endpoint is not a list of objects"),
    ({"local_endpoint": [{"ENV_NAME": "dev", "CURRENT_TRAFFIC": 5}]}, "unknown key 'CURRENT_TRAFFIC'"),
    ({"local_endpoint": [{"ENV_NAME": "dev", "DEPLOYMENT_INSTANCE_COUNT": "two"}]}, "is 'two', not a whole number"),
    ({"local_endpoint": [{"ENV_NAME": "dev", "CURRENT_DEPLOYMENT_TRAFFIC_ALLOCATION": 80,
                          "PRIOR_DEPLOYMENT_TRAFFIC_ALLOCATION": 30}]}, "are not percentages summing to at most 100"),
    ({"local_endpoint": [{"ENV_NAME": "dev", "ENVIRONMENT_VARIABLES": ["A=1"]}]}, "ENVIRONMENT_VARIABLES is not"),
])
def test_bad_entries_are_one_line_naming_the_file(tmp_path: Path, document: object, message: str) -> None:
    path = tmp_path / "deployment_config.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(SpecError, match=message) as error:
        deployment_settings(path, "local", "dev", "sentiment")
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)
