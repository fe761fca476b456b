from typing import List

from promptflow.core import log_metric, tool


@tool
def log_metrics(matches: List[dict]) -> dict:
    metrics = {
        "exact_match_rate": sum(m["exact_match"] for m in matches) / len(matches),
        "partial_match_rate": sum(m["partial_match"] for m in matches) / len(matches),
        "error_rate": sum(m["unscored"] for m in matches) / len(matches),
    }
    for key, value in metrics.items():
        log_metric(key=key, value=value)
    return metrics
