"""The CDNOW sample (2,357 customers, weeks) from `lifetimes`, with its pkg_resources
warning silenced, and the `lifetimes` fitters the models are compared with."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from lifetimes import BetaGeoFitter, GammaGammaFitter  # type: ignore[import-untyped]
    from lifetimes.datasets import (  # type: ignore[import-untyped]
        load_cdnow_summary_data_with_monetary_value,
    )

from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from numpy.typing import ArrayLike, NDArray

__all__ = ["BetaGeoFitter", "GammaGammaFitter", "cdnow", "same_to_3_significant_figures", "series"]


def cdnow() -> dict[str, NDArray[np.float64]]:
    """frequency, recency, T and monetary_value columns of the CDNOW summary."""
    frame = load_cdnow_summary_data_with_monetary_value()
    return {
        column: frame[column].to_numpy(dtype=np.float64)
        for column in ("frequency", "recency", "T", "monetary_value")
    }


def same_to_3_significant_figures(value: float, published: float) -> bool:
    return f"{value:.3g}" == f"{published:.3g}"


def series(values: ArrayLike) -> Any:
    """A pandas Series, which the `lifetimes` fitters and CLV function want."""
    return pd.Series(np.asarray(values))
