"""Label retention: how often a classifier predicts on a decoded frame what it predicted on the
original frame (the DANCE paper's split-computing figure), with a 95% Wilson score interval.

The paper's confidence filter keeps only frames whose max logit on the ORIGINAL frame reaches
`min_logit` (18 for CLIP ViT): frames the model is unsure about even uncompressed say little
about the codec.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Retention:
    """`retained` of `total` frames kept their label; `rate` is nan when `total` is 0."""
    retained: int
    total: int
    rate: float
    ci_low: float
    ci_high: float

    @classmethod
    def from_counts(cls, retained: int, total: int) -> "Retention":
        if not 0 <= retained <= total:
            raise ValueError(f"retained={retained} must lie in [0, total={total}]")
        if total == 0:
            return cls(0, 0, math.nan, 0.0, 1.0)
        from scipy.stats import binomtest  # ~1 s to import: only when a figure is needed

        interval = binomtest(retained, total).proportion_ci(CONFIDENCE, method="wilson")
        return cls(retained, total, retained / total, float(interval.low), float(interval.high))

    def as_dict(self) -> dict:
        """JSON-safe figures (rate None when nothing was counted)."""
        return {"retained": self.retained, "total": self.total,
                "rate": None if math.isnan(self.rate) else self.rate,
                "ci_low": self.ci_low, "ci_high": self.ci_high}


def confident(original_max_logit: float | None, min_logit: float | None) -> bool:
    """Whether a frame passes the confidence filter (always, without a threshold)."""
    return min_logit is None or (original_max_logit is not None
                                 and original_max_logit >= min_logit)


def label_retention(original_labels: Sequence, decoded_labels: Sequence,
                    original_max_logits: Sequence[float] | None = None,
                    min_logit: float | None = None) -> Retention:
    """Fraction of frames whose decoded-frame label equals the original-frame label.

    With `min_logit`, only frames whose original max logit is >= min_logit count.
    """
    if len(original_labels) != len(decoded_labels):
        raise ValueError(f"{len(original_labels)} original labels but {len(decoded_labels)} "
                         "decoded labels: predictions must be paired frame by frame")
    if min_logit is not None and original_max_logits is None:
        raise ValueError("min_logit needs original_max_logits")
    if original_max_logits is not None and len(original_max_logits) != len(original_labels):
        raise ValueError(f"{len(original_max_logits)} max logits for {len(original_labels)} frames")
    logits = original_max_logits if original_max_logits is not None else [None] * len(original_labels)
    kept = [(a, b) for a, b, logit in zip(original_labels, decoded_labels, logits)
            if confident(logit, min_logit)]
    return Retention.from_counts(sum(a == b for a, b in kept), len(kept))


def top_k_retention(original_labels: Sequence, decoded_top_labels: Sequence[Sequence],
                    original_confidences: Sequence[float] | None = None,
                    min_confidence: float | None = None) -> Retention:
    """Fraction of frames whose original-frame label is among the decoded frame's top labels
    (top-5 agreement with five labels per frame); the filter works as in `label_retention`."""
    if len(original_labels) != len(decoded_top_labels):
        raise ValueError(f"{len(original_labels)} original labels but {len(decoded_top_labels)} "
                         "decoded top-label lists: predictions must be paired frame by frame")
    found = [label if label in tops else None
             for label, tops in zip(original_labels, decoded_top_labels)]
    return label_retention(original_labels, found, original_confidences, min_confidence)


def kl_divergence(original_log_probs, decoded_log_probs) -> float:
    """KL(original || decoded) in nats of two class distributions given as log-probabilities
    (log-softmax outputs: no zero probabilities to guard against)."""
    import numpy as np

    log_p = np.asarray(original_log_probs, dtype=np.float64)
    log_q = np.asarray(decoded_log_probs, dtype=np.float64)
    if log_p.shape != log_q.shape:
        raise ValueError(f"distributions of {log_p.shape} and {log_q.shape} classes")
    return max(0.0, float(np.sum(np.exp(log_p) * (log_p - log_q))))
