"""RFM: recency, frequency and monetary quintile scores and the usual named segments.

Scores run from 1 (worst fifth) to 5 (best fifth). Ties go to the lower score, so when
most customers share a value (e.g. one purchase) they all get the lowest score rather
than an arbitrary spread.

Segments are read from R and FM = ⌈(F + M) / 2⌉ on this grid (rows R, columns FM):

    R\\FM  1                   2                   3                   4          5
    5     New                 Potential loyalist  Potential loyalist  Champions  Champions
    4     Promising           Potential loyalist  Potential loyalist  Loyal      Loyal
    3     About to sleep      About to sleep      Need attention      Loyal      Loyal
    2     Hibernating         Hibernating         At risk             At risk    Can't lose them
    1     Lost                Lost                At risk             At risk    Can't lose them

It is the widely used R*F segment map, with FM instead of F so that big spenders with
few visits count, and the bottom-left corner split into Hibernating and Lost.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.scoring.clv.sufficient import as_column

__all__ = ["SEGMENTS", "quintile", "quintile_edges", "rfm_segment"]

SEGMENTS = (
    "Champions",
    "Loyal",
    "Potential loyalist",
    "New",
    "Promising",
    "Need attention",
    "About to sleep",
    "At risk",
    "Can't lose them",
    "Hibernating",
    "Lost",
)

_GRID: dict[int, tuple[str, str, str, str, str]] = {
    5: ("New", "Potential loyalist", "Potential loyalist", "Champions", "Champions"),
    4: ("Promising", "Potential loyalist", "Potential loyalist", "Loyal", "Loyal"),
    3: ("About to sleep", "About to sleep", "Need attention", "Loyal", "Loyal"),
    2: ("Hibernating", "Hibernating", "At risk", "At risk", "Can't lose them"),
    1: ("Lost", "Lost", "At risk", "At risk", "Can't lose them"),
}


def quintile_edges(values: ArrayLike) -> list[float]:
    """The 20th, 40th, 60th and 80th percentiles of `values` (larger = better).

    For recency pass something where larger is better, e.g. minus the days since the
    last purchase. Empty input gives no edges, so every score is 1.
    """
    array = as_column("values", values)
    if len(array) == 0:
        return []
    return [float(v) for v in np.quantile(array, [0.2, 0.4, 0.6, 0.8])]


def quintile(values: ArrayLike, edges: list[float]) -> NDArray[np.int64]:
    """Score 1..5: one plus the number of edges strictly below the value."""
    array = as_column("values", values)
    return (
        np.searchsorted(np.asarray(edges, dtype=np.float64), array, side="left").astype(np.int64)
        + 1
    )


def rfm_segment(r: int, f: int, m: int) -> str:
    """The named segment of one customer's scores (see the grid in the module docstring)."""
    for name, score in (("r", r), ("f", f), ("m", m)):
        if not 1 <= score <= 5:
            raise ValueError(f"{name} score must be between 1 and 5, got {score}")
    fm = (f + m + 1) // 2
    return _GRID[r][fm - 1]
