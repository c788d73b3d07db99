"""A/B/n statistics against textbook computations on fixed data, and the assignment."""

from __future__ import annotations

import math
import uuid
from collections import Counter

import pytest

from services.messaging import experiments
from services.messaging.experiments import HOLDOUT, Arm, ArmCounts

EXACT_P_B_BEST = 0.9752
"""P(B > A) for 10/100 vs 20/100 (the normal approximation, 0.098 / 0.0505 = 1.94 sd: 0.974)."""
CAMPAIGN = uuid.UUID("00000000-0000-0000-0000-00000000ca5e")


def test_wilson_interval_matches_the_textbook() -> None:
    """40 conversions out of 100, 95 % (z = 1.959964, z² = 3.841459):

    p̂ = 0.4; denominator 1 + z²/n = 1.0384146;
    centre = (0.4 + z²/200) / 1.0384146 = 0.4192073 / 1.0384146 = 0.4036992;
    half = z·sqrt(0.4·0.6/100 + z²/40000) / 1.0384146
         = 1.959964 · sqrt(0.0024 + 0.0000960365) / 1.0384146
         = 1.959964 · 0.0499603 / 1.0384146 = 0.0942997;
    interval (0.3094, 0.4980), as in Newcombe (1998) and every statistics table.
    """
    interval = experiments.wilson(40, 100)
    assert interval.estimate == pytest.approx(0.4)
    assert interval.low == pytest.approx(0.3094, abs=5e-5)
    assert interval.high == pytest.approx(0.4980, abs=5e-5)


def test_wilson_stays_inside_zero_and_one_at_the_edges() -> None:
    """0 of 20: Wald gives (0, 0), Wilson gives (0, z²/(n+z²)) = (0, 3.8415/23.8415 = 0.1611)."""
    none = experiments.wilson(0, 20)
    assert none.low == pytest.approx(0.0, abs=1e-12)
    assert none.high == pytest.approx(0.1611, abs=5e-5)
    every = experiments.wilson(20, 20)
    assert every.low == pytest.approx(1 - 0.1611, abs=5e-5)
    assert every.high == pytest.approx(1.0)
    assert experiments.wilson(0, 0) == experiments.Interval(0.0, 0.0, 1.0)


def test_two_proportion_z_test_matches_the_textbook() -> None:
    """A: 120 of 1000 converted, B: 90 of 1000.

    pooled p = 210/2000 = 0.105; SE = sqrt(0.105 · 0.895 · (1/1000 + 1/1000))
    = sqrt(0.00018795) = 0.0137095; z = (0.12 - 0.09) / 0.0137095 = 2.18827;
    two-sided p = 2 · (1 - Φ(2.18827)) = 2 · 0.014325 = 0.02865.
    """
    test = experiments.two_proportion_z(120, 1000, 90, 1000)
    assert test.z == pytest.approx(2.18827, abs=1e-4)
    assert test.p_value == pytest.approx(0.02865, abs=2e-4)
    assert experiments.two_proportion_z(90, 1000, 120, 1000).z == pytest.approx(-test.z)


def test_revenue_interval_is_the_normal_interval_on_the_mean() -> None:
    """Revenue per recipient for 4 recipients spending 0, 0, 1000, 3000 (minor units):

    mean = 1000; sample variance = (0 + 0 + 1000² + 3000² - 4·1000²) / 3 = 6,000,000/3
    = 2,000,000; SE = sqrt(2,000,000 / 4) = 707.107; half = 1.959964 · 707.107 = 1385.90.
    """
    interval = experiments.mean_interval(4000, 1000**2 + 3000**2, 4)
    assert interval.estimate == pytest.approx(1000)
    assert interval.low == pytest.approx(1000 - 1385.90, abs=0.05)
    assert interval.high == pytest.approx(1000 + 1385.90, abs=0.05)


def test_assignment_is_reproducible_and_follows_the_weights() -> None:
    arms = [Arm("A", 45), Arm("B", 45), Arm(HOLDOUT, 10)]
    customers = [uuid.UUID(int=i) for i in range(20_000)]
    first = [experiments.assign(CAMPAIGN, c, arms) for c in customers]
    assert first == [experiments.assign(CAMPAIGN, c, arms) for c in customers]
    shares = Counter(first)
    assert shares["A"] / 20_000 == pytest.approx(0.45, abs=0.015)
    assert shares["B"] / 20_000 == pytest.approx(0.45, abs=0.015)
    assert shares[HOLDOUT] / 20_000 == pytest.approx(0.10, abs=0.01)
    # Another campaign shuffles people independently.
    other = uuid.uuid4()
    moved = sum(
        experiments.assign(other, c, arms) != a for c, a in zip(customers, first, strict=True)
    )
    assert moved > 5_000


def test_probability_best_of_two_arms_matches_the_closed_form() -> None:
    """A = 10/100 and B = 20/100 under Beta(1, 1) priors: A ~ Beta(11, 91), B ~ Beta(21, 81).

    Evan Miller's exact sum, P(B > A) = Σ_{i<21} B(11+i, 172) / ((81+i) B(1+i, 81) B(11, 91)),
    evaluated here with log-gamma (0.9752); the Monte Carlo estimate must agree within 0.01.
    """

    def log_beta(a: float, b: float) -> float:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    a_a, b_a, a_b, b_b = 11, 91, 21, 81
    exact = sum(
        math.exp(
            log_beta(a_a + i, b_a + b_b)
            - math.log(b_b + i)
            - log_beta(1 + i, b_b)
            - log_beta(a_a, b_a)
        )
        for i in range(a_b)
    )
    assert exact == pytest.approx(EXACT_P_B_BEST, abs=1e-4)
    chances = experiments.probability_best(
        {"A": ArmCounts(100, 10), "B": ArmCounts(100, 20)}, draws=40_000
    )
    assert chances["B"] == pytest.approx(exact, abs=0.01)
    assert chances["A"] + chances["B"] == pytest.approx(1.0)


def test_no_winner_below_the_minimum_sample() -> None:
    """Twenty conversions against two look decisive, but 100 per arm is under 500."""
    lopsided = {"A": ArmCounts(100, 20), "B": ArmCounts(100, 2), HOLDOUT: ArmCounts(10, 0)}
    decision = experiments.decide(lopsided, min_sample=500, threshold=0.95)
    assert decision.winner is None
    assert "minimum sample" in decision.reason


def test_winner_once_the_sample_is_big_enough_and_the_holdout_never_wins() -> None:
    counts = {"A": ArmCounts(1000, 120), "B": ArmCounts(1000, 90), HOLDOUT: ArmCounts(1000, 300)}
    decision = experiments.decide(counts, min_sample=500, threshold=0.95)
    assert decision.winner == "A"
    assert HOLDOUT not in decision.probability_best
    close = {"A": ArmCounts(1000, 100), "B": ArmCounts(1000, 98)}
    assert experiments.decide(close, min_sample=500, threshold=0.95).winner is None
