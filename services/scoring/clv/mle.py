"""Maximum likelihood for the CLV models: one optimiser, one notion of a fit.

Every model parameter is positive, so the search runs on log-parameters with L-BFGS-B and
the model's analytic gradient (chain rule: d/d log θ = θ · d/dθ). The objective is the
mean log-likelihood per customer, which keeps the gradient scale independent of data size;
the reported log-likelihood is the sum over customers, as the papers report it.

The tolerances are fixed here on purpose: the issue forbids knobs a user could fiddle with,
and these are tight enough to reproduce published estimates to well beyond three
significant figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

P = TypeVar("P")
FloatArray = NDArray[np.float64]
LogLikelihood = Callable[[FloatArray], tuple[float, FloatArray]]
"""Natural parameters -> (summed log-likelihood, its gradient in the natural parameters)."""

LOG_BOUND = 30.0
"""|log θ| limit: keeps exp() finite; a parameter at e^±30 means the data do not pin it."""
MAX_ITERATIONS = 2000


@dataclass(frozen=True)
class Fit(Generic[P]):
    """A fitted model: estimates, their standard errors and the summed log-likelihood."""

    params: P
    standard_errors: dict[str, float]
    log_likelihood: float
    customers: int
    iterations: int
    converged: bool


@dataclass(frozen=True)
class Estimate:
    """What `maximise` found, before a model wraps it in its own parameter type."""

    theta: FloatArray
    standard_errors: FloatArray
    log_likelihood: float
    iterations: int
    converged: bool


def maximise(loglik: LogLikelihood, start: FloatArray, weight: float) -> Estimate:
    """Maximise `loglik` over positive parameters from `start`.

    `weight` is the number of customers (sum of the sufficient-statistic counts); it only
    scales the objective.
    """

    def objective(phi: FloatArray) -> tuple[float, FloatArray]:
        theta = np.exp(phi)
        value, gradient = loglik(theta)
        if not np.isfinite(value):
            # Out of the region where the likelihood is representable: a wall, not a NaN.
            return 1e300, np.zeros_like(phi)
        return -value / weight, -(gradient * theta) / weight

    bounds = [(-LOG_BOUND, LOG_BOUND)] * len(start)
    result = minimize(
        objective,
        np.log(np.asarray(start, dtype=np.float64)),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": MAX_ITERATIONS, "ftol": 1e-15, "gtol": 1e-9, "maxcor": 20},
    )
    theta = np.exp(np.asarray(result.x, dtype=np.float64))
    value, gradient = loglik(theta)
    information = -hessian(loglik, theta)
    # One Newton step with the observed information polishes what L-BFGS-B leaves when it
    # stops on a flat stretch (it stops on relative change, not on the gradient); the
    # information is needed for the standard errors anyway.
    if _positive_definite(information):
        polished = theta + np.linalg.solve(information, gradient)
        if np.all(polished > 0):
            polished_value, polished_gradient = loglik(polished)
            if np.isfinite(polished_value) and polished_value >= value:
                theta, value, gradient = polished, polished_value, polished_gradient
    on_bound = bool(np.any(np.abs(np.log(theta)) >= LOG_BOUND - 1e-6))
    converged = bool(np.isfinite(value) and np.all(np.isfinite(gradient)) and not on_bound)
    return Estimate(
        theta=theta,
        standard_errors=standard_errors(information),
        log_likelihood=float(value),
        iterations=int(result.nit),
        converged=converged,
    )


def hessian(loglik: LogLikelihood, theta: FloatArray) -> FloatArray:
    """Central differences of the analytic gradient (relative step 1e-5), symmetrised."""
    k = len(theta)
    matrix = np.empty((k, k))
    for i in range(k):
        step = 1e-5 * theta[i]
        up, down = theta.copy(), theta.copy()
        up[i] += step
        down[i] -= step
        matrix[:, i] = (loglik(up)[1] - loglik(down)[1]) / (2 * step)
    return np.asarray((matrix + matrix.T) / 2, dtype=np.float64)


def _positive_definite(matrix: FloatArray) -> bool:
    if not np.all(np.isfinite(matrix)):
        return False
    try:
        np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return False
    return True


def standard_errors(information: FloatArray) -> FloatArray:
    """Square roots of the diagonal of the inverse observed information.

    NaN when the information is not positive definite (the optimum is not a proper one).
    """
    if not _positive_definite(information):
        return np.full(len(information), np.nan)
    return np.asarray(np.sqrt(np.diag(np.linalg.inv(information))), dtype=np.float64)
