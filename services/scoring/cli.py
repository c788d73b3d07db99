"""`crm scoring fit FILE.csv`: fit BG/NBD and Gamma-Gamma to an analyst's CSV.

The CSV holds either transactions (a customer id, a date and an amount per row) or one
summary per customer in the `lifetimes` conventions (`frequency`, `recency`, `T`, optional
`monetary_value`, already in the chosen time unit). Transactions are summarised the way the
service does it: purchases on the same day are one purchase (amounts added), frequency is
the number of purchase days after the first, recency the age of the last purchase day, T
the age at the end of the observation (the last date in the file unless given), and
monetary_value the mean spend of the repeat purchase days. Output is JSON on stdout.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer

from services.scoring.clv.bgnbd import fit_bgnbd
from services.scoring.clv.gamma_gamma import fit_gamma_gamma, independence_check
from services.scoring.clv.mle import Fit, FloatArray

app = typer.Typer(help="Customer-value models for analysts.", no_args_is_help=True)

TimeUnit = Literal["days", "weeks"]
DAYS_PER_UNIT: dict[str, float] = {"days": 1.0, "weeks": 7.0}
SUMMARY_COLUMNS = ("frequency", "recency", "T")


@app.callback()
def scoring() -> None:
    """Customer-value models for analysts."""
    # A callback keeps `scoring` a command group even while it has a single command.


@dataclass(frozen=True)
class Summaries:
    """Per-customer inputs of the models, in one time unit."""

    frequency: FloatArray
    recency: FloatArray
    T: FloatArray
    monetary: FloatArray | None


class InputError(ValueError):
    """The file cannot be read as transactions or summaries; the message says why."""


def _number(row: dict[str, str], column: str, line: int) -> float:
    try:
        value = float(row[column])
    except (TypeError, ValueError):
        raise InputError(f"line {line}: {column} is not a number: {row[column]!r}") from None
    if not math.isfinite(value):
        raise InputError(f"line {line}: {column} must be finite")
    return value


def _day(text: str, line: int) -> date:
    try:
        return date.fromisoformat(text.strip()[:10])
    except ValueError:
        raise InputError(f"line {line}: not an ISO date: {text!r}") from None


def read_summaries(rows: list[dict[str, str]], columns: list[str]) -> Summaries:
    """Rows already in the `lifetimes` summary form."""
    with_monetary = "monetary_value" in columns
    frequency, recency, age, monetary = [], [], [], []
    for line, row in enumerate(rows, start=2):
        frequency.append(_number(row, "frequency", line))
        recency.append(_number(row, "recency", line))
        age.append(_number(row, "T", line))
        if with_monetary:
            monetary.append(_number(row, "monetary_value", line))
    return Summaries(
        np.array(frequency),
        np.array(recency),
        np.array(age),
        np.array(monetary) if with_monetary else None,
    )


def summarise_transactions(
    rows: list[dict[str, str]],
    *,
    customer: str,
    when: str,
    amount: str,
    unit: TimeUnit,
    observation_end: date | None,
) -> Summaries:
    """Transactions -> per-customer summaries (see the module docstring)."""
    spend_by_day: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for line, row in enumerate(rows, start=2):
        key = (row.get(customer) or "").strip()
        if not key:
            raise InputError(f"line {line}: {customer} is empty")
        spend_by_day[key][_day(row[when], line)] += _number(row, amount, line)
    if not spend_by_day:
        raise InputError("the file has no transactions")
    end = observation_end or max(max(days) for days in spend_by_day.values())
    scale = DAYS_PER_UNIT[unit]
    frequency, recency, age, monetary = [], [], [], []
    for days in spend_by_day.values():
        ordered = sorted(days)
        first = ordered[0]
        if first > end:
            raise InputError(f"a purchase on {first} is after the observation end {end}")
        repeat = [days[d] for d in ordered[1:] if d <= end]
        frequency.append(float(len(repeat)))
        last = max(d for d in ordered if d <= end)
        recency.append((last - first).days / scale)
        age.append((end - first).days / scale)
        monetary.append(sum(repeat) / len(repeat) if repeat else 0.0)
    return Summaries(np.array(frequency), np.array(recency), np.array(age), np.array(monetary))


def load(
    path: Path,
    *,
    customer: str,
    when: str,
    amount: str,
    unit: TimeUnit,
    observation_end: date | None,
) -> Summaries:
    """Read `path` as summaries when it has their columns, else as transactions."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        rows = list(reader)
    if all(column in columns for column in SUMMARY_COLUMNS):
        return read_summaries(rows, columns)
    missing = [c for c in (customer, when, amount) if c not in columns]
    if missing:
        raise InputError(
            f"columns {columns} are neither summaries ({', '.join(SUMMARY_COLUMNS)}) nor "
            f"transactions: missing {', '.join(missing)} (see --customer-column, "
            "--date-column, --amount-column)"
        )
    return summarise_transactions(
        rows,
        customer=customer,
        when=when,
        amount=amount,
        unit=unit,
        observation_end=observation_end,
    )


def _fit_json(fit: Fit[Any]) -> dict[str, Any]:
    return {
        "params": fit.params.as_dict(),
        "standard_errors": fit.standard_errors,
        "log_likelihood": fit.log_likelihood,
        "customers": fit.customers,
        "iterations": fit.iterations,
        "converged": fit.converged,
    }


def fit_summaries(data: Summaries, unit: TimeUnit) -> dict[str, Any]:
    """Both models on `data`, as the JSON document the command prints."""
    bg = fit_bgnbd(data.frequency, data.recency, data.T)
    result: dict[str, Any] = {
        "time_unit": unit,
        "customers": len(data.frequency),
        "bgnbd": _fit_json(bg),
        "gamma_gamma": None,
    }
    if data.monetary is not None and int(np.sum(data.frequency > 0)) >= 2:
        gg = fit_gamma_gamma(data.frequency, data.monetary)
        correlation = independence_check(data.frequency, data.monetary)
        result["gamma_gamma"] = {
            **_fit_json(gg),
            "frequency_spend_correlation": None if math.isnan(correlation) else correlation,
        }
    return result


@app.command("fit")
def fit_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    time_unit: Annotated[
        str, typer.Option("--time-unit", help="days or weeks (summaries must already be in it)")
    ] = "weeks",
    customer_column: Annotated[str, typer.Option(help="transactions: customer id")] = (
        "customer_id"
    ),
    date_column: Annotated[str, typer.Option(help="transactions: ISO date")] = "date",
    amount_column: Annotated[str, typer.Option(help="transactions: amount")] = "amount",
    observation_end: Annotated[
        str | None, typer.Option(help="transactions: ISO date; default the last date")
    ] = None,
) -> None:
    """Fit BG/NBD and Gamma-Gamma to a CSV and print parameters and log-likelihoods."""
    if time_unit not in DAYS_PER_UNIT:
        raise typer.BadParameter("must be days or weeks", param_hint="--time-unit")
    unit: TimeUnit = "days" if time_unit == "days" else "weeks"
    try:
        end = date.fromisoformat(observation_end) if observation_end else None
    except ValueError:
        raise typer.BadParameter("not an ISO date", param_hint="--observation-end") from None
    try:
        data = load(
            file,
            customer=customer_column,
            when=date_column,
            amount=amount_column,
            unit=unit,
            observation_end=end,
        )
        document = fit_summaries(data, unit)
    except ValueError as exc:  # InputError, and the models' own input checks
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(json.dumps(document, indent=2))
