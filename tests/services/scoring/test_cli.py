"""`crm scoring fit FILE.csv` on transactions and on per-customer summaries."""

from __future__ import annotations

import csv
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from crm.cli import app
from services.scoring.cli import summarise_transactions
from services.scoring.clv.bgnbd import BgNbdParams
from tests.services.scoring.cdnow import cdnow

runner = CliRunner()


def fit(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["scoring", "fit", *args])
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


@pytest.fixture
def transactions(tmp_path: Path) -> Path:
    """600 customers of up to two years, buying and dropping out as BG/NBD says, by day."""
    rng = np.random.default_rng(7)
    truth = BgNbdParams(r=0.6, alpha=40.0, a=0.8, b=3.0)  # in days
    end = date(2025, 12, 31)
    path = tmp_path / "transactions.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer_id", "date", "amount"])
        for number in range(600):
            age = float(rng.integers(30, 730))
            rate = rng.gamma(truth.r, 1 / truth.alpha)
            dropout = rng.beta(truth.a, truth.b)
            first = end - timedelta(days=int(age))
            moments, now = [0.0], 0.0
            while True:
                now += rng.exponential(1 / rate)
                if now > age:
                    break
                moments.append(now)
                if rng.random() < dropout:
                    break
            for moment in moments:
                when = first + timedelta(days=int(moment))
                writer.writerow([f"c{number}", when.isoformat(), round(rng.gamma(6.0, 5.0), 2)])
    return path


def test_transactions_are_summarised_the_lifetimes_way() -> None:
    rows = [
        {"customer_id": "a", "date": "2024-01-01", "amount": "10"},
        {"customer_id": "a", "date": "2024-01-01T15:30:00", "amount": "5"},
        {"customer_id": "a", "date": "2024-01-08", "amount": "20"},
        {"customer_id": "a", "date": "2024-01-15", "amount": "30"},
        {"customer_id": "b", "date": "2024-01-10", "amount": "7.5"},
    ]

    data = summarise_transactions(
        rows,
        customer="customer_id",
        when="date",
        amount="amount",
        unit="days",
        observation_end=None,
    )

    assert data.frequency.tolist() == [2.0, 0.0]
    assert data.recency.tolist() == [14.0, 0.0]
    assert data.T.tolist() == [14.0, 5.0]
    assert data.monetary is not None
    assert data.monetary.tolist() == [25.0, 0.0]  # repeat days only; day one is 15


def test_fits_transactions_in_days_and_weeks(transactions: Path) -> None:
    days = fit(str(transactions), "--time-unit", "days")
    weeks = fit(str(transactions), "--time-unit", "weeks")

    assert days["time_unit"] == "days"
    assert days["customers"] == weeks["customers"] == 600
    for document in (days, weeks):
        assert document["bgnbd"]["converged"]
        assert np.isfinite(document["bgnbd"]["log_likelihood"])
        assert document["gamma_gamma"]["converged"]
        assert set(document["gamma_gamma"]["params"]) == {"p", "q", "v"}
        assert -1 <= document["gamma_gamma"]["frequency_spend_correlation"] <= 1
    # Changing the unit rescales time only: alpha (a time scale) by 7, the rest unchanged.
    assert days["bgnbd"]["params"]["alpha"] == pytest.approx(
        7 * weeks["bgnbd"]["params"]["alpha"], rel=1e-4
    )
    for name in ("r", "a", "b"):
        assert days["bgnbd"]["params"][name] == pytest.approx(
            weeks["bgnbd"]["params"][name], rel=1e-4
        )
    assert days["gamma_gamma"]["params"] == pytest.approx(weeks["gamma_gamma"]["params"])


def test_fits_cdnow_summaries_to_the_published_estimates(tmp_path: Path) -> None:
    data = cdnow()
    path = tmp_path / "cdnow.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer_id", "frequency", "recency", "T", "monetary_value"])
        for row in zip(
            *(data[c] for c in ("frequency", "recency", "T", "monetary_value")), strict=True
        ):
            writer.writerow(["x", *row])

    document = fit(str(path), "--time-unit", "weeks")

    assert document["bgnbd"]["params"]["r"] == pytest.approx(0.243, abs=5e-4)
    assert document["bgnbd"]["log_likelihood"] == pytest.approx(-9582.4, abs=0.05)
    assert document["gamma_gamma"]["params"]["p"] == pytest.approx(6.25, abs=5e-3)


def test_summaries_without_spend_fit_bgnbd_only(tmp_path: Path) -> None:
    path = tmp_path / "summaries.csv"
    path.write_text("frequency,recency,T\n2,30.43,38.86\n1,1.71,38.86\n0,0,38.86\n0,0,38.86\n")

    document = fit(str(path), "--time-unit", "weeks")

    assert document["customers"] == 4
    assert document["gamma_gamma"] is None
    assert np.isfinite(document["bgnbd"]["log_likelihood"])


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("who,when\nx,2024-01-01\n", [], "missing"),
        ("customer_id,date,amount\nx,yesterday,3\n", [], "not an ISO date"),
        ("frequency,recency,T\n1,5,2\n", [], "recency"),
        ("frequency,recency,T\n1,1,2\n", ["--time-unit", "months"], "days or weeks"),
    ],
)
def test_bad_input_is_a_clear_error(
    tmp_path: Path, content: str, args: list[str], message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)

    result = runner.invoke(app, ["scoring", "fit", str(path), *args])

    assert result.exit_code == 2
    assert message in result.output
