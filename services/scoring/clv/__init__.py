"""CLV models on numpy arrays: BG/NBD, Gamma-Gamma, discounted CLV and RFM.

Pure functions with no database and no HTTP; the service and the `crm scoring fit`
command feed them per-customer summaries in one time unit (days or weeks).
"""

from services.scoring.clv.bgnbd import (
    BgNbdParams,
    expected_purchases,
    expected_purchases_new,
    fit_bgnbd,
    probability_alive,
)
from services.scoring.clv.gamma_gamma import (
    GammaGammaParams,
    expected_spend,
    fit_gamma_gamma,
    independence_check,
)
from services.scoring.clv.mle import Fit
from services.scoring.clv.rfm import SEGMENTS, quintile, quintile_edges, rfm_segment
from services.scoring.clv.value import discounted_clv, simple_clv

__all__ = [
    "SEGMENTS",
    "BgNbdParams",
    "Fit",
    "GammaGammaParams",
    "discounted_clv",
    "expected_purchases",
    "expected_purchases_new",
    "expected_spend",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "independence_check",
    "probability_alive",
    "quintile",
    "quintile_edges",
    "rfm_segment",
    "simple_clv",
]
