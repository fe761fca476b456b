"""Hooks for a conftest or a plugin to replace or extend what a release does.

Each is called on the xdist controller (or the only process), once per flow or per release, also by
``pytest-promptflow release report.json``, which loads the project's root ``conftest.py`` for them; there
``config`` is ``project_config.ProjectConfig`` (``rootpath``, ``getini``, ``getoption``, as pytest's).
Implement them in a ``conftest.py`` as plain functions with these names. They receive typed, read-only
objects (``reporting/views.py``); ``flow["cells"]``-style access still works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import pytest

if TYPE_CHECKING:
    from .deploy.answers import Answer
    from .deploy.base import Target
    from .deploy.rollout import Rollout
    from .registry.base import Registry
    from .reporting.views import FlowView, ReleaseRecord


class ReleaseHooks:
    @pytest.hookspec(firstresult=True)
    def pytest_promptflow_release_choice(self, config: pytest.Config, flow: FlowView) -> str | None:
        """The configuration of ``flow`` to release (a ``cell.config`` label, e.g.
        ``"classify=variant_1-temperature=0.7"``), or None for the default choice: the pinned one
        (ini ``promptflow_release_pins``), else the best one (``flow.best``).

        ``flow`` is the report's flow: ``flow.cells`` with their metrics, verdicts and outcomes.
        Example, releasing the cheapest passing configuration::

            def pytest_promptflow_release_choice(config, flow):
                passing = [c for c in flow.cells if c.outcome == "passed"]
                return min(passing, key=lambda c: c.metrics["cost.total"]).config if passing else None
        """

    @pytest.hookspec(firstresult=True)
    def pytest_promptflow_registry(self, config: pytest.Config) -> Registry | None:
        """The registry the release writes to, instead of the configured one (MLflow or Azure ML).
        Any object with the methods of ``pytest_promptflow.registry.base.Registry`` will do::

            def pytest_promptflow_registry(config):
                return MyArtifactoryRegistry(url=os.environ["ARTIFACTORY_URL"])
        """

    def pytest_promptflow_release_record(self, config: pytest.Config,
                                         record: ReleaseRecord) -> Mapping[str, Any] | None:
        """Fields to add to a flow's release record before it is written (to the report folder and the
        registry); fields the release wrote stay as they are::

            def pytest_promptflow_release_record(config, record):
                if record.decision == "released":
                    return {"ticket": os.environ.get("CHANGE_TICKET", "")}
        """

    @pytest.hookspec(firstresult=True)
    def pytest_promptflow_deploy_target(self, config: pytest.Config, name: str) -> Target | None:
        """The deployment target called ``name`` (``--promptflow-target NAME``, ini ``promptflow_target``),
        instead of a built-in one, or a new one. Any object with the methods of
        ``pytest_promptflow.deploy.base.Target`` will do; ``live`` targets get the endpoint test::

            def pytest_promptflow_deploy_target(config, name):
                if name == "appservice":
                    return AppServiceTarget(os.environ["APP_SERVICE_PLAN"])
        """

    def pytest_promptflow_endpoint_test(self, config: pytest.Config, rollout: Rollout,
                                        answers: dict[str, list[Answer]]) -> list[str] | None:
        """More checks on a new deployment before it gets traffic: return one line per failure (any
        line fails it: it is removed and the split stays as it was). ``answers`` are its answers to
        the released cells' rows by dataset (inputs, outputs or error, latency); ``rollout.target``
        can send more::

            def pytest_promptflow_endpoint_test(config, rollout, answers):
                hello = rollout.target.invoke(rollout.endpoint, rollout.deployment, {"text": "hello"})
                return [] if hello.get("category") else [f"no category for 'hello': {hello}"]
        """
