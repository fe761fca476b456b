"""stats.py: exact values, and seeded simulations whose tolerance is their own binomial error (they never flake)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_promptflow import stats
from pytest_promptflow.stats import paired

ALPHA = 0.05


def _allowed(rate: float, suites: int) -> float:
    """A simulated rate whose truth is at most ``rate`` stays under this (three binomial standard errors)."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / suites)


def _binomial_pmf(n: int, p: float) -> np.ndarray:
    log_fact = np.array([math.lgamma(k + 1) for k in range(n + 1)])
    k = np.arange(n + 1)
    return np.exp(log_fact[n] - log_fact[k] - log_fact[n - k] + k * math.log(p) + (n - k) * math.log1p(-p))


def _pass_rate_at_threshold(lower_bound, n: int, threshold: float) -> float:
    """Exact chance that ``>= threshold at 95%`` passes when the truth is the threshold (all n+1 outcomes)."""
    passes = np.array([lower_bound(x, n) >= threshold for x in range(n + 1)])
    return float(_binomial_pmf(n, threshold)[passes].sum())


def _wald_low(x: int, n: int) -> float:
    p = x / n
    return p - 1.6448536269514722 * math.sqrt(p * (1 - p) / n)


THRESHOLDS = [t / 200 for t in range(100, 200)]  # 0.5 .. 0.995


# -- one proportion ---------------------------------------------------------------------------------------------


def test_wilson_known_values():
    plain = stats.wilson(8, 10, continuity=False)
    assert (round(plain.low, 4), round(plain.high, 4), plain.estimate) == (0.4902, 0.9433, 0.8)
    corrected = stats.wilson(8, 10)
    assert corrected.low < plain.low and corrected.high > plain.high
    one_sided = stats.wilson(8, 10, sides=1, continuity=False)
    assert plain.low < one_sided.low and one_sided.high < plain.high
    assert stats.wilson(0, 20).low == 0 and stats.wilson(20, 20).high == 1 and stats.wilson(20, 20).low < 1


@pytest.mark.parametrize("n", [20, 40, 400])
def test_wilson_gate_at_the_threshold_passes_at_most_5_percent(n):
    """Exact over every outcome, for each threshold 0.5-0.995: a truth at the threshold passes <= 5%."""
    worst = max(_pass_rate_at_threshold(lambda x, n: stats.wilson(x, n, 0.95, sides=1).low, n, t) for t in THRESHOLDS)
    assert worst <= ALPHA


def test_wald_and_plain_wilson_let_through_more_than_5_percent_at_20_rows():
    """Why the gate is continuity-corrected Wilson: the others pass a truth at 0.8 in 7% of suites of 20 rows."""
    assert _pass_rate_at_threshold(_wald_low, 20, 0.8) > 0.065
    assert _pass_rate_at_threshold(lambda x, n: stats.wilson(x, n, 0.95, 1, continuity=False).low, 20, 0.8) > 0.065


def test_wilson_gate_simulated_suites_agree():
    """The same property by simulation, as the suite would see it: 40 rows, truth 0.8, 200000 suites."""
    rows = np.random.default_rng(12).random((200_000, 40)) < 0.8
    lows = np.array([stats.wilson(x, 40, 0.95, sides=1).low for x in range(41)])
    assert (lows[rows.sum(axis=1)] >= 0.8).mean() <= _allowed(ALPHA, 200_000)


