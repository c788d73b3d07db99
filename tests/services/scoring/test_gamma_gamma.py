"""Gamma-Gamma: the published CDNOW estimates, agreement with `lifetimes`, recovery of
known parameters, the independence check and extreme customers."""

from __future__ import annotations

import numpy as np
import pytest

from services.scoring.clv.gamma_gamma import (
    GammaGammaParams,
    _loglik,
    _prepare,
    expected_spend,
    fit_gamma_gamma,
    independence_check,
    log_likelihood,
)
from services.scoring.clv.simulate import simulate_spend
from tests.services.scoring.cdnow import (
    GammaGammaFitter,
    cdnow,
    same_to_3_significant_figures,
    series,
)

PUBLISHED = GammaGammaParams(p=6.25, q=3.74, v=15.44)
"""Fader & Hardie (2013) on the CDNOW customers with repeat purchases."""


def test_reproduces_the_published_cdnow_estimates() -> None:
    data = cdnow()

    fit = fit_gamma_gamma(data["frequency"], data["monetary_value"])

    assert fit.converged
    assert fit.customers == 946  # only customers with repeat purchases count
    for name, published in PUBLISHED.as_dict().items():
        assert same_to_3_significant_figures(fit.params.as_dict()[name], published), name
    assert fit.params.v == pytest.approx(15.44, abs=0.01)
    assert all(np.isfinite(se) and se > 0 for se in fit.standard_errors.values())


def test_agrees_with_lifetimes() -> None:
    data = cdnow()
    repeat = data["frequency"] > 0
    x, m = data["frequency"], data["monetary_value"]
    theirs = GammaGammaFitter().fit(series(x[repeat]), series(m[repeat]))

    fit = fit_gamma_gamma(x, m)

    for name, value in fit.params.as_dict().items():
        assert value == pytest.approx(theirs.params_[name], rel=1e-4), name
        assert fit.standard_errors[name] == pytest.approx(
            theirs.summary.loc[name, "se(coef)"], rel=1e-3
        )
    # lifetimes minimises the mean negative log-likelihood; ours is the sum.
    assert fit.log_likelihood == pytest.approx(
        -theirs._negative_log_likelihood_ * int(repeat.sum()), rel=1e-8
    )
    same = GammaGammaParams(**{k: float(v) for k, v in theirs.params_.items()})
    assert expected_spend(same, x, m) == pytest.approx(
        np.asarray(theirs.conditional_expected_average_profit(series(x), series(m))),
        rel=1e-12,
    )


def test_the_independence_check_is_the_papers_correlation() -> None:
    data = cdnow()

    assert independence_check(data["frequency"], data["monetary_value"]) == pytest.approx(
        0.11, abs=0.005
    )
    assert np.isnan(independence_check([0.0, 3.0], [0.0, 10.0]))


def test_the_analytic_gradient_matches_finite_differences() -> None:
    data = cdnow()
    keep = data["frequency"] > 0
    x, m = data["frequency"][keep], data["monetary_value"][keep]
    spends = _prepare(x, m, np.ones_like(x))
    theta = np.array([5.0, 3.0, 20.0])

    _, gradient = _loglik(theta, spends)

    for i in range(3):
        step = 1e-6 * theta[i]
        up, down = theta.copy(), theta.copy()
        up[i] += step
        down[i] -= step
        numeric = (_loglik(up, spends)[0] - _loglik(down, spends)[0]) / (2 * step)
        assert gradient[i] == pytest.approx(numeric, rel=1e-5)


def test_recovers_known_parameters_from_simulated_customers() -> None:
    """40,000 customers with 1-20 repeat purchases; every estimate within 4 standard
    errors and 10% of the truth."""
    rng = np.random.default_rng(2013)
    truth = GammaGammaParams(p=6.0, q=4.0, v=15.0)
    x = rng.integers(1, 21, 40_000).astype(np.float64)
    m = simulate_spend(truth, x, rng)

    fit = fit_gamma_gamma(x, m)

    assert fit.converged
    assert log_likelihood(fit.params, x, m) == pytest.approx(fit.log_likelihood)
    for name, true_value in truth.as_dict().items():
        estimate = fit.params.as_dict()[name]
        assert abs(estimate - true_value) < 4 * fit.standard_errors[name], name
        assert estimate == pytest.approx(true_value, rel=0.1), name


def test_extreme_customers_get_finite_sensible_spend() -> None:
    params = PUBLISHED
    x = np.array([0.0, 1.0, 500.0, 500.0])
    m = np.array([0.0, 40.0, 40.0, 1e7])

    spend = expected_spend(params, x, m)

    assert np.all(np.isfinite(spend))
    assert spend[0] == pytest.approx(params.population_mean)  # nothing known: the mean
    assert params.population_mean < spend[1] < 40.0  # shrunk towards the mean
    assert spend[2] == pytest.approx(40.0, rel=0.01)  # 500 purchases speak for themselves
    assert spend[3] == pytest.approx(1e7, rel=0.01)


def test_invalid_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="monetary"):
        fit_gamma_gamma([1, 2, 3], [10.0, -1.0, 3.0])
    with pytest.raises(ValueError, match="at least two"):
        fit_gamma_gamma([0, 1], [0.0, 3.0])
