"""Gamma-Gamma spend model: Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value
curves for customer base analysis", JMR 42(4); Fader & Hardie (2013), "The Gamma-Gamma
model of monetary value" (the note that fixes the parameterisation used here).

Each transaction of a customer is worth z ~ Gamma(p, nu), and nu ~ Gamma(q, v) across
customers. A customer is summarised by x repeat purchases and their mean value m̄ (the
first purchase is left out, as in the `lifetimes` conventions), so only x > 0 counts.

The model assumes spend per transaction is independent of how often a customer buys;
`independence_check` reports the correlation the papers look at before using it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln, psi

from services.scoring.clv.mle import Fit, FloatArray, maximise
from services.scoring.clv.sufficient import as_column, compress

__all__ = [
    "Fit",
    "GammaGammaParams",
    "expected_spend",
    "fit_gamma_gamma",
    "independence_check",
    "log_likelihood",
]


@dataclass(frozen=True)
class GammaGammaParams:
    """Transaction value z ~ Gamma(shape p, rate nu); nu ~ Gamma(shape q, rate v)."""

    p: float
    q: float
    v: float

    def as_dict(self) -> dict[str, float]:
        return {"p": self.p, "q": self.q, "v": self.v}

    @property
    def population_mean(self) -> float:
        """Mean transaction value of a customer about whom nothing is known: p·v/(q-1)."""
        return self.p * self.v / (self.q - 1) if self.q > 1 else float("inf")


def _columns(frequency: ArrayLike, monetary: ArrayLike) -> tuple[FloatArray, FloatArray]:
    x = as_column("frequency", frequency)
    m = as_column("monetary", monetary)
    if len(x) != len(m):
        raise ValueError("frequency and monetary differ in length")
    if np.any(x < 0) or np.any(x != np.floor(x)):
        raise ValueError("frequency must be a whole number of repeat purchases, >= 0")
    if np.any((x > 0) & (m <= 0)):
        raise ValueError("monetary must be > 0 for customers with repeat purchases")
    return x, m


@dataclass(frozen=True)
class _Spends:
    """Mean spends of repeat customers, with what the likelihood reuses at every step."""

    x: FloatArray
    m: FloatArray
    weights: FloatArray
    distinct_x: FloatArray
    index: NDArray[np.intp]
    log_m: FloatArray
    log_x: FloatArray


def _prepare(x: FloatArray, m: FloatArray, weights: FloatArray) -> _Spends:
    distinct_x, index = np.unique(x, return_inverse=True)
    return _Spends(x, m, weights, distinct_x, index, np.log(m), np.log(x))


def _loglik(theta: FloatArray, data: _Spends) -> tuple[float, FloatArray]:
    """Summed log-density of the mean spends and its gradient in (p, q, v).

    ll = ln Γ(px+q) - ln Γ(px) - ln Γ(q) + q ln v + (px-1) ln m̄ + px ln x - (px+q) ln(v+x·m̄)

    The special functions depend on x only, so they are evaluated per distinct x.
    """
    p, q, v = (float(value) for value in theta)
    x, m, weights, index = data.x, data.m, data.weights, data.index
    dpx = p * data.distinct_x
    gammas = gammaln(dpx + q) - gammaln(dpx)
    psi_pxq = psi(dpx + q)
    d_p = data.distinct_x * (psi_pxq - psi(dpx) + np.log(data.distinct_x))
    px = p * x
    vxm = v + x * m
    log_vxm = np.log(vxm)
    terms = gammas[index] + px * (data.log_m + data.log_x) - data.log_m - (px + q) * log_vxm
    total = weights.sum()
    # sum(w * v), not w @ v: see the note in bgnbd._loglik on BLAS threads.
    value = float(np.sum(weights * terms)) + (q * np.log(v) - gammaln(q)) * total
    grad_p = np.sum(weights * (d_p[index] + x * (data.log_m - log_vxm)))
    grad_q = np.sum(weights * (psi_pxq[index] - log_vxm)) + (np.log(v) - psi(q)) * total
    grad_v = q / v * total - np.sum(weights * ((px + q) / vxm))
    return value, np.array([grad_p, grad_q, grad_v])


def log_likelihood(params: GammaGammaParams, frequency: ArrayLike, monetary: ArrayLike) -> float:
    """The Gamma-Gamma log-likelihood of the customers with x > 0, summed."""
    x, m = _columns(frequency, monetary)
    keep = x > 0
    theta = np.array([params.p, params.q, params.v])
    return _loglik(theta, _prepare(x[keep], m[keep], np.ones(int(keep.sum()))))[0]


def fit_gamma_gamma(frequency: ArrayLike, monetary: ArrayLike) -> Fit[GammaGammaParams]:
    """Maximum-likelihood Gamma-Gamma parameters from the customers with x > 0.

    Customers without a repeat purchase carry no information on repeat spend and are
    skipped; `Fit.customers` counts those used.
    """
    x, m = _columns(frequency, monetary)
    keep = x > 0
    if int(keep.sum()) < 2:
        raise ValueError("Gamma-Gamma needs at least two customers with repeat purchases")
    (ux, um), weights = compress(x[keep], m[keep])
    # Method-of-moments flavoured start: p = 1, q = 2, so the population mean p·v/(q-1)
    # equals the observed mean spend.
    start = np.array([1.0, 2.0, float(np.mean(m[keep]))])

    data = _prepare(ux, um, weights)

    def loglik(theta: FloatArray) -> tuple[float, FloatArray]:
        return _loglik(theta, data)

    estimate = maximise(loglik, start, float(keep.sum()))
    p, q, v = (float(value) for value in estimate.theta)
    return Fit(
        params=GammaGammaParams(p=p, q=q, v=v),
        standard_errors=dict(
            zip(("p", "q", "v"), map(float, estimate.standard_errors), strict=True)
        ),
        log_likelihood=estimate.log_likelihood,
        customers=int(keep.sum()),
        iterations=estimate.iterations,
        converged=estimate.converged,
    )


def expected_spend(
    params: GammaGammaParams, frequency: ArrayLike, monetary: ArrayLike
) -> FloatArray:
    """E[value of a future transaction | x, m̄] = p(v + x·m̄) / (px + q - 1).

    A weighted mean of the population mean p·v/(q-1) and the customer's own m̄, with more
    weight on m̄ the more purchases back it; x = 0 gives the population mean.
    """
    x, m = _columns(frequency, monetary)
    p, q, v = params.p, params.q, params.v
    mean_spend = np.where(x > 0, m, 0.0)
    return np.asarray(p * (v + x * mean_spend) / (p * x + q - 1), dtype=np.float64)


def independence_check(frequency: ArrayLike, monetary: ArrayLike) -> float:
    """Pearson correlation of frequency and mean spend over customers with x > 0.

    Gamma-Gamma assumes it is close to 0 (CDNOW: 0.11); NaN when it is undefined (fewer
    than two customers, or no variation).
    """
    x, m = _columns(frequency, monetary)
    keep = x > 0
    if int(keep.sum()) < 2:
        return float("nan")
    xs, ms = x[keep], m[keep]
    if np.std(xs) == 0 or np.std(ms) == 0:
        return float("nan")
    return float(np.corrcoef(xs, ms)[0, 1])
