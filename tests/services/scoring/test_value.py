"""CLV: the textbook formula and the discounted model CLV, against `lifetimes`."""

from __future__ import annotations

import numpy as np
import pytest

from services.scoring.clv.bgnbd import BgNbdParams, expected_purchases
from services.scoring.clv.gamma_gamma import GammaGammaParams, expected_spend
from services.scoring.clv.value import discounted_clv, simple_clv
from tests.services.scoring.cdnow import BetaGeoFitter, GammaGammaFitter, cdnow, series

BG = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
GG = GammaGammaParams(p=6.25, q=3.74, v=15.44)


def test_simple_clv_is_the_textbook_product() -> None:
    value = simple_clv([50.0, 20.0], [4.0, 12.0], [3.0, 2.0], margin=0.3)

    assert value == pytest.approx([50 * 4 * 3 * 0.3, 20 * 12 * 2 * 0.3])
    with pytest.raises(ValueError, match="margin"):
        simple_clv([1.0], [1.0], [1.0], margin=1.5)


def test_discounted_clv_agrees_with_lifetimes() -> None:
    """lifetimes sums 12 monthly steps of 4.345 weeks, discounting month k by (1+d)^k."""
    data = cdnow()
    x, t_x, age, m = data["frequency"], data["recency"], data["T"], data["monetary_value"]
    columns = [series(column) for column in (x, t_x, age, m)]
    repeat = x > 0
    bgf = BetaGeoFitter().fit(*columns[:3])
    ggf = GammaGammaFitter().fit(columns[0][repeat], columns[3][repeat])
    bg = BgNbdParams(**{k: float(v) for k, v in bgf.params_.items()})
    gg = GammaGammaParams(**{k: float(v) for k, v in ggf.params_.items()})
    monthly = 0.01
    theirs = ggf.customer_lifetime_value(
        bgf, *columns, time=12, discount_rate=monthly, freq="W"
    ).to_numpy()

    ours = discounted_clv(
        bg,
        gg,
        x,
        t_x,
        age,
        m,
        horizon=12 * 4.345,
        margin=1.0,
        discount_rate_per_unit=(1 + monthly) ** (1 / 4.345) - 1,
        steps=12,
    )

    assert ours == pytest.approx(theirs, rel=1e-9)


def test_without_discounting_the_steps_telescope() -> None:
    x, t_x, age, m = [np.array(v) for v in ([3.0, 0.0], [20.0, 0.0], [30.0, 5.0], [40.0, 0.0])]

    value = discounted_clv(
        BG, GG, x, t_x, age, m, horizon=52.0, margin=0.3, discount_rate_per_unit=0.0, steps=7
    )

    expected = 0.3 * expected_spend(GG, x, m) * expected_purchases(BG, 52.0, x, t_x, age)
    assert value == pytest.approx(expected)
    assert value[1] > 0  # no repeat purchase yet: valued at the population mean spend


def test_discounting_margin_and_horizon_move_value_the_right_way() -> None:
    args = (BG, GG, [3.0], [20.0], [30.0], [40.0])
    base = discounted_clv(*args, horizon=52.0, margin=0.3, discount_rate_per_unit=0.002)[0]

    assert discounted_clv(*args, horizon=52.0, margin=0.3, discount_rate_per_unit=0.01)[0] < base
    assert discounted_clv(*args, horizon=104.0, margin=0.3, discount_rate_per_unit=0.002)[0] > base
    assert discounted_clv(*args, horizon=52.0, margin=0.6, discount_rate_per_unit=0.002)[
        0
    ] == pytest.approx(2 * base)
    assert discounted_clv(*args, horizon=0.0, margin=0.3, discount_rate_per_unit=0.002)[0] == 0


def test_without_a_spend_model_the_given_spend_is_used() -> None:
    value = discounted_clv(
        BG,
        None,
        [3.0],
        [20.0],
        [30.0],
        [40.0],
        horizon=52.0,
        margin=0.5,
        discount_rate_per_unit=0.0,
    )

    assert value[0] == pytest.approx(
        0.5 * 40.0 * expected_purchases(BG, 52.0, [3.0], [20.0], [30.0])[0]
    )


def test_extreme_customers_have_finite_value() -> None:
    x = np.array([500.0, 0.0, 0.0, 300.0, 2.0])
    t_x = np.array([52.0, 0.0, 0.0, 2000.0, 10.0])
    age = np.array([52.1, 0.0, 1e-9, 2080.0, 2080.0])
    m = np.array([35.0, 0.0, 0.0, 1e6, 12.0])

    value = discounted_clv(
        BG, GG, x, t_x, age, m, horizon=52.0, margin=0.3, discount_rate_per_unit=0.0018
    )

    assert np.all(np.isfinite(value))
    assert np.all(value >= 0)
    assert value[0] > value[1] > value[4]
