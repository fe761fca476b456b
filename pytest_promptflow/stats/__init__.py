"""Statistics for verdicts that carry their noise: intervals, paired comparisons, power, repeats, Holm.

Pure and numpy only (plus the standard library's ``NormalDist``), so thresholds, reports, ``plan`` and the
release can all call it. Every function takes per-row values; every result is a frozen dataclass or a float.
A one-sided result (``sides=1``) holds two one-sided bounds at ``level``: ``low`` for ``>=`` checks and
``high`` for ``<=`` checks.
"""

from __future__ import annotations

from .holm import holm_adjust, holm_passes
from .intervals import (
    Interval,
    bootstrap_indices,
    bootstrap_interval,
    clustered_wilson,
    mean_interval,
    stable_seed,
    t_quantile,
    wilson,
)
from .paired import (
    PairedInterval,
    Verdict,
    mcnemar_exact,
    mcnemar_exact_from_counts,
    non_inferior,
    not_below,
    paired_counts,
    paired_difference,
    paired_difference_from_counts,
    paired_mean_difference,
    superior,
)
from .power import (
    PowerCheck,
    mean_equivalence_rows,
    mean_power_check,
    paired_equivalence_rows,
    paired_mde,
    paired_power,
    paired_power_check,
    paired_rows_needed,
    threshold_mde,
    threshold_power,
    threshold_rows_needed,
)
from .repeats import flaky_rate, flaky_rows, pass_at_k, pass_hat_k

__all__ = [
    "Interval",
    "PairedInterval",
    "PowerCheck",
    "Verdict",
    "bootstrap_indices",
    "bootstrap_interval",
    "clustered_wilson",
    "flaky_rate",
    "flaky_rows",
    "holm_adjust",
    "holm_passes",
    "mcnemar_exact",
    "mcnemar_exact_from_counts",
    "mean_interval",
    "mean_equivalence_rows",
    "mean_power_check",
    "non_inferior",
    "not_below",
    "paired_counts",
    "paired_difference",
    "paired_difference_from_counts",
    "paired_mde",
    "paired_mean_difference",
    "paired_equivalence_rows",
    "paired_power",
    "paired_power_check",
    "paired_rows_needed",
    "pass_at_k",
    "pass_hat_k",
    "stable_seed",
    "superior",
    "t_quantile",
    "threshold_mde",
    "threshold_power",
    "threshold_rows_needed",
    "wilson",
]
