"""Superpixel voting: equals a brute-force majority, follows coin edges, writes uint8 PNGs."""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import data, filters, segmentation

from d2seg.classical import refine_folder, refine_semantic, superpixel_labels, vote
from d2seg.errors import D2SegError


def _brute_force_vote(superpixels, labels, ignore):
    out = np.empty_like(labels)
    for s in np.unique(superpixels):
        inside = superpixels == s
        counts = Counter(int(v) for v in labels[inside] if v != ignore)
        if not counts:
            out[inside] = ignore
            continue
        top = max(counts.values())
        out[inside] = min(v for v, c in counts.items() if c == top)  # ties: smaller label
    return out


def test_vote_on_a_hand_made_map():
    superpixels = np.array([[0, 0, 1, 1],
                            [0, 0, 1, 1],
                            [2, 2, 3, 3]])
    labels = np.array([[4, 4, 2, 255],
                       [1, 255, 255, 255],
                       [3, 5, 7, 7]], np.uint8)
    expected = np.array([[4, 4, 2, 2],
                         [4, 4, 2, 2],
                         [3, 3, 7, 7]], np.uint8)
    assert np.array_equal(vote(superpixels, labels, 255), expected)


@pytest.mark.parametrize("seed", range(5))
def test_vote_equals_brute_force_majority(seed):
    rng = np.random.default_rng(seed)
    superpixels = rng.integers(0, 12, (20, 30)) * 7  # ids need not be contiguous
    labels = rng.integers(0, 5, (20, 30)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.4] = 255
    labels[superpixels == 14] = 255  # one superpixel with no vote at all
    assert np.array_equal(vote(superpixels, labels, 255), _brute_force_vote(superpixels, labels, 255))


def _coin_mask():
    """The coins as scikit-image's gallery finds them (Sobel elevation, threshold markers)."""
    coins = data.coins()
    markers = np.zeros_like(coins)
    markers[coins < 30], markers[coins > 150] = 1, 2
    return ndi.binary_fill_holes(segmentation.watershed(filters.sobel(coins), markers) == 2)


@pytest.mark.parametrize("method", ["slic", "felzenszwalb"])
def test_superpixels_follow_coin_edges_better_than_a_grid(method):
    coins, truth = data.coins(), _coin_mask().astype(np.uint8)
    sp = superpixel_labels(coins, method)
    assert sp.dtype == np.int32 and sp.shape == coins.shape
    assert np.array_equal(np.unique(sp), np.arange(sp.max() + 1))
    size = int(round(np.sqrt(coins.size / (sp.max() + 1))))  # a grid of as many cells
    yy, xx = np.mgrid[:coins.shape[0], :coins.shape[1]]
    grid = (yy // size) * 1000 + xx // size

    def iou(pred):
        return (pred & truth.astype(bool)).sum() / (pred | truth.astype(bool)).sum()

    by_superpixels = iou(vote(sp, truth, None).astype(bool))
    by_grid = iou(vote(grid, truth, None).astype(bool))
    assert by_superpixels > 0.9 and by_superpixels > by_grid


def test_slic_segment_size_sets_the_count():
    coins = data.coins()
    n = superpixel_labels(coins, "slic", segment_size=20).max() + 1
    assert 0.5 * coins.size / 400 <= n <= 1.5 * coins.size / 400


def test_refine_folder_writes_uint8_pngs_and_spreads_sparse_labels(tmp_path):
    coins = data.coins()
    truth = _coin_mask()
    sparse = np.full(coins.shape, 255, np.uint8)
    labels, n = ndi.label(truth)
    centres = ndi.center_of_mass(truth, labels, range(1, n + 1))
    for cy, cx in centres:  # one click inside each coin
        sparse[int(cy), int(cx)] = 1
    sparse[5, 5] = 0  # one click on the background
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "coins.png"), coins)
    cv2.imwrite(str(tmp_path / "labels" / "coins.png"), sparse)
    written = refine_folder(tmp_path / "images", tmp_path / "labels", tmp_path / "out",
                            progress=False)
    out = cv2.imread(str(written[0]), cv2.IMREAD_UNCHANGED)
    assert written[0].name == "coins.png" and out.dtype == np.uint8 and out.shape == coins.shape
    assert set(np.unique(out)) == {0, 1, 255}
    clicked = ndi.label(out == 1)[0]
    assert all(clicked[int(cy), int(cx)] for cy, cx in centres)  # each click spread to a segment
    rgb = cv2.cvtColor(coins, cv2.COLOR_GRAY2RGB)
    assert np.array_equal(out, refine_semantic(rgb, sparse, "slic"))


def test_mismatched_sizes_are_user_errors():
    with pytest.raises(D2SegError, match="differ"):
        vote(np.zeros((3, 3), int), np.zeros((3, 4), np.uint8))
    with pytest.raises(D2SegError, match="unknown superpixel method"):
        superpixel_labels(np.zeros((8, 8)), "quickshift")
