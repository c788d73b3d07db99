"""Customer lifetime value: the textbook formula and the model-based discounted one."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from services.scoring.clv.bgnbd import BgNbdParams, purchase_curve, summaries
from services.scoring.clv.gamma_gamma import GammaGammaParams, expected_spend
from services.scoring.clv.mle import FloatArray
from services.scoring.clv.sufficient import as_column

__all__ = ["discounted_clv", "simple_clv"]


def simple_clv(
    aov: ArrayLike, purchases_per_period: ArrayLike, lifespan_periods: ArrayLike, margin: float
) -> FloatArray:
    """The CLV of the textbooks: average order value * purchases per period * expected
    lifespan in periods * margin. No discounting and no notion of churn beyond the
    lifespan; kept because owners know it and can check it by hand.
    """
    if not 0 <= margin <= 1:
        raise ValueError("margin must be between 0 and 1")
    value = (
        np.asarray(aov, dtype=np.float64)
        * np.asarray(purchases_per_period, dtype=np.float64)
        * np.asarray(lifespan_periods, dtype=np.float64)
        * margin
    )
    return np.asarray(value, dtype=np.float64)


def discounted_clv(
    bg: BgNbdParams,
    gg: GammaGammaParams | None,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary: ArrayLike,
    *,
    horizon: float,
    margin: float,
    discount_rate_per_unit: float,
    steps: int = 12,
) -> FloatArray:
    """Discounted margin of each customer's expected purchases over the next `horizon`.

    With Δ = horizon / steps, E[Y(t)] the BG/NBD expected purchases in (T, T+t] given the
    customer's history, s the expected value of one purchase and d the discount rate per
    time unit (the fit's unit; (1+d)^(units per year) - 1 is the annual rate):

        CLV = margin · s · Σ_{k=1..steps} (E[Y(kΔ)] - E[Y((k-1)Δ)]) / (1+d)^(kΔ)

    i.e. the purchases expected in each step are discounted from the end of that step, as
    `lifetimes.customer_lifetime_value` does with monthly steps. s is the Gamma-Gamma
    conditional expected spend (the population mean for customers without repeat
    purchases); with `gg=None` it is `monetary` itself. Memory is a few arrays of one
    value per customer, whatever the number of steps.
    """
    if horizon < 0:
        raise ValueError("horizon must be >= 0")
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if not 0 <= margin <= 1:
        raise ValueError("margin must be between 0 and 1")
    if discount_rate_per_unit <= -1:
        raise ValueError("discount_rate_per_unit must be > -1")
    x, t_x, age = summaries(frequency, recency, T)
    spend = as_column("monetary", monetary) if gg is None else expected_spend(gg, x, monetary)
    if len(spend) != len(x):
        raise ValueError("monetary differs in length from frequency")
    delta = horizon / steps
    curve = purchase_curve(bg, [k * delta for k in range(1, steps + 1)], x, t_x, age)
    discounted = np.zeros_like(x)
    previous = np.zeros_like(x)
    for k, cumulative in enumerate(curve, start=1):
        discounted += (cumulative - previous) / (1 + discount_rate_per_unit) ** (k * delta)
        previous = cumulative
    return np.asarray(margin * spend * discounted, dtype=np.float64)
