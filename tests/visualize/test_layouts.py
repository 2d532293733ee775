"""side_by_side and montage: sizes, where each picture lands, titles drawn."""

from __future__ import annotations

import numpy as np

from d2seg.visualize import montage, side_by_side


def solid(h, w, value):
    return np.full((h, w, 3), value, np.uint8)


def test_side_by_side_places_images_in_a_row_under_their_titles():
    a, b = solid(50, 80, 10), solid(50, 60, 200)
    out = side_by_side([a, b], ["ground truth", "prediction"], gap=4)
    bar = out.shape[0] - 50
    assert out.shape == (bar + 50, 80 + 4 + 60, 3) and bar > 0
    assert (out[bar:, :80] == 10).all() and (out[bar:, 84:] == 200).all()
    assert (out[bar:, 80:84] == 0).all()  # the gap
    for x0, x1 in ((0, 80), (84, 144)):
        assert len(np.unique(out[:bar, x0:x1].reshape(-1, 3), axis=0)) > 2  # text was drawn
    untitled = side_by_side([a, b], gap=4)
    assert untitled.shape == (50, 144, 3)


def test_side_by_side_scales_to_the_first_height_keeping_the_aspect_ratio():
    out = side_by_side([solid(40, 40, 1), solid(80, 120, 2)], gap=0)
    assert out.shape == (40, 40 + 60, 3)
    assert (out[:, 40:] == 2).all()


def test_montage_is_a_grid_with_row_and_column_titles():
    rows = [[solid(30, 40, 10 * (i * 3 + j + 1)) for j in range(3)] for i in range(2)]
    out = montage(rows, row_titles=["img 1", "img 2"], col_titles=["gt", "a", "b"], gap=2)
    top = out.shape[0] - (2 * 30 + 2)
    left = out.shape[1] - (3 * 40 + 2 * 2)
    assert top > 0 and left > 0
    for i in range(2):
        for j in range(3):
            y, x = top + i * 32, left + j * 42
            assert (out[y:y + 30, x:x + 40] == 10 * (i * 3 + j + 1)).all()
    assert len(np.unique(out[top:top + 30, :left].reshape(-1, 3), axis=0)) > 2  # row title
    assert len(np.unique(out[:top, left:left + 40].reshape(-1, 3), axis=0)) > 2  # column title


def test_montage_pads_cells_of_another_aspect_ratio():
    out = montage([[solid(30, 40, 50), solid(30, 20, 90)]], gap=0)
    assert out.shape == (30, 80, 3)
    right = out[:, 40:]
    assert (right[:, 10:30] == 90).all() and (right[:, :10] == 0).all()
