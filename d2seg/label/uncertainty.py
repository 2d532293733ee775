"""How unsure a detector is about one image, from its detections' scores alone.

A Mask R-CNN's score is its probability that a box holds an object of the predicted class. A
detection scored near 0.5 is one the model cannot decide on; one near 0 or 1 it can. Each
detection (above a low floor, ``MIN_SCORE``) counts with the binary entropy of its score,
``H(s) = -s log2 s - (1 - s) log2 (1 - s)`` (1 at s = 0.5, 0 at s = 0 or 1), and an image's
uncertainty combines its detections' entropies:

* ``sum``  (default): the total entropy -- many undecided objects rank an image first;
* ``max``: the single most undecided detection;
* ``mean``: the average over its detections (an image with none scores 0).

Only scores are used, so the measure works the same for a PyTorch model and an exported one
(whose graph returns no class distributions or soft masks). Which combination to use was
decided by bench/bench_active_learning.py (BENCHMARKS.md, "Active learning").
"""

from __future__ import annotations

import numpy as np

from d2seg.errors import D2SegError

__all__ = ["MEASURES", "MIN_SCORE", "binary_entropy", "image_uncertainty"]

MEASURES = ("sum", "max", "mean")
#: detections scored below this are ignored (the model's background noise)
MIN_SCORE = 0.05


def binary_entropy(scores) -> np.ndarray:
    """``H(s)`` in bits for each score (scores are clipped to [0, 1]; H(0) = H(1) = 0)."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(s * np.log2(s) + (1 - s) * np.log2(1 - s))
    return np.nan_to_num(h, nan=0.0)


def image_uncertainty(scores, measure: str = "sum", min_score: float = MIN_SCORE) -> float:
    """One image's uncertainty (see the module doc) from its detections' scores."""
    if measure not in MEASURES:
        raise D2SegError(f"unknown measure {measure!r}", where="--measure",
                         hint=f"use one of {', '.join(MEASURES)}")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    h = binary_entropy(s[s >= min_score])
    if h.size == 0:
        return 0.0
    return float({"sum": h.sum, "max": h.max, "mean": h.mean}[measure]())
