"""experiment.yaml files collected as test items: one item per cell, thresholds as its assertions."""

from __future__ import annotations

import warnings
from typing import Any, Iterator

import pytest

from .errors import SpecError, Where, unforeseen
from .matrix import safe_id_part
from .thresholds import check, require_metric

#: the metrics of a run's LLM spend (``ledger.spend``), unknown for rows that ran elsewhere (``Run.calls_note``)
SPEND_METRICS = ("llm.", "tokens.", "cost.")


class ThresholdFailure(Exception):
    """Raised by an item whose metrics miss a threshold; its text is the failure table."""


class ExperimentFile(pytest.File):
    """An experiment.yaml (with the overlay chosen by --promptflow-env) as a collector."""

    def collect(self) -> Iterator[pytest.Item]:
        from .experiment import load_experiment
        from .session import session_of

        session = session_of(self.config)
        try:
            spec = load_experiment(self.path, self.config.getoption("promptflow_env"), session.confine_to)
            planned = session.plan(spec, self.path.parent)
        except SpecError as error:  # one failing item; the rest of the session still runs
            yield BadSpecItem.from_parent(self, name=self.path.stem, error=error)
            return
        except Exception as exc:  # never a collection error: that would stop every other item
            yield BadSpecItem.from_parent(self, name=self.path.stem, error=unforeseen(exc, self.path, "experiment"))
            return
        for evaluator in (e for e in spec.evaluators if e.refused):  # refused alone, in one line
            where = evaluator.where or Where(self.path)
            warnings.warn_explicit(evaluator.refused, pytest.PytestWarning, str(where.path), where.line or 0)
        for cell in planned:
            yield ExperimentItem.from_parent(self, name=f"{safe_id_part(spec.name)}[{cell.id}]", planned=cell)


class BadSpecItem(pytest.Item):
    """Stands for an experiment file that cannot be collected, and fails with its one-line error."""

    def __init__(self, *, error: SpecError, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def runtest(self) -> None:
        raise self.error

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        return str(excinfo.value)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.name


class ExperimentItem(pytest.Item):
    """One cell of an experiment: run it, score it with the evaluators, check the thresholds."""

    def __init__(self, *, planned: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.planned = planned
        self.run: Any = None  # what the reports read once the item ran
        self.evaluations: list[Any] = []
        self.verdicts: list[dict[str, Any]] = []
        self.parity: dict[str, Any] | None = None  # the cell's parity with its twin, when it declares one
        self.add_marker(pytest.mark.promptflow)

    def runtest(self) -> None:
        from .reporting.failure import threshold_failure
        from .results import metric_properties, metrics_of
        from .session import session_of

        session = session_of(self.config)
        run = self.run = session.run(self.planned)
        evaluations = self.evaluations = session.evaluate_experiment(self.planned, run)
        metrics = metrics_of(run, evaluations)
        self.user_properties.extend(metric_properties(metrics))
        thresholds = self.planned.spec.thresholds
        if run.latency_note:  # every row came from the store: there is no latency to check
            for threshold in (t for t in thresholds if t.metric.startswith("latency.")):
                warnings.warn(pytest.PytestWarning(f"{self.name}: {threshold} not checked: {run.latency_note}"),
                              stacklevel=1)
            thresholds = tuple(t for t in thresholds if not t.metric.startswith("latency."))
        for threshold in thresholds:
            refused = [f"{e.where}: {e.refused}" for e in self.planned.spec.evaluators
                       if e.refused and threshold.metric.startswith(f"{e.name}.")]
            unknown = run.calls_note if threshold.metric.startswith(SPEND_METRICS) else ""  # ran elsewhere
            require_metric(threshold, metrics, refused[0] if refused else unknown)
        verdicts = check(thresholds, metrics, self._comparer(session, run, evaluations))
        self.verdicts = [v.record() for v in verdicts]
        failures = [threshold_failure(self.planned.id, run, verdicts, metrics), self._parity(session, run, evaluations)]
        if any(failures):
            raise ThresholdFailure("\n".join(failure for failure in failures if failure))

    def _parity(self, session: Any, run: Any, evaluations: list[Any]) -> str:
        """The cell's parity with the experiment's ``twin:`` / ``twin_of:``; its failure, "" when it holds."""
        if self.planned.spec.twin is None:
            return ""
        from .baseline import settings_of
        from .twin import check_parity

        settings = settings_of(self.config)
        parity = check_parity(session, self.planned, run, evaluations, session.evaluate_experiment,
                              settings.twin_margin, settings.max_unpaired)
        self.parity = parity.record()
        return "" if parity.passed else parity.failure(self.planned.id)

    def _comparer(self, session: Any, run: Any, evaluations: list[Any]) -> Any:
        """What baseline thresholds compare with (the experiment's ``baseline:``); None when it declares none."""
        spec = self.planned.spec.baseline
        if spec is None:
            return None
        from .baseline import comparer, settings_of

        return comparer(spec, session, self.planned, run, evaluations, session.evaluate_experiment,
                        settings_of(self.config))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, (ThresholdFailure, SpecError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        where = self.planned.spec.where
        return self.path, (where.line - 1 if where and where.line else None), self.name
