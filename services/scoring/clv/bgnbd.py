"""BG/NBD ("beta-geometric / negative binomial"), Fader, Hardie & Lee (2005).

"Counting your customers the easy way: an alternative to the Pareto/NBD model",
Marketing Science 24(2). While alive, a customer buys at Poisson rate λ ~ Gamma(r, alpha);
after each purchase they drop out with probability p ~ Beta(a, b). A customer is
summarised by x repeat purchases (frequency), the age t_x of the last one (recency) and
their age T, all measured from the first purchase in one time unit (days or weeks).

Numerics: everything is computed in logs (gammaln, log1p sums for beta ratios, logaddexp), the
conditional expectation uses a transformed hypergeometric function whose only large
parameter is in the denominator, so a customer with 500 purchases or 40 years of age gives
finite values. Fitting runs on the distinct (x, t_x, T) triples weighted by their counts,
and the per-x special functions are evaluated once per distinct x.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit, gammaln, hyp2f1, psi

from services.scoring.clv.mle import Fit, FloatArray, maximise
from services.scoring.clv.sufficient import as_column, compress, distinct_rows

NDArrayInt = np.ndarray[tuple[int], np.dtype[np.intp]]

__all__ = [
    "BgNbdParams",
    "Fit",
    "expected_purchases",
    "expected_purchases_new",
    "fit_bgnbd",
    "log_likelihood",
    "probability_alive",
    "purchase_curve",
]


@dataclass(frozen=True)
class BgNbdParams:
    """Purchase rate λ ~ Gamma(shape r, rate alpha); dropout p ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float

    def as_dict(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}


