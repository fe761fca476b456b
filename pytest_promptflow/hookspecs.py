"""Hooks for a conftest or a plugin to replace or extend what a release does.

Each is called on the xdist controller (or the only process), once per flow or per release.
Implement them in a ``conftest.py`` as plain functions with these names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import pytest

if TYPE_CHECKING:
    from .registry.base import Registry



class ReleaseHooks:
    @pytest.hookspec(firstresult=True)
    def pytest_promptflow_release_choice(self, config: pytest.Config, flow: Mapping[str, Any]) -> str | None:
        """The configuration of ``flow`` to release (a ``cell["config"]`` label, e.g.
        ``"classify=variant_1-temperature=0.7"``), or None for the default choice: the pinned one
        (ini ``promptflow_release_pins``), else the best one (``flow["best"]``).

        ``flow`` is the report document's entry: ``flow["cells"]`` with their metrics, verdicts and
        outcomes. Example, releasing the cheapest passing configuration::

            def pytest_promptflow_release_choice(config, flow):
                passing = [c for c in flow["cells"] if c["outcome"] == "passed"]
                return min(passing, key=lambda c: c["metrics"]["cost.total"])["config"] if passing else None
        """

    @pytest.hookspec(firstresult=True)
    def pytest_promptflow_registry(self, config: pytest.Config) -> Registry | None:
        """The registry the release writes to, instead of the configured one (MLflow or Azure ML).
        Any object with the methods of ``pytest_promptflow.registry.base.Registry`` will do::

            def pytest_promptflow_registry(config):
                return MyArtifactoryRegistry(url=os.environ["ARTIFACTORY_URL"])
        """

    def pytest_promptflow_release_record(self, config: pytest.Config, record: dict[str, Any]) -> None:
        """Amend a flow's release record before it is written (to the report folder and the registry)::

            def pytest_promptflow_release_record(config, record):
                record["ticket"] = os.environ.get("CHANGE_TICKET", "")
        """
