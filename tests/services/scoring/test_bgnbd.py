"""BG/NBD: the published CDNOW estimates, agreement with `lifetimes`, recovery of known
parameters from simulated customers, and finite scores at the extremes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import betaln

from services.scoring.clv.bgnbd import (
    BgNbdParams,
    _expected_if_alive,
    _loglik,
    expected_purchases,
    expected_purchases_new,
    fit_bgnbd,
    log_likelihood,
    probability_alive,
)
from services.scoring.clv.simulate import simulate_bgnbd
from tests.services.scoring.cdnow import BetaGeoFitter, cdnow, same_to_3_significant_figures, series

PUBLISHED = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
"""Fader, Hardie & Lee (2005), CDNOW, weeks; LL = -9582.4."""


def test_reproduces_the_published_cdnow_estimates() -> None:
    data = cdnow()

    fit = fit_bgnbd(data["frequency"], data["recency"], data["T"])

    assert fit.converged
    assert fit.customers == 2357
    for name, published in PUBLISHED.as_dict().items():
        assert same_to_3_significant_figures(fit.params.as_dict()[name], published), name
    assert fit.log_likelihood == pytest.approx(-9582.4, abs=0.05)
    assert all(np.isfinite(se) and se > 0 for se in fit.standard_errors.values())


def test_agrees_with_lifetimes_on_parameters_errors_and_predictions() -> None:
    data = cdnow()
    x, t_x, age = data["frequency"], data["recency"], data["T"]
    theirs = BetaGeoFitter().fit(series(x), series(t_x), series(age))

    fit = fit_bgnbd(x, t_x, age)

    for name, value in fit.params.as_dict().items():
        assert value == pytest.approx(theirs.params_[name], rel=1e-4), name
        assert fit.standard_errors[name] == pytest.approx(
            theirs.summary.loc[name, "se(coef)"], rel=1e-3
        )
    same = BgNbdParams(**{k: float(v) for k, v in theirs.params_.items()})
    # lifetimes reports its likelihood on internally rescaled times (a constant apart), so
    # compare on ours: their optimum is no better than ours.
    assert log_likelihood(same, x, t_x, age) <= fit.log_likelihood + 1e-7
    assert log_likelihood(same, x, t_x, age) == pytest.approx(fit.log_likelihood, abs=1e-3)
    for horizon in (1.0, 39.0, 104.0):
        expected = theirs.conditional_expected_number_of_purchases_up_to_time(horizon, x, t_x, age)
        assert expected_purchases(same, horizon, x, t_x, age) == pytest.approx(
            np.asarray(expected), rel=1e-9
        )
    assert probability_alive(same, x, t_x, age) == pytest.approx(
        np.asarray(theirs.conditional_probability_alive(x, t_x, age)), rel=1e-12
    )
    horizons = np.array([0.5, 1.0, 39.0, 78.0])
    assert expected_purchases_new(same, horizons) == pytest.approx(
        np.asarray(theirs.expected_number_of_purchases_up_to_time(horizons)), rel=1e-9
    )


def test_the_analytic_gradient_matches_finite_differences() -> None:
    data = cdnow()
    x, t_x, age = data["frequency"], data["recency"], data["T"]
    distinct_x, index = np.unique(x, return_inverse=True)
    weights = np.ones_like(x)
    theta = np.array([0.3, 5.0, 0.9, 2.0])

    _, gradient = _loglik(theta, x, t_x, age, weights, distinct_x, index)

    for i in range(4):
        step = 1e-6 * theta[i]
        up, down = theta.copy(), theta.copy()
        up[i] += step
        down[i] -= step
        numeric = (
            _loglik(up, x, t_x, age, weights, distinct_x, index)[0]
            - _loglik(down, x, t_x, age, weights, distinct_x, index)[0]
        ) / (2 * step)
        assert gradient[i] == pytest.approx(numeric, rel=1e-5)


def test_the_fit_on_sufficient_statistics_has_the_per_customer_likelihood() -> None:
    data = cdnow()
    x, t_x, age = data["frequency"], data["recency"], data["T"]

    fit = fit_bgnbd(x, t_x, age)

    assert log_likelihood(fit.params, x, t_x, age) == pytest.approx(fit.log_likelihood)


def test_recovers_known_parameters_from_simulated_customers() -> None:
    """60,000 customers of ages 1-78 weeks; every estimate within 4 standard errors and
    10% of the truth."""
    rng = np.random.default_rng(20050301)
    truth = BgNbdParams(r=0.5, alpha=6.0, a=0.7, b=2.5)
    age = rng.uniform(1.0, 78.0, 60_000)
    x, t_x = simulate_bgnbd(truth, age, rng)

    fit = fit_bgnbd(x, t_x, age)

    assert fit.converged
    for name, true_value in truth.as_dict().items():
        estimate = fit.params.as_dict()[name]
        assert abs(estimate - true_value) < 4 * fit.standard_errors[name], name
        assert estimate == pytest.approx(true_value, rel=0.1), name


def test_a_warm_start_finds_the_same_optimum() -> None:
    data = cdnow()
    x, t_x, age = data["frequency"], data["recency"], data["T"]
    cold = fit_bgnbd(x, t_x, age)

    warm = fit_bgnbd(x, t_x, age, warm_start=BgNbdParams(r=0.25, alpha=4.0, a=0.8, b=2.5))

    for name, value in cold.params.as_dict().items():
        assert warm.params.as_dict()[name] == pytest.approx(value, rel=1e-5)


def _expected_if_alive_by_quadrature(params: BgNbdParams, t: float, x: float, age: float) -> float:
    """E[(1/p)(1 - (1 + p t/(alpha+T))^-(r+x))] with p ~ Beta(a, b+x), numerically."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    tau = t / (alpha + age)

    def integrand(p: float) -> float:
        density = np.exp((a - 1) * np.log(p) + (b + x - 1) * np.log1p(-p) - betaln(a, b + x))
        return float(-np.expm1(-(r + x) * np.log1p(p * tau)) / p * density)

    return float(quad(integrand, 0.0, 1.0, limit=200, points=[1e-6, 1e-3])[0])