def summaries(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validated (x, t_x, T) arrays in the `lifetimes` conventions."""
    x = as_column("frequency", frequency)
    t_x = as_column("recency", recency)
    age = as_column("T", T)
    if not len(x) == len(t_x) == len(age):
        raise ValueError("frequency, recency and T differ in length")
    if np.any(x < 0) or np.any(x != np.floor(x)):
        raise ValueError("frequency must be a whole number of repeat purchases, >= 0")
    if np.any(t_x < 0) or np.any(t_x > age):
        raise ValueError("recency must lie between 0 and T")
    if np.any((x == 0) & (t_x != 0)):
        raise ValueError("recency must be 0 when frequency is 0")
    return x, t_x, age


# ----------------------------------------------------------------------- likelihood


def _loglik(
    theta: FloatArray,
    x: FloatArray,
    t_x: FloatArray,
    age: FloatArray,
    weights: FloatArray,
    distinct_x: FloatArray,
    index: NDArrayInt,
) -> tuple[float, FloatArray]:
    """Summed log-likelihood and its analytic gradient in (r, alpha, a, b).

    ll = ln Γ(r+x) - ln Γ(r) + r ln alpha
        + ln[ B(a, b+x)/B(a,b) (alpha+T)^-(r+x)
              + 1{x>0} B(a+1, b+x-1)/B(a,b) (alpha+t_x)^-(r+x) ]

    `distinct_x` must be sorted (np.unique) and `index` map customers onto it.
    """
    r, alpha, a, b = (float(v) for v in theta)
    repeat = distinct_x > 0
    # Per distinct x: the special functions (a few hundred values, not a million).
    gx = gammaln(r + distinct_x) - gammaln(r)
    # ln B(a, b+x) - ln B(a, b) = sum_{j<x} ln((b+j)/(a+b+j)), summed term by term: the
    # difference of two betaln values cancels catastrophically when a and b are huge
    # (data with almost no dropout push them there).
    steps = np.arange(int(distinct_x[-1]) + 1, dtype=np.float64)
    cumulative = np.concatenate(([0.0], np.cumsum(-np.log1p(a / (b + steps)))))
    counts = distinct_x.astype(np.intp)
    beta1 = cumulative[counts]
    # B(a+1, b+x-1) = B(a, b+x-1) * a / (a+b+x-1).
    safe_b = np.where(repeat, b + distinct_x - 1, 1.0)
    beta2 = np.where(
        repeat,
        cumulative[np.maximum(counts - 1, 0)] + np.log(a) - np.log(a + safe_b),
        -np.inf,
    )
    psi_abx = psi(a + b + distinct_x)
    d_r = psi(r + distinct_x) - psi(r)
    d_a1 = psi(a) - psi_abx
    d_a2 = psi(a + 1) - psi_abx
    d_b1 = psi(b + distinct_x) - psi_abx
    d_b2 = np.where(repeat, psi(safe_b) - psi_abx, 0.0)

    n = r + x
    log_age = np.log(alpha + age)
    log_last = np.log(alpha + t_x)
    u1 = beta1[index] - n * log_age
    u2 = beta2[index] - n * log_last
    # ln(e^u1 + e^u2) and the two shares of it, via one logistic each way: cheaper than
    # logaddexp plus two exps, exact at the extremes (u2 = -inf when x = 0 gives w2 = 0).
    gap = u2 - u1
    w1 = expit(-gap)
    w2 = expit(gap)
    top = u1 + np.maximum(gap, 0.0) + np.log1p(np.exp(-np.abs(gap)))
    terms = gx[index] + r * np.log(alpha) + top
    # Weighted sums as sum(w * v), not w @ v: numpy's BLAS dot wakes OpenBLAS worker
    # threads that then spin against L-BFGS-B's own BLAS calls, which made fits ten
    # times slower on a 2-core machine.
    value = float(np.sum(weights * terms))

    grad_r = np.sum(weights * (d_r[index] + np.log(alpha) - w1 * log_age - w2 * log_last))
    grad_alpha = np.sum(weights * (r / alpha - n * (w1 / (alpha + age) + w2 / (alpha + t_x))))
    base_a = psi(a) - psi(a + b)
    base_b = psi(b) - psi(a + b)
    grad_a = np.sum(weights * (w1 * d_a1[index] + w2 * d_a2[index])) - base_a * weights.sum()
    grad_b = np.sum(weights * (w1 * d_b1[index] + w2 * d_b2[index])) - base_b * weights.sum()
    return value, np.array([grad_r, grad_alpha, grad_a, grad_b])


def log_likelihood(
    params: BgNbdParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> float:
    """The BG/NBD log-likelihood of these customers, summed."""
    x, t_x, age = summaries(frequency, recency, T)
    distinct_x, index = np.unique(x, return_inverse=True)
    theta = np.array([params.r, params.alpha, params.a, params.b])
    return _loglik(theta, x, t_x, age, np.ones_like(x), distinct_x, index)[0]


def fit_bgnbd(
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    *,
    warm_start: BgNbdParams | None = None,
) -> Fit[BgNbdParams]:
    """Maximum-likelihood BG/NBD parameters for these customers.

    `warm_start` (e.g. yesterday's fit) only changes where the search begins, so it makes
    a refit faster without changing the answer.
    """
    x, t_x, age = summaries(frequency, recency, T)
    if len(x) == 0:
        raise ValueError("no customers to fit")
    if not np.any(x > 0):
        raise ValueError("no customer has a repeat purchase; BG/NBD cannot be fitted")
    (ux, ut, uT), weights = compress(x, t_x, age)
    distinct_x, index = np.unique(ux, return_inverse=True)
    if warm_start is not None:
        start = np.array([warm_start.r, warm_start.alpha, warm_start.a, warm_start.b])
    else:
        # Moment-ish start: r = 1 and alpha so that r/alpha is the mean repeat rate.
        rate = float(np.sum(x) / max(np.sum(age), 1e-9))
        start = np.array([1.0, 1.0 / max(rate, 1e-6), 1.0, 1.0])

    def loglik(theta: FloatArray) -> tuple[float, FloatArray]:
        return _loglik(theta, ux, ut, uT, weights, distinct_x, index)

    estimate = maximise(loglik, start, float(len(x)))
    r, alpha, a, b = (float(v) for v in estimate.theta)
    return Fit(
        params=BgNbdParams(r=r, alpha=alpha, a=a, b=b),
        standard_errors=dict(
            zip(("r", "alpha", "a", "b"), map(float, estimate.standard_errors), strict=True)
        ),
        log_likelihood=estimate.log_likelihood,
        customers=len(x),
        iterations=estimate.iterations,
        converged=estimate.converged,
    )


# ----------------------------------------------------------------------- predictions


def probability_alive(
    params: BgNbdParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> FloatArray:
    """P(alive at T | x, t_x, T) (FHL 2005 eq. 11), evaluated as a logistic of logs.

    1 / (1 + 1{x>0} · a/(b+x-1) · ((alpha+T)/(alpha+t_x))^(r+x)); a customer who never repeated
    cannot have dropped out yet (dropout happens right after a purchase).
    """
    x, t_x, age = summaries(frequency, recency, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    repeat = x > 0
    log_odds_dead = (
        np.log(a)
        - np.log(np.where(repeat, b + x - 1, 1.0))
        + (r + x) * (np.log(alpha + age) - np.log(alpha + t_x))
    )
    return np.where(repeat, expit(-log_odds_dead), 1.0)


def _expected_if_alive(
    params: BgNbdParams, t: FloatArray, x: FloatArray, age: FloatArray
) -> FloatArray:
    """E[purchases in (T, T+t] | alive at T, x, T].

    The paper writes (a+b+x-1)/(a-1) · [1 - ((alpha+T)/(alpha+T+t))^(r+x) ₂F₁(r+x, b+x; a+b+x-1; z)]
    with z = t/(alpha+T+t), whose factors overflow for large x. Two Pfaff transformations give
    the same number as (a+b+x-1)/(a-1) · [1 - (1+τ)^(1-a) ₂F₁(a+b-1-r, a-1; a+b+x-1;
    τ/(1+τ))] with τ = t/(alpha+T): the first two parameters no longer grow with x, and the
    argument stays in [0, 1).

    That form in turn breaks down when a and b are huge (a fit to data with almost no
    dropout: (1+τ)^(1-a) underflows while ₂F₁ overflows); there the paper's own form, whose
    parameters grow with b only through the ratio it converges on, is finite and is used.
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    tau = t / (alpha + age)
    c = a + b + x - 1
    z = tau / (1 + tau)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        g = np.exp((1 - a) * np.log1p(tau)) * hyp2f1(a + b - 1 - r, a - 1, c, z)
        unstable = ~np.isfinite(g)
        if np.any(unstable):
            paper = np.exp(-(r + x) * np.log1p(tau)) * hyp2f1(r + x, b + x, c, z)
            g = np.where(unstable, paper, g)
    return np.asarray(c / (a - 1) * (1 - g), dtype=np.float64)


def expected_purchases(
    params: BgNbdParams, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> FloatArray:
    """E[purchases in the next `t` time units | x, t_x, T] (FHL 2005 eq. 10).

    `t` is a scalar, or one horizon per customer.
    """
    x, t_x, age = summaries(frequency, recency, T)
    horizon = np.asarray(t, dtype=np.float64)
    if np.any(horizon < 0):
        raise ValueError("t must be >= 0")
    if horizon.ndim:
        return probability_alive(params, x, t_x, age) * _expected_if_alive(params, horizon, x, age)
    return next(purchase_curve(params, [float(horizon)], x, t_x, age))


def purchase_curve(
    params: BgNbdParams,
    horizons: Sequence[float],
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
) -> Iterator[FloatArray]:
    """`expected_purchases` at several horizons, one array at a time, sharing the work.

    The hypergeometric term depends on frequency and T only, and customers share these
    far more than they share (x, t_x, T): it is evaluated once per distinct (x, T) pair
    and horizon, and P(alive) once per customer.
    """
    if any(horizon < 0 for horizon in horizons):
        raise ValueError("horizons must be >= 0")
    x, t_x, age = summaries(frequency, recency, T)
    alive = probability_alive(params, x, t_x, age)
    (pair_x, pair_age), inverse = distinct_rows(x, age)
    for horizon in horizons:
        if_alive = _expected_if_alive(params, np.asarray(horizon), pair_x, pair_age)
        yield alive * if_alive[inverse]


def expected_purchases_new(params: BgNbdParams, t: ArrayLike) -> FloatArray:
    """E[X(t)]: expected repeat purchases in `t` time units of a new customer (eq. 9)."""
    horizon = np.asarray(t, dtype=np.float64)
    if np.any(horizon < 0):
        raise ValueError("t must be >= 0")
    zeros = np.zeros_like(horizon)
    return _expected_if_alive(params, horizon, zeros, zeros)
