"""Sufficient statistics: customers with identical inputs share one likelihood term.

The BG/NBD likelihood of a customer depends only on (frequency, recency, T), and the
Gamma-Gamma one only on (frequency, monetary). Purchases are recorded by day, so a real
customer base has far fewer distinct triples than customers (every non-repeat customer of
one signup day is the same triple). Fitting on the distinct rows weighted by their counts
gives the same log-likelihood as summing over every customer, at a fraction of the cost.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


def as_column(name: str, values: ArrayLike) -> FloatArray:
    """`values` as a finite 1-D float array, or ValueError naming the column."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite numbers")
    return array


def compress(*columns: FloatArray) -> tuple[list[FloatArray], FloatArray]:
    """The distinct rows of equally long `columns` and how many times each occurs.

    Returns (one array per column, holding the distinct rows; the counts as floats, to be
    used as likelihood weights). Rows come out in lexicographic order.
    """
    if not columns:
        raise ValueError("no columns")
    size = len(columns[0])
    if any(len(column) != size for column in columns):
        raise ValueError("columns differ in length")
    if size == 0:
        return [column.copy() for column in columns], np.zeros(0)
    # lexsort sorts by the last key first, hence the reversal; then a row starts a new
    # group where any column differs from the previous row.
    order = np.lexsort(columns[::-1])
    ordered = [column[order] for column in columns]
    starts = np.ones(size, dtype=bool)
    changed = np.zeros(size - 1, dtype=bool)
    for column in ordered:
        changed |= column[1:] != column[:-1]
    starts[1:] = changed
    first = np.flatnonzero(starts)
    counts = np.diff(np.append(first, size)).astype(np.float64)
    return [column[first] for column in ordered], counts


def distinct_rows(*columns: FloatArray) -> tuple[list[FloatArray], NDArray[np.intp]]:
    """The distinct rows of `columns` and, per input row, the index of its distinct row.

    For predictions whose costly part depends on a few columns only (e.g. the
    hypergeometric term of BG/NBD on frequency and T): compute on the distinct rows, then
    gather with the index.
    """
    size = len(columns[0])
    if size == 0:
        return [column.copy() for column in columns], np.zeros(0, dtype=np.intp)
    order = np.lexsort(columns[::-1])
    ordered = [column[order] for column in columns]
    changed = np.zeros(size - 1, dtype=bool)
    for column in ordered:
        changed |= column[1:] != column[:-1]
    group = np.concatenate(([0], np.cumsum(changed))).astype(np.intp)
    inverse = np.empty(size, dtype=np.intp)
    inverse[order] = group
    starts = np.concatenate(([True], changed))
    return [column[starts] for column in ordered], inverse
