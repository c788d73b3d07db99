"""Benchmark of the CLV models: fitting BG/NBD + Gamma-Gamma and scoring every customer,
for this project (`services.scoring.clv`) and for `lifetimes` 0.11.3 on the same data.

Run with `python -m bench.scoring`; `--quick` uses 10,000 customers (seconds), the full run
100,000 and 1,000,000 (a few minutes, most of it `lifetimes`); `--help` lists the knobs.

What runs
    For each size, customers are simulated from the models themselves with the CDNOW
    estimates (BG/NBD r=0.243, alpha=4.414, a=0.793, b=2.426 per week; Gamma-Gamma p=6.25,
    q=3.74, v=15.44), ages uniform over 1-730 days and purchases recorded by day, as the
    service records them, then expressed in weeks. Both libraries get the same arrays.

    This project: `fit_bgnbd` and `fit_gamma_gamma` (with the independence check), then,
    in chunks of 200,000 customers as the service streams them, P(alive), expected
    purchases in 52 weeks and the discounted CLV (12 monthly steps of 4.345 weeks, 1% a
    month, margin 1). `lifetimes`: `BetaGeoFitter.fit`, `GammaGammaFitter.fit` on the
    repeat customers, then `conditional_probability_alive`,
    `conditional_expected_number_of_purchases_up_to_time(52)` and
    `customer_lifetime_value(time=12, discount_rate=0.01, freq="W")` on pandas Series.
    `lifetimes` runs in a child process (it regenerates the same data from the seed) with
    a time limit (`--lifetimes-limit`, 120 s): past it, the child is stopped and
    `lifetimes` is timed again on the first `--subsample` customers, its times scaled
    linearly to the full size and marked "extrapolated".

What is measured
    Wall-clock seconds for fit (both models) and score (all customers), their sum, and
    the ratio lifetimes / ours. The log-likelihoods of both fits are evaluated on the
    full data by one yardstick, this project's likelihood functions (summed over
    customers, in weeks), because `lifetimes` reports its own on internally rescaled
    times; "LL gain" = ours - lifetimes, so >= 0 means our optimum is at least as good.
    Each side first fits 2,000 customers untimed, so one-off import and first-call costs
    are not counted for either.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.scoring.clv import bgnbd, gamma_gamma
from services.scoring.clv.bgnbd import BgNbdParams
from services.scoring.clv.gamma_gamma import GammaGammaParams
from services.scoring.clv.mle import FloatArray
from services.scoring.clv.simulate import simulate_bgnbd, simulate_spend
from services.scoring.clv.sufficient import compress
from services.scoring.clv.value import discounted_clv

TRUE_BG = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
TRUE_GG = GammaGammaParams(p=6.25, q=3.74, v=15.44)
MAX_AGE_DAYS = 730
WEEKS_PER_MONTH = 4.345  # lifetimes' own factor for freq="W"
MONTHS = 12
MONTHLY_DISCOUNT = 0.01
HORIZON_WEEKS = 52.0
CHUNK = 200_000
WARM_UP = 2_000


@dataclass(frozen=True)
class Data:
    frequency: FloatArray
    recency: FloatArray
    T: FloatArray
    monetary: FloatArray


@dataclass
class Outcome:
    """One library on one size; seconds unless the name says otherwise."""

    library: str
    customers: int
    fit_seconds: float = float("nan")
    score_seconds: float = float("nan")
    bgnbd: dict[str, float] | None = None
    gamma_gamma: dict[str, float] | None = None
    bgnbd_ll: float = float("nan")
    gamma_gamma_ll: float = float("nan")
    note: str = ""

    @property
    def total(self) -> float:
        return self.fit_seconds + self.score_seconds


def simulate(size: int, seed: int) -> Data:
    """`size` customers from the BG/NBD and Gamma-Gamma processes, by day, in weeks."""
    rng = np.random.default_rng(seed)
    age = rng.integers(1, MAX_AGE_DAYS + 1, size).astype(np.float64) / 7.0
    frequency, recency = simulate_bgnbd(TRUE_BG, age, rng, day=1 / 7)
    monetary = simulate_spend(TRUE_GG, frequency, rng)
    return Data(frequency, recency, age, monetary)


# ---------------------------------------------------------------------------- ours


def run_ours(data: Data) -> Outcome:
    outcome = Outcome("this project", len(data.frequency))
    began = time.perf_counter()
    bg = bgnbd.fit_bgnbd(data.frequency, data.recency, data.T)
    gg = gamma_gamma.fit_gamma_gamma(data.frequency, data.monetary)
    gamma_gamma.independence_check(data.frequency, data.monetary)
    outcome.fit_seconds = time.perf_counter() - began

    began = time.perf_counter()
    weekly = (1 + MONTHLY_DISCOUNT) ** (1 / WEEKS_PER_MONTH) - 1
    for start in range(0, len(data.frequency), CHUNK):
        part = slice(start, start + CHUNK)
        x, t_x, age, m = data.frequency[part], data.recency[part], data.T[part], data.monetary[part]
        bgnbd.probability_alive(bg.params, x, t_x, age)
        bgnbd.expected_purchases(bg.params, HORIZON_WEEKS, x, t_x, age)
        discounted_clv(
            bg.params,
            gg.params,
            x,
            t_x,
            age,
            m,
            horizon=MONTHS * WEEKS_PER_MONTH,
            margin=1.0,
            discount_rate_per_unit=weekly,
            steps=MONTHS,
        )
    outcome.score_seconds = time.perf_counter() - began
    outcome.bgnbd = bg.params.as_dict()
    outcome.gamma_gamma = gg.params.as_dict()
    outcome.note = f"{bg.iterations} + {gg.iterations} iterations"
    return outcome


# ---------------------------------------------------------------------------- lifetimes


def lifetimes_worker(size: int, seed: int, subsample: int | None) -> dict[str, Any]:
    """Time `lifetimes` in this (child) process on the same simulated data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pandas as pd  # type: ignore[import-untyped]
        from lifetimes import BetaGeoFitter, GammaGammaFitter  # type: ignore[import-untyped]

    data = simulate(size, seed)
    count = subsample or size
    frame = pd.DataFrame(
        {
            "frequency": data.frequency[:count],
            "recency": data.recency[:count],
            "T": data.T[:count],
            "monetary_value": data.monetary[:count],
        }
    )
    x, t_x, age, m = (frame[c] for c in ("frequency", "recency", "T", "monetary_value"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warm = slice(0, WARM_UP)
        BetaGeoFitter().fit(x[warm], t_x[warm], age[warm])  # untimed, as for ours
        began = time.perf_counter()
        bgf = BetaGeoFitter().fit(x, t_x, age)
        repeat = x > 0
        ggf = GammaGammaFitter().fit(x[repeat], m[repeat])
        np.corrcoef(x[repeat], m[repeat])
        fit_seconds = time.perf_counter() - began

        began = time.perf_counter()
        bgf.conditional_probability_alive(x, t_x, age)
        bgf.conditional_expected_number_of_purchases_up_to_time(HORIZON_WEEKS, x, t_x, age)
        ggf.customer_lifetime_value(
            bgf, x, t_x, age, m, time=MONTHS, discount_rate=MONTHLY_DISCOUNT, freq="W"
        )
        score_seconds = time.perf_counter() - began
    return {
        "customers": count,
        "fit_seconds": fit_seconds,
        "score_seconds": score_seconds,
        "bgnbd": {k: float(v) for k, v in bgf.params_.items()},
        "gamma_gamma": {k: float(v) for k, v in ggf.params_.items()},
    }


def _child(size: int, seed: int, subsample: int | None, limit: float) -> dict[str, Any] | None:
    command = [sys.executable, "-m", "bench.scoring", "--lifetimes-worker", str(size)]
    command += ["--seed", str(seed)]
    if subsample:
        command += ["--subsample", str(subsample)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, check=True)
    except subprocess.TimeoutExpired:
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_lifetimes(size: int, seed: int, options: Options) -> Outcome:
    outcome = Outcome("lifetimes 0.11.3", size)
    result = _child(size, seed, None, options.lifetimes_limit)
    if result is None:
        sample = min(options.subsample, size)
        result = _child(size, seed, sample, 10 * options.lifetimes_limit)
        if result is None:
            outcome.note = f"over {options.lifetimes_limit:g} s, and again on {sample:,}"
            return outcome
        scale = size / sample
        result["fit_seconds"] *= scale
        result["score_seconds"] *= scale
        outcome.note = (
            f"over {options.lifetimes_limit:g} s at {size:,}: timed on the first {sample:,} "
            f"customers and extrapolated x{scale:g}; params from that subsample"
        )
    outcome.fit_seconds = result["fit_seconds"]
    outcome.score_seconds = result["score_seconds"]
    outcome.bgnbd = result["bgnbd"]
    outcome.gamma_gamma = result["gamma_gamma"]
    return outcome


# ---------------------------------------------------------------------------- report


def score_likelihoods(outcome: Outcome, data: Data) -> None:
    """Both models' summed log-likelihoods on the full data, by our functions."""
    if outcome.bgnbd is not None:
        outcome.bgnbd_ll = bgnbd.log_likelihood(
            BgNbdParams(**outcome.bgnbd), data.frequency, data.recency, data.T
        )
    if outcome.gamma_gamma is not None:
        outcome.gamma_gamma_ll = gamma_gamma.log_likelihood(
            GammaGammaParams(**outcome.gamma_gamma), data.frequency, data.monetary
        )


def _n(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"


def render(rows: Sequence[tuple[Outcome, Outcome, int]]) -> str:
    header = (
        f"{'customers':>10} {'triples':>8} {'library':<17} {'fit s':>8} {'score s':>8} "
        f"{'total s':>8} {'ratio':>7} {'BG/NBD LL':>15} {'LL gain':>9} {'GG LL':>14} "
        f"{'LL gain':>9}  note"
    )
    lines = [header, "-" * len(header)]
    for ours, theirs, triples in rows:
        ratio = theirs.total / ours.total
        for outcome in (ours, theirs):
            mine = outcome is ours
            lines.append(
                f"{outcome.customers if mine else theirs.customers:>10,} "
                f"{triples if mine else '':>8} {outcome.library:<17} "
                f"{_n(outcome.fit_seconds):>8} {_n(outcome.score_seconds):>8} "
                f"{_n(outcome.total):>8} "
                f"{'' if mine else _n(ratio, 1) + 'x':>7} {_n(outcome.bgnbd_ll, 1):>15} "
                f"{'' if mine else _n(ours.bgnbd_ll - theirs.bgnbd_ll, 3):>9} "
                f"{_n(outcome.gamma_gamma_ll, 1):>14} "
                f"{'' if mine else _n(ours.gamma_gamma_ll - theirs.gamma_gamma_ll, 3):>9}  "
                f"{outcome.note}"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main


@dataclass(frozen=True)
class Options:
    sizes: list[int]
    seed: int
    lifetimes_limit: float
    subsample: int
    json_path: Path | None


def parse(argv: Sequence[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scoring",
        description="BG/NBD + Gamma-Gamma fit and scoring: this project vs lifetimes.",
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="10,000 customers only")
    add("--sizes", nargs="+", type=int, help="customer counts (100000 1000000)")
    add("--seed", type=int, default=2005)
    add("--lifetimes-limit", type=float, default=120.0, help="s before subsampling (120)")
    add("--subsample", type=int, help="lifetimes customers past the limit (200000)")
    add("--json", type=Path, dest="json_path", help="also write the raw results here")
    add("--lifetimes-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = args.sizes or ([10_000] if args.quick else [100_000, 1_000_000])
    return (
        Options(sizes, args.seed, args.lifetimes_limit, args.subsample or 200_000, args.json_path),
        args,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m bench.scoring`."""
    options, args = parse(argv)
    if args.lifetimes_worker:
        print(json.dumps(lifetimes_worker(args.lifetimes_worker, options.seed, args.subsample)))
        return
    rows = []
    run_ours(simulate(WARM_UP, options.seed))  # untimed: first calls load and compile
    for size in options.sizes:
        data = simulate(size, options.seed + size)
        triples = len(compress(data.frequency, data.recency, data.T)[1])
        ours = run_ours(data)
        print(f"{size:,}: ours {ours.total:.2f} s", file=sys.stderr, flush=True)
        theirs = run_lifetimes(size, options.seed + size, options)
        print(f"{size:,}: lifetimes {theirs.total:.2f} s", file=sys.stderr, flush=True)
        for outcome in (ours, theirs):
            score_likelihoods(outcome, data)
        rows.append((ours, theirs, triples))
    print(
        "Scoring benchmark: BG/NBD + Gamma-Gamma fit, then P(alive), expected purchases "
        f"in {HORIZON_WEEKS:g} weeks and discounted CLV ({MONTHS} monthly steps, "
        f"{MONTHLY_DISCOUNT:.0%}/month) for every customer; simulated from the CDNOW "
        f"estimates, ages 1-{MAX_AGE_DAYS} days, purchases by day, time unit weeks; "
        f"cpus={os.cpu_count()}"
    )
    print(
        "triples = distinct (frequency, recency, T) our fit runs on; ratio = lifetimes "
        "total / ours; LL = summed log-likelihood on the full data by our functions; "
        "LL gain = ours - lifetimes (>= 0: at least as good)"
    )
    print(render(rows))
    goal = all(
        theirs.total / ours.total >= 10
        and ours.bgnbd_ll >= theirs.bgnbd_ll - 1e-6
        and ours.gamma_gamma_ll >= theirs.gamma_gamma_ll - 1e-6
        for ours, theirs, _ in rows
    )
    print(
        "Goal (>= 10x faster than lifetimes at equal or better log-likelihood): "
        + ("reached" if goal else "NOT reached")
    )
    raw = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "rows": [{"triples": t, "ours": asdict(o), "lifetimes": asdict(lt)} for o, lt, t in rows],
    }
    print("\nRaw results (JSON):")
    print(json.dumps(raw))
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(raw, indent=2) + "\n")


if __name__ == "__main__":
    main()