@pytest.mark.parametrize(
    ("x", "t_x", "age"),
    [
        (500.0, 52.0, 52.1),  # a heavy buyer, weekly for ten years' worth in one year
        (300.0, 2000.0, 2080.0),  # forty years of age, still buying
        (2.0, 10.0, 2080.0),  # forty years of age, silent for decades
        (0.0, 0.0, 0.0),  # a brand-new customer
        (0.0, 0.0, 1e-9),
        (0.0, 0.0, 300.0),  # one purchase, long ago
        (1.0, 1e-6, 1e-6),
        (500.0, 1.0, 52.0),  # a heavy buyer, silent for a year
    ],
)
def test_extreme_customers_get_finite_sensible_scores(x: float, t_x: float, age: float) -> None:
    params = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)

    alive = probability_alive(params, [x], [t_x], [age])[0]
    expected = expected_purchases(params, 52.0, [x], [t_x], [age])[0]

    assert 0.0 <= alive <= 1.0
    assert np.isfinite(log_likelihood(params, [x], [t_x], [age]))
    assert np.isfinite(expected)
    assert expected >= 0.0
    # The transformed hypergeometric form equals the integral it stands for.
    if_alive = _expected_if_alive(params, np.array(52.0), np.array([x]), np.array([age]))[0]
    assert if_alive == pytest.approx(
        _expected_if_alive_by_quadrature(params, 52.0, x, age), rel=1e-6
    )
    assert expected == pytest.approx(alive * if_alive)


def test_extremes_order_as_common_sense_says() -> None:
    params = PUBLISHED
    heavy = expected_purchases(params, 52.0, [500.0], [52.0], [52.1])[0]
    lapsed_heavy = probability_alive(params, [500.0], [1.0], [52.0])[0]
    brand_new = expected_purchases(params, 52.0, [0.0], [0.0], [0.0])[0]

    assert 300 < heavy < 600  # about the pace they kept
    assert lapsed_heavy < 1e-100  # 51 silent weeks at ten purchases a week
    assert brand_new == pytest.approx(expected_purchases_new(params, 52.0))
    assert probability_alive(params, [0.0], [0.0], [5000.0])[0] == 1.0


def test_invalid_summaries_are_rejected() -> None:
    with pytest.raises(ValueError, match="recency"):
        fit_bgnbd([1, 2], [5.0, 1.0], [4.0, 3.0])
    with pytest.raises(ValueError, match="frequency"):
        fit_bgnbd([1.5], [1.0], [2.0])
    with pytest.raises(ValueError, match="finite"):
        probability_alive(PUBLISHED, [1.0], [np.nan], [2.0])
    with pytest.raises(ValueError, match="repeat"):
        fit_bgnbd([0, 0], [0, 0], [3.0, 4.0])


@pytest.mark.parametrize(("a", "b"), [(150.0, 1_500.0), (9.4e5, 8.5e6)])
def test_almost_no_dropout_still_predicts_finite_purchases(a: float, b: float) -> None:
    """Fits to shops whose customers hardly ever lapse drive a and b very high; the
    prediction must stay finite and below what the same buyers would make if none could
    drop out, (r + x) / (alpha + T) per unit of time."""
    params = BgNbdParams(r=1.01, alpha=5.97, a=a, b=b)
    x = np.array([0.0, 1.0, 5.0, 50.0])
    t_x = np.array([0.0, 3.0, 20.0, 30.0])
    age = np.array([10.0, 30.0, 30.0, 31.0])
    predicted = expected_purchases(params, np.full(4, 26.0), x, t_x, age)
    ceiling = (params.r + x) / (params.alpha + age) * 26.0
    assert np.all(np.isfinite(predicted))
    assert np.all(predicted > 0)
    assert np.all(predicted < ceiling)
    assert np.isfinite(expected_purchases_new(params, np.array([26.0]))).all()
