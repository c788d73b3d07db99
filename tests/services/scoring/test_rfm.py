"""RFM quintiles and the named segments."""

from __future__ import annotations

import numpy as np
import pytest

from services.scoring.clv.rfm import SEGMENTS, quintile, quintile_edges, rfm_segment


def test_quintiles_split_distinct_values_into_fifths() -> None:
    values = np.arange(1.0, 101.0)

    scores = quintile(values, quintile_edges(values))

    assert np.bincount(scores)[1:].tolist() == [20, 20, 20, 20, 20]
    assert scores[0] == 1
    assert scores[-1] == 5


def test_ties_go_to_the_lower_score() -> None:
    values = np.array([1.0] * 70 + [2.0] * 20 + [9.0] * 10)  # most bought once

    scores = quintile(values, quintile_edges(values))

    assert set(scores[:70].tolist()) == {1}
    assert scores[70] < scores[-1] == 5


def test_no_customers_means_no_edges() -> None:
    assert quintile_edges([]) == []
    assert quintile([3.0], []).tolist() == [1]


@pytest.mark.parametrize(
    ("r", "f", "m", "segment"),
    [
        (5, 5, 5, "Champions"),
        (5, 4, 4, "Champions"),
        (4, 5, 4, "Loyal"),
        (3, 4, 4, "Loyal"),
        (5, 1, 1, "New"),
        (4, 1, 1, "Promising"),
        (5, 2, 3, "Potential loyalist"),
        (3, 3, 3, "Need attention"),
        (3, 1, 2, "About to sleep"),
        (2, 3, 4, "At risk"),
        (1, 5, 5, "Can't lose them"),
        (2, 1, 2, "Hibernating"),
        (1, 1, 1, "Lost"),
        (1, 1, 5, "At risk"),  # one big order long ago: F/M averaged, rounded up
    ],
)
def test_named_segments(r: int, f: int, m: int, segment: str) -> None:
    assert rfm_segment(r, f, m) == segment


def test_every_score_has_a_segment_and_every_segment_is_reachable() -> None:
    reached = {rfm_segment(r, f, m) for r in range(1, 6) for f in range(1, 6) for m in range(1, 6)}

    assert reached == set(SEGMENTS)
    assert len(SEGMENTS) == 11


def test_scores_outside_one_to_five_are_rejected() -> None:
    with pytest.raises(ValueError, match="between 1 and 5"):
        rfm_segment(0, 3, 3)
