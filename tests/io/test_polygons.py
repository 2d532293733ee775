"""``d2seg.io.polygons.mask_to_polygons`` against pycocotools' own rasteriser."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from scipy import ndimage as ndi

from d2seg.errors import D2SegError
from d2seg.io.polygons import mask_to_polygons


def _raster(polygons, h, w) -> np.ndarray:
    if not polygons:
        return np.zeros((h, w), bool)
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))).astype(bool)


def test_tolerance_zero_rasterises_back_to_the_mask_with_holes_filled():
    """200 random masks (noise, and noise smoothed into blobs, some with holes): the polygons
    at tolerance 0, drawn by pycocotools.frPyObjects, are exactly scipy's hole-filled mask."""
    rng = np.random.default_rng(0)
    for k in range(200):
        m = (rng.random((30, 40)) < 0.5).astype(np.uint8)
        if k % 2:
            m = cv2.medianBlur(m * 255, 3) // 255
        assert np.array_equal(_raster(mask_to_polygons(m, 0), 30, 40), ndi.binary_fill_holes(m))


def test_a_hand_checked_rectangle_and_simplification():
    """A 30x20 rectangle at (20, 10) gives one 4-point polygon a quarter pixel inside its outer
    edges (x 20.25..49.75, y 10.25..29.75); a disc of radius 20 simplified with tolerance 1 keeps
    fewer points than tolerance 0 and still covers the disc with IoU >= 0.95."""
    m = np.zeros((60, 80), np.uint8)
    m[10:30, 20:50] = 1
    (poly,) = mask_to_polygons(m, 0)
    pts = np.asarray(poly).reshape(-1, 2)
    assert sorted(map(tuple, pts)) == [(20.25, 10.25), (20.25, 29.75), (49.75, 10.25),
                                       (49.75, 29.75)]
    disc = np.zeros((60, 80), np.uint8)
    cv2.circle(disc, (40, 30), 20, 1, -1)
    exact, simple = mask_to_polygons(disc, 0), mask_to_polygons(disc, 1.0)
    assert len(simple[0]) < len(exact[0])
    drawn = _raster(simple, 60, 80)
    assert (drawn & (disc > 0)).sum() / (drawn | (disc > 0)).sum() >= 0.95


def test_regions_empty_masks_min_area_and_bad_input():
    """Two regions give two polygons, largest first; an empty mask gives none; min_area drops
    the small one (shoelace area of a 2x2 square's polygon: 1.5 x 1.5 = 2.25); a negative
    tolerance and a 3-D array are D2SegErrors."""
    m = np.zeros((40, 40), np.uint8)
    m[2:4, 2:4] = 1
    m[10:30, 10:30] = 1
    polys = mask_to_polygons(m, 0)
    assert len(polys) == 2 and min(np.asarray(polys[0]).reshape(-1, 2)[:, 0]) == 10.25
    assert mask_to_polygons(np.zeros((5, 5)), 0) == []
    assert len(mask_to_polygons(m, 0, min_area=2.25)) == 2
    assert len(mask_to_polygons(m, 0, min_area=2.3)) == 1
    with pytest.raises(D2SegError):
        mask_to_polygons(m, -1)
    with pytest.raises(D2SegError):
        mask_to_polygons(np.zeros((4, 4, 3)), 0)
