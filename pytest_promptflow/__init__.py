"""pytest-promptflow: prompt-flow evaluation as a pytest suite.

Mark a test with ``@pytest.mark.promptflow(flow=..., data=..., variants=..., overrides=...)``
and take ``flow_run``; or drop an ``experiment.yaml`` next to your tests.
"""

from __future__ import annotations

from .config import DatasetSpec
from .engine import Row, Run
from .errors import SpecError
from .evaluation import Metrics, MetricValue
from .results import EvalResult, FlowRun

__all__ = ["DatasetSpec", "EvalResult", "FlowRun", "MetricValue", "Metrics", "Row", "Run", "SpecError"]