def test_bad_level_and_counts_are_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        stats.wilson(3, 10, level=1.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        stats.mean_interval([0.2, 0.4], level=95)
    with pytest.raises(ValueError, match="t, percentile or bca"):
        stats.mean_interval([0.2, 0.4], method="bootstrap")
    with pytest.raises(ValueError, match="same non-empty rows"):
        stats.paired_difference([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="successes"):
        stats.wilson(11, 10)


# -- continuous metrics -----------------------------------------------------------------------------------------


def test_t_interval_known_values():
    interval = stats.mean_interval(range(1, 11))
    assert (round(interval.low, 3), round(interval.high, 3), interval.n) == (3.334, 7.666, 10)
    assert round(stats.t_quantile(0.975, 9), 6) == 2.262157
    assert round(stats.t_quantile(0.05, 1000), 5) == -1.64638
    assert round(stats.t_quantile(0.995, 1), 3) == 63.657
    single = stats.mean_interval([0.9, 0.9, 0.9], clusters=["a", "a", "a"], method="bca")
    assert (single.low, single.high) == (-math.inf, math.inf)


@pytest.mark.parametrize("method", ["t", "percentile", "bca"])
def test_repeated_rows_clustered_count_once(method):
    """A dataset whose rows each appear three times is as uncertain as the rows once, when clustered by row."""
    values = np.random.default_rng(3).beta(2, 5, 30)
    once = stats.mean_interval(values, seed="cell-a", method=method)
    tripled = np.repeat(values, 3)
    clustered = stats.mean_interval(tripled, seed="cell-a", clusters=np.repeat(np.arange(30), 3), method=method)
    naive = stats.mean_interval(tripled, seed="cell-a", method=method)
    assert clustered.low == pytest.approx(once.low) and clustered.high == pytest.approx(once.high)
    assert naive.high - naive.low < 0.7 * (once.high - once.low)


def test_bootstrap_is_reproducible_from_the_cell_id():
    values = np.random.default_rng(4).exponential(size=50)
    first = stats.mean_interval(values, seed="sentiment[gpt-4o-mini]", method="bca")
    assert first == stats.mean_interval(values, seed="sentiment[gpt-4o-mini]", method="bca")
    assert first != stats.mean_interval(values, seed="sentiment[other]", method="bca")
    assert stats.stable_seed("sentiment[gpt-4o-mini]") == 12566495033744011331  # pinned: a new hash would move verdicts


def test_bca_matches_the_t_interval_on_symmetric_rows():
    values = np.random.default_rng(5).normal(0.6, 0.1, 400)
    bca, t = stats.mean_interval(values, seed=1, method="bca"), stats.mean_interval(values)
    assert bca.low == pytest.approx(t.low, abs=0.002) and bca.high == pytest.approx(t.high, abs=0.002)


def test_bca_agrees_with_scipy_on_skewed_rows():
    """An independent BCa (scipy, when installed) on exponential rows, within resampling error."""
    scipy_stats = pytest.importorskip("scipy.stats")
    values = np.random.default_rng(15).exponential(size=30)
    ours = stats.mean_interval(values, seed=1, method="bca", resamples=40_000)
    theirs = scipy_stats.bootstrap((values,), np.mean, method="BCa", n_resamples=40_000, random_state=1)
    assert ours.low == pytest.approx(theirs.confidence_interval.low, abs=0.01)
    assert ours.high == pytest.approx(theirs.confidence_interval.high, abs=0.01)


@pytest.mark.parametrize("rows", [20, 40])
def test_identical_continuous_variants_alarm_at_most_5_percent(rows):
    """Judge-like scores in [0, 1], each row with its own level and run-to-run noise, compared with itself."""
    suites, rng = 10_000, np.random.default_rng(rows)
    level = rng.beta(2, 2, rows)
    runs = [np.clip(level + rng.normal(0, 0.15, (suites, rows)), 0, 1) for _ in range(2)]
    intervals = [stats.paired_mean_difference(a, b) for a, b in zip(*runs, strict=True)]
    assert np.mean([not stats.not_below(i).passed for i in intervals]) <= _allowed(ALPHA, suites)
    assert np.mean([stats.superior(i).passed for i in intervals]) <= _allowed(ALPHA, suites)


def test_paired_bootstrap_of_continuous_scores():
    rng = np.random.default_rng(6)
    baseline = rng.beta(5, 2, 200)
    candidate = np.clip(baseline + 0.05 + rng.normal(0, 0.02, 200), 0, 1)
    difference = stats.paired_mean_difference(candidate, baseline, seed="cell", method="bca")
    assert stats.superior(difference).passed
    assert 0.04 < difference.low < 0.05 < difference.high < 0.06
    assert difference == stats.paired_mean_difference(candidate, baseline, seed="cell", method="bca")
    assert not stats.superior(stats.paired_mean_difference(baseline, baseline, seed="cell", method="bca")).passed


# -- paired 0/1 comparisons -------------------------------------------------------------------------------------


def test_mcnemar_exact_by_hand():
    """1 row better, 6 worse: P(X <= 1 | 7, 1/2) = (1 + 7)/128, doubled for two sides."""
    candidate = [1, 0, 0, 0, 0, 0, 0, 1, 1, 0]
    baseline = [0, 1, 1, 1, 1, 1, 1, 1, 1, 0]
    assert stats.mcnemar_exact(candidate, baseline) == 0.125
    assert stats.mcnemar_exact(candidate, baseline, "less") == 0.0625
    assert stats.mcnemar_exact(candidate, baseline, "greater") == 127 / 128


def test_tango_at_zero_is_mcnemar_and_its_constraint_is_the_likelihood_maximum():
    assert paired._tango_score(30, 18, 200, 0.0) == pytest.approx(12 / math.sqrt(48))
    better, worse, n, delta = 30, 18, 200, 0.02
    grid = np.linspace(1e-6, 1 - delta - 1e-6, 200_001) / 2  # P(worse) with P(better) = P(worse) + delta
    log_likelihood = (
        better * np.log(grid + delta) + worse * np.log(grid) + (n - better - worse) * np.log(1 - 2 * grid - delta)
    )
    best = grid[np.argmax(log_likelihood)]
    assert paired._tango_constrained_worse(better / n, worse / n, delta) == pytest.approx(best, abs=1e-5)


def test_paired_interval_keeps_its_width_with_no_discordant_rows():
    same = stats.paired_difference([1, 0, 1, 1] * 10, [1, 0, 1, 1] * 10)
    assert same.estimate == 0 and same.discordant == 0 and same.low < -0.05 and same.high > 0.05
    assert stats.not_below(same).passed and not stats.superior(same).passed
    assert stats.non_inferior(same, 0.1).passed and not stats.non_inferior(same, 0.02).passed
    # by hand: with no discordant row Tango's bound solves n d / (1 - d) = z^2, d = 1.645^2 / (40 + 1.645^2)
    assert str(stats.non_inferior(same, 0.02)) == "non-inferior: lower 95% bound -0.063 > -0.020"


def _suites_of_identical_variants(profile: str, rows: int, suites: int, seed: int) -> np.ndarray:
    """(better, worse) counts of an A/A comparison: both runs draw each row from that row's own pass rate."""
    rng = np.random.default_rng(seed)
    if profile == "near-deterministic":
        rates = np.where(rng.random(rows) < 0.7, 0.99, 0.01)
    elif profile == "mixed":
        rates = np.where(rng.random(rows) < 0.7, np.where(rng.random(rows) < 0.7, 0.99, 0.01), 0.5)
    else:
        rates = rng.uniform(0.3, 0.8, rows)
    candidate, baseline = (rng.random((suites, rows)) < rates for _ in range(2))
    return np.stack([(candidate & ~baseline).sum(axis=1), (~candidate & baseline).sum(axis=1)], axis=1)


def _share(counts: np.ndarray, rows: int, check) -> float:
    """Share of suites where ``check(interval)`` holds, computing each distinct (better, worse) once."""
    pairs, inverse = np.unique(counts, axis=0, return_inverse=True)
    verdicts = np.array([check(stats.paired_difference_from_counts(int(b), int(w), rows)) for b, w in pairs])
    return float(verdicts[inverse.ravel()].mean())


@pytest.mark.parametrize("rows", [40, 400])
@pytest.mark.parametrize("profile", ["near-deterministic", "mixed", "noisy"])
def test_identical_variants_alarm_at_most_5_percent(profile, rows):
    suites = 20_000
    counts = _suites_of_identical_variants(profile, rows, suites, seed=rows)
    assert _share(counts, rows, lambda i: not stats.not_below(i).passed) <= _allowed(ALPHA, suites)
    assert _share(counts, rows, lambda i: stats.superior(i).passed) <= _allowed(ALPHA, suites)


@pytest.mark.parametrize("rows", [40, 400])
def test_identical_variants_alarm_at_most_5_percent_at_every_discordant_count(rows):
    """Exact: given m discordant rows, identical variants split them as fair coins; no m alarms above 5%."""
    for m in range(1, min(rows, 150) + 1):
        weights = np.array([math.comb(m, b) for b in range(m + 1)], dtype=float) / 2**m
        intervals = [stats.paired_difference_from_counts(b, m - b, rows) for b in range(m + 1)]
        assert weights[[not stats.not_below(i).passed for i in intervals]].sum() <= ALPHA, m
        assert weights[[stats.superior(i).passed for i in intervals]].sum() <= ALPHA, m


@pytest.mark.parametrize("rows", [40, 400])
@pytest.mark.parametrize("p_worse", [0.025, 0.03, 0.04, 0.06])
def test_non_inferiority_margin_holds_with_few_discordant_rows(rows, p_worse):
    """Truly 2 points worse (few discordant rows): ``>= baseline - 0.02 at 95%`` passes at most 5%."""
    suites, margin = 20_000, 0.02
    probabilities = [p_worse - margin, p_worse, 1 - 2 * p_worse + margin]
    counts = np.random.default_rng(7).multinomial(rows, probabilities, size=suites)[:, :2]
    assert _share(counts, rows, lambda i: stats.non_inferior(i, margin).passed) <= _allowed(ALPHA, suites)


# -- power ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "p_better", "p_worse", "margin"),
    [(400, 0.105, 0.055, 0.0), (400, 0.07, 0.03, 0.0), (200, 0.13, 0.07, 0.0), (400, 0.05, 0.05, 0.05)],
)
def test_stated_power_matches_simulated_power(rows, p_better, p_worse, margin):
    suites = 4_000
    counts = np.random.default_rng(8).multinomial(rows, [p_better, p_worse, 1 - p_better - p_worse], size=suites)
    simulated = _share(counts[:, :2], rows, lambda i: stats.non_inferior(i, margin).passed)
    assert stats.paired_power(rows, p_better, p_worse, margin=margin) == pytest.approx(simulated, abs=0.05)


def test_a_5_point_drop_at_16_percent_discordance_fails_not_below_4_times_in_5():
    """The issue's case at 400 rows: the stated power to catch the drop (probabilities swapped) is what happens."""
    suites, rows = 4_000, 400
    counts = np.random.default_rng(16).multinomial(rows, [0.055, 0.105, 0.84], size=suites)[:, :2]
    caught = _share(counts, rows, lambda i: not stats.not_below(i).passed)
    assert stats.paired_power(rows, 0.105, 0.055) == pytest.approx(caught, abs=0.05)
    assert caught == pytest.approx(0.8, abs=0.05)


def test_issue_figure_400_rows_5_point_drop_needs_at_most_13_percent_discordance():
    """At 95% two-sided (97.5% one-sided) the MDE reaches 0.05 at 13% discordance; at 95% one-sided at 16%."""
    assert stats.paired_mde(400, 0.13, alpha=0.025) == pytest.approx(0.05, abs=0.001)
    assert stats.paired_mde(400, 0.16, alpha=0.05) == pytest.approx(0.05, abs=0.001)
    needed = stats.paired_rows_needed(0.16, 0.05)
    assert stats.paired_power(needed, 0.105, 0.055) >= 0.8 > stats.paired_power(needed - 1, 0.105, 0.055)
    assert stats.paired_mde(4, 0.0) == math.inf  # 4 of 4 rows one way: exact p = 1/16 > 0.05
    assert stats.paired_mde(400, 0.0) == pytest.approx(0.0154, abs=0.0005)  # agreeing runs: ~6 rows one way


def test_threshold_power_matches_simulated_wilson_gate():
    rows, suites, threshold, truth = 400, 20_000, 0.7, 0.76
    lows = np.array([stats.wilson(x, rows, 0.95, sides=1).low for x in range(rows + 1)])
    simulated = (lows[np.random.default_rng(9).binomial(rows, truth, suites)] >= threshold).mean()
    assert stats.threshold_power(rows, threshold, truth) == pytest.approx(simulated, abs=0.05)
    assert stats.threshold_power(rows, threshold, threshold + stats.threshold_mde(rows, threshold)) == pytest.approx(
        0.8
    )
    needed = stats.threshold_rows_needed(threshold, 0.06)
    assert stats.threshold_power(needed, threshold, truth) >= 0.8 > stats.threshold_power(needed - 1, threshold, truth)


def test_power_check_says_when_a_comparison_is_underpowered():
    small = stats.paired_power_check(stats.paired_difference_from_counts(12, 10, 100))
    assert small.underpowered and small.mde > 0.05 and small.power < 0.8 and small.discordant == 22
    large = stats.paired_power_check(stats.paired_difference_from_counts(30, 30, 2000))
    assert not large.underpowered and large.power > 0.8


# -- repeats ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pass_hat_k_and_pass_at_k_are_unbiased(k):
    rows, repeats = 200_000, 5
    truth = np.random.default_rng(10).uniform(0.2, 1.0, rows)
    successes = np.random.default_rng(11).binomial(repeats, truth)
    hat, at = stats.pass_hat_k(successes, repeats, k), stats.pass_at_k(successes, repeats, k)
    for estimate, target in ((hat, truth**k), (at, 1 - (1 - truth) ** k)):
        error = estimate - target
        assert abs(error.mean()) <= 4 * error.std() / math.sqrt(rows)
    if k > 1:
        naive = (successes / repeats) ** k - truth**k
        assert naive.mean() > 10 * naive.std() / math.sqrt(rows)


def test_repeat_values_by_hand():
    assert list(stats.pass_hat_k([3, 2, 0], 3, 2)) == [1.0, 1 / 3, 0.0]
    assert list(stats.pass_at_k([3, 1, 0], 3, 2)) == pytest.approx([1.0, 2 / 3, 0.0])
    assert stats.flaky_rate([3, 2, 0, 1], 3) == 0.5
    with pytest.raises(ValueError, match="between 1"):
        stats.pass_hat_k([1], 3, 4)


# -- several checks ---------------------------------------------------------------------------------------------


def test_holm_by_hand_and_by_bounds_agree():
    p_values = [0.01, 0.04, 0.03, 0.005]
    assert stats.holm_adjust(p_values) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    steps = [0.01, 0.02, 0.03]  # Bonferroni passes only the first; Holm steps down through all three
    assert stats.holm_passes(lambda i, level: steps[i] <= 1 - level, 3) == [True, True, True]
    random_p = list(np.random.default_rng(13).uniform(0, 0.1, 12))
    adjusted = stats.holm_adjust(random_p)
    by_bounds = stats.holm_passes(lambda i, level: random_p[i] <= 1 - level, len(random_p))
    assert by_bounds == [p <= ALPHA for p in adjusted]


def test_holm_keeps_family_wise_error_at_5_percent():
    """Eight configurations all truly at the threshold: some one passes in <= 5% of suites with Holm."""
    configurations, rows, suites, threshold = 8, 100, 20_000, 0.7
    successes = np.random.default_rng(14).binomial(rows, threshold, (suites, configurations))
    gates = {}

    def clears(suite: int, i: int, level: float) -> bool:
        if level not in gates:
            gates[level] = np.array([stats.wilson(x, rows, level, 1).low >= threshold for x in range(rows + 1)])
        return bool(gates[level][successes[suite, i]])

    holm = np.mean([any(stats.holm_passes(lambda i, lv, s=s: clears(s, i, lv), configurations)) for s in range(suites)])
    unadjusted = np.mean([any(clears(s, i, 0.95) for i in range(configurations)) for s in range(suites)])
    assert holm <= _allowed(ALPHA, suites)
    assert unadjusted > 0.15
