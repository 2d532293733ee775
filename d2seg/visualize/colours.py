"""Deterministic class colours (BGR uint8) and per-instance shades of them.

Colours must not depend on which classes happen to be in an image, so that ground truth and
predictions, and different images, show each class in the same colour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

_GOLDEN = 0.6180339887498949
# Saturation/value pairs cycled with the hue so that neighbouring class ids differ in more
# than hue alone.
_SV_LEVELS = ((0.85, 0.95), (0.60, 0.90), (0.95, 0.70), (0.45, 0.98))


def class_colors(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` uint8 BGR colours: hues spread by the golden ratio, varied S/V."""
    if num_classes <= 0:
        return np.zeros((0, 3), np.uint8)
    i = np.arange(num_classes)
    hsv = np.empty((1, num_classes, 3), np.float32)
    hsv[0, :, 0] = ((i * _GOLDEN) % 1.0) * 360.0
    levels = np.asarray(_SV_LEVELS, np.float32)[i % len(_SV_LEVELS)]
    hsv[0, :, 1], hsv[0, :, 2] = levels[:, 0], levels[:, 1]
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0]
    return np.clip(np.rint(bgr * 255.0), 0, 255).astype(np.uint8)


def shade_offset(k: int) -> float:
    """Tint (> 0, towards white) or shade (< 0, towards black) of the k-th instance; 0 for k=0."""
    return 0.9 * ((k * _GOLDEN + 0.5) % 1.0 - 0.5)


def instance_shade(color, k: int) -> np.ndarray:
    """The k-th shade of ``color``: same hue, lighter or darker; ``k == 0`` is the colour itself."""
    base = np.asarray(color, np.float64)
    t = shade_offset(k)
    shaded = base + t * (255.0 - base) if t >= 0 else base * (1.0 + t)
    return np.clip(np.rint(shaded), 0, 255).astype(np.uint8)


def darker(color, factor: float = 0.55) -> np.ndarray:
    """A darker version of ``color`` for contours, so edges stand out on the fill."""
    return np.clip(np.rint(np.asarray(color, np.float64) * factor), 0, 255).astype(np.uint8)


def text_color_for(background) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``background`` (BGR)."""
    b, g, r = (float(c) for c in background)
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def palette_for(class_ids, class_names=None, colors=None):
    """A lookup ``class id -> BGR colour`` for the given classes.

    ``colors`` may be a sequence/array indexed by class id or a mapping keyed by class id. When
    absent the palette follows ``class_names`` (its indices, or its sorted keys when a mapping)
    so that a class keeps its colour across images; without names, the class id itself.
    """
    if colors is not None:
        if isinstance(colors, Mapping):
            return {k: np.asarray(v, np.uint8) for k, v in colors.items()}
        return {i: np.asarray(c, np.uint8) for i, c in enumerate(np.asarray(colors))}
    if isinstance(class_names, Mapping):
        keys = sorted(class_names)
        return dict(zip(keys, class_colors(len(keys))))
    ids = [int(c) for c in class_ids]
    n = max([len(class_names) if isinstance(class_names, Sequence) else 0, *[i + 1 for i in ids]],
            default=0)
    return dict(enumerate(class_colors(n)))


def color_of(palette: Mapping, class_id) -> np.ndarray:
    """The palette's colour for ``class_id``; grey for an id the palette does not know."""
    c = palette.get(class_id)
    if c is None:
        c = palette.get(int(class_id)) if not isinstance(class_id, str) else None
    return np.asarray(c if c is not None else (160, 160, 160), np.uint8)
