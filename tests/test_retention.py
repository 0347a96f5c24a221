"""Label retention maths: known predictions give known retention and Wilson intervals."""
import math

import pytest

from evaluation.retention import Retention, label_retention

Z95 = 1.959963984540054


def wilson(k: int, n: int) -> tuple[float, float]:
    """Closed-form Wilson score interval (Wilson 1927), written out independently of scipy."""
    p = k / n
    centre = (p + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 / (1 + Z95 ** 2 / n) * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n))
    return centre - half, centre + half


def test_known_predictions_give_known_retention_and_interval():
    original = ["kitchen", "food", "phone", "laptop", "table", "drink", "food", "phone"]
    decoded = ["kitchen", "food", "table", "laptop", "table", "food", "food", "phone"]
    result = label_retention(original, decoded)
    assert (result.retained, result.total) == (6, 8)
    assert result.rate == pytest.approx(0.75)
    low, high = wilson(6, 8)
    assert result.ci_low == pytest.approx(low, abs=1e-9)
    assert result.ci_high == pytest.approx(high, abs=1e-9)
    assert result.ci_low < result.rate < result.ci_high


def test_confidence_filter_counts_only_confident_original_frames():
    original = [0, 1, 2, 3, 4]
    decoded = [0, 9, 2, 9, 9]
    logits = [25.0, 18.0, 17.9, 30.0, 5.0]  # frames 2 and 4 fall below 18
    result = label_retention(original, decoded, logits, min_logit=18)
    assert (result.retained, result.total) == (1, 3)
    assert label_retention(original, decoded, logits).total == 5  # no threshold, all count


def test_edge_cases():
    perfect = label_retention(["a"] * 20, ["a"] * 20)
    assert perfect.rate == 1.0 and perfect.ci_high == pytest.approx(1.0)
    assert perfect.ci_low == pytest.approx(wilson(20, 20)[0])
    none = label_retention(["a"], ["b"])
    assert none.rate == 0.0 and none.ci_low == pytest.approx(0.0, abs=1e-12)
    empty = label_retention([1], [1], [3.0], min_logit=18)
    assert empty.total == 0 and math.isnan(empty.rate)
    assert empty.as_dict()["rate"] is None and (empty.ci_low, empty.ci_high) == (0.0, 1.0)


def test_interval_narrows_with_more_frames():
    small, large = Retention.from_counts(5, 10), Retention.from_counts(500, 1000)
    assert small.rate == large.rate == 0.5
    assert large.ci_high - large.ci_low < (small.ci_high - small.ci_low) / 5


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="paired"):
        label_retention([1, 2], [1])
    with pytest.raises(ValueError, match="min_logit needs"):
        label_retention([1], [1], min_logit=18)
    with pytest.raises(ValueError, match="retained"):
        Retention.from_counts(3, 2)
