"""Class colours are deterministic and distinct; shades keep the hue; text stays readable."""

from __future__ import annotations

import cv2
import numpy as np

from d2seg.visualize.colours import class_colors, instance_shade, text_color_for


def hue_degrees(bgr):
    hsv = cv2.cvtColor(np.asarray(bgr, np.float32).reshape(1, -1, 3) / 255.0, cv2.COLOR_BGR2HSV)
    return hsv[0, :, 0]


def test_class_colours_are_deterministic_and_pairwise_distinct():
    a, b = class_colors(133), class_colors(133)
    assert a.dtype == np.uint8 and a.shape == (133, 3)
    assert (a == b).all()
    assert (class_colors(10) == a[:10]).all()  # a class keeps its colour as the list grows
    d = np.abs(a[:, None].astype(int) - a[None].astype(int)).sum(axis=2)
    d[np.arange(133), np.arange(133)] = 999
    assert d.min() >= 12  # all 133 COCO panoptic classes tell apart (L1 over B, G, R)
    assert d[:20, :20].min() >= 30  # the first classes are far apart


def test_shade_zero_is_the_colour_and_other_shades_keep_the_hue():
    for colour in class_colors(12):
        assert (instance_shade(colour, 0) == colour).all()
        shades = np.array([instance_shade(colour, k) for k in range(8)])
        assert len({tuple(s) for s in shades}) == 8
        hues = hue_degrees(shades)
        diff = np.abs((hues - hues[0] + 180) % 360 - 180)
        assert diff.max() < 6


def test_text_colour_contrasts_with_the_background():
    assert text_color_for((255, 255, 255)) == (0, 0, 0)
    assert text_color_for((0, 0, 0)) == (255, 255, 255)
    assert text_color_for((0, 255, 255)) == (0, 0, 0)  # yellow
    assert text_color_for((140, 0, 0)) == (255, 255, 255)  # dark blue
