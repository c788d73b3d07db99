"""A/B/n tests with a holdout: assignment, per-arm statistics and the decision rule.

Pure functions over plain values, so the statistics can be checked against a textbook
computation without a database.

* Assignment hashes (campaign id, customer id) into the arms' weights: random across
  customers, yet the same customer always lands in the same arm, so re-running a
  campaign's materialisation (a redelivered event, a restarted worker) never moves anyone.
* Rates get a Wilson score interval (it behaves at small counts and near 0 or 1, where the
  normal "Wald" interval does not). Revenue per recipient gets a normal-approximation
  interval on the mean (non-converters count as zero revenue).
* The decision rule is Bayesian: each arm's conversion rate has a Beta(1 + conversions,
  1 + misses) posterior; P(best) is estimated by Monte Carlo with a fixed seed, so the same
  data always gives the same answer. No winner is declared before every arm reached the
  minimum sample, however lopsided the numbers look: twenty conversions fool no one.
"""

from __future__ import annotations

import hashlib
import math
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

HOLDOUT = "holdout"
"""The variant name of the control group that receives nothing."""

Z_95 = NormalDist().inv_cdf(0.975)


@dataclass(frozen=True)
class Arm:
    """One arm of a test: a name and a relative weight (the holdout is an arm too)."""

    name: str
    weight: float


def bucket(campaign_id: uuid.UUID, customer_id: uuid.UUID) -> float:
    """A uniform number in [0, 1) fixed by the pair: the customer's place in this test."""
    digest = hashlib.sha256(f"{campaign_id}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(campaign_id: uuid.UUID, customer_id: uuid.UUID, arms: Sequence[Arm]) -> str:
    """The arm a customer belongs to, in proportion to the weights."""
    total = sum(arm.weight for arm in arms)
    if not arms or total <= 0:
        raise ValueError("an experiment needs arms with a positive total weight")
    point = bucket(campaign_id, customer_id) * total
    running = 0.0
    for arm in arms:
        running += arm.weight
        if point < running:
            return arm.name
    return arms[-1].name  # float rounding at the very top of the range


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


def wilson(successes: int, trials: int, z: float = Z_95) -> Interval:
    """Wilson score interval for a proportion; (0, 0, 1) when there are no trials."""
    if trials <= 0:
        return Interval(0.0, 0.0, 1.0)
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(total: float, total_squares: float, n: int, z: float = Z_95) -> Interval:
    """Normal-approximation interval on a mean, from the sum and sum of squares of n values.

    Used for revenue per recipient, where most values are zero: the sums are what SQL
    gives cheaply, and at campaign sizes the central limit theorem does the rest.
    """
    if n <= 0:
        return Interval(0.0, 0.0, 0.0)
    mean = total / n
    if n == 1:
        return Interval(mean, mean, mean)
    variance = max(0.0, (total_squares - n * mean * mean) / (n - 1))
    half = z * math.sqrt(variance / n)
    return Interval(mean, mean - half, mean + half)


@dataclass(frozen=True)
class ZTest:
    z: float
    p_value: float


def two_proportion_z(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> ZTest:
    """Two-sided two-proportion z-test with the pooled standard error."""
    if trials_a <= 0 or trials_b <= 0:
        return ZTest(0.0, 1.0)
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    if se == 0:
        return ZTest(0.0, 1.0)
    z = (successes_a / trials_a - successes_b / trials_b) / se
    return ZTest(z, math.erfc(abs(z) / math.sqrt(2)))


@dataclass(frozen=True)
class ArmCounts:
    """What an arm produced: recipients, converted recipients, revenue and its squares."""

    recipients: int
    conversions: int
    revenue_minor: int = 0
    revenue_squares: float = 0.0


def probability_best(
    counts: Mapping[str, ArmCounts], *, draws: int = 20_000, seed: int = 8
) -> dict[str, float]:
    """P(each arm has the highest conversion rate), under Beta(1, 1) priors.

    Monte Carlo with a fixed seed: reproducible, and within about ±0.005 of the exact
    value at 20,000 draws, which is finer than any threshold a shop would choose.
    """
    names = list(counts)
    if not names:
        return {}
    rng = random.Random(seed)
    wins = dict.fromkeys(names, 0)
    params = [
        (1 + counts[n].conversions, 1 + max(0, counts[n].recipients - counts[n].conversions))
        for n in names
    ]
    for _ in range(draws):
        samples = [rng.betavariate(a, b) for a, b in params]
        wins[names[samples.index(max(samples))]] += 1
    return {name: wins[name] / draws for name in names}


@dataclass(frozen=True)
class Decision:
    """The rule's verdict: a winner, or None with the reason."""

    winner: str | None
    reason: str
    probability_best: dict[str, float]


def decide(counts: Mapping[str, ArmCounts], *, min_sample: int, threshold: float) -> Decision:
    """Declare the arm (holdout excluded) whose P(best) reaches `threshold`, if any.

    Nothing is declared while any arm has fewer than `min_sample` recipients.
    """
    arms = {name: c for name, c in counts.items() if name != HOLDOUT}
    if len(arms) < 2:
        return Decision(None, "fewer than two arms", {})
    smallest = min(c.recipients for c in arms.values())
    if smallest < min_sample:
        return Decision(None, f"minimum sample not reached ({smallest} < {min_sample})", {})
    chances = probability_best(arms)
    best = max(chances, key=lambda name: chances[name])
    if chances[best] >= threshold:
        return Decision(best, f"P(best) {chances[best]:.3f} >= {threshold}", chances)
    return Decision(None, f"no arm reached P(best) {threshold}", chances)
