"""Customers drawn from the BG/NBD and Gamma-Gamma generative processes.

For the parameter-recovery tests and the benchmark: data whose true parameters are known.
"""

from __future__ import annotations

import numpy as np

from services.scoring.clv.bgnbd import BgNbdParams
from services.scoring.clv.gamma_gamma import GammaGammaParams
from services.scoring.clv.mle import FloatArray

__all__ = ["simulate_bgnbd", "simulate_spend"]


def simulate_bgnbd(
    params: BgNbdParams, T: FloatArray, rng: np.random.Generator, *, day: float | None = None
) -> tuple[FloatArray, FloatArray]:
    """(frequency, recency) of customers of ages `T` under BG/NBD.

    Each customer draws λ ~ Gamma(r, alpha) and p ~ Beta(a, b); after the first purchase at
    time 0 they buy at exponential intervals of rate λ and, after each purchase, drop out
    with probability p. With `day` (the length of a day in the time unit, e.g. 1/7 for
    weeks) purchase times are floored to whole days, as the service records them, and
    purchases on an already counted day do not count again.
    """
    size = len(T)
    rate = rng.gamma(params.r, 1.0 / params.alpha, size)
    dropout = rng.beta(params.a, params.b, size)
    frequency = np.zeros(size)
    recency = np.zeros(size)
    now = np.zeros(size)
    active = np.arange(size)
    while len(active):
        now[active] += rng.exponential(1.0, len(active)) / rate[active]
        active = active[now[active] <= T[active]]
        moment = now[active]
        if day is not None:
            moment = np.floor(moment / day) * day
            new_day = moment > recency[active]
        else:
            new_day = np.ones(len(active), dtype=bool)
        counted = active[new_day]
        frequency[counted] += 1
        recency[counted] = moment[new_day]
        # Dropout follows a purchase; a same-day extra purchase is one more chance.
        active = active[rng.random(len(active)) >= dropout[active]]
    return frequency, recency


def simulate_spend(
    params: GammaGammaParams, frequency: FloatArray, rng: np.random.Generator
) -> FloatArray:
    """Mean value of each customer's `frequency` repeat transactions under Gamma-Gamma.

    nu ~ Gamma(q, v) per customer; each transaction ~ Gamma(p, nu), so the mean of x of them
    ~ Gamma(p·x, nu·x). Customers without repeat purchases get 0.
    """
    nu = rng.gamma(params.q, 1.0 / params.v, len(frequency))
    x = np.maximum(frequency, 1.0)
    mean = rng.gamma(params.p * x, 1.0 / (nu * x))
    return np.where(frequency > 0, mean, 0.0)
