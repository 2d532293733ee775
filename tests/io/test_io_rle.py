"""d2seg.io.rle against pycocotools' own frPyObjects / merge / encode."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from d2seg.errors import D2SegError
from d2seg.io.rle import encode_mask, polygon_problem, to_rle

H, W = 20, 30
POLYS = [[2, 2, 12, 2, 12, 10, 2, 10], [15, 5, 25, 5, 20, 15]]


def _mask(rle):
    return mask_utils.decode(rle)


def test_polygons_merge_as_pycocotools():
    """Two polygons give the mask of pycocotools' merge(frPyObjects(...))."""
    ref = mask_utils.merge(mask_utils.frPyObjects(POLYS, H, W))
    got = to_rle(POLYS, H, W)
    assert got["size"] == [H, W] and isinstance(got["counts"], bytes)
    assert np.array_equal(_mask(got), _mask(ref)) and _mask(got).sum() > 0


def test_unusable_polygons_are_skipped():
    """A 4-number polygon (pycocotools would read it as a box) and an odd one are skipped."""
    got = to_rle([[1, 1, 5, 5], POLYS[0], [1, 2, 3, 4, 5, 6, 7]], H, W)
    assert np.array_equal(_mask(got), _mask(mask_utils.frPyObjects([POLYS[0]], H, W)[0]))
    with pytest.raises(D2SegError, match="no usable polygon: polygon has 4 coordinates") as info:
        to_rle([[1, 1, 5, 5]], H, W, where="annotation 7", file="a.json")
    assert str(info.value).startswith("a.json: annotation 7: ")


def test_uncompressed_and_compressed_rle():
    """An uncompressed RLE compresses as frPyObjects does; a compressed one (str or bytes counts)
    decodes to the same mask as encode's."""
    mask = np.zeros((H, W), np.uint8)
    mask[3:9, 4:20] = 1
    flat = mask.flatten(order="F")
    runs, current, n = [], 0, 0
    for v in flat:  # uncompressed counts: alternating runs of 0s and 1s, starting with 0s
        if v == current:
            n += 1
        else:
            runs.append(n)
            current, n = v, 1
    runs.append(n)
    unc = {"size": [H, W], "counts": runs}
    ref = mask_utils.frPyObjects(unc, H, W)
    assert np.array_equal(_mask(to_rle(unc, H, W)), _mask(ref))
    assert np.array_equal(_mask(to_rle(unc, H, W)), mask)
    enc = mask_utils.encode(np.asfortranarray(mask))
    text = {"size": [H, W], "counts": enc["counts"].decode("ascii")}
    assert np.array_equal(_mask(to_rle(text, H, W)), mask)
    assert np.array_equal(_mask(to_rle(enc, H, W)), mask)


@pytest.mark.parametrize("seg, match", [
    ({"size": [H + 1, W], "counts": "abc"}, r"mask size \[21, 30\] differs from the image 20x30"),
    ({"size": [H, W + 2], "counts": [0, 5]}, "differs from the image"),
    ({"size": "big", "counts": [1]}, "RLE 'size'"),
    ({"size": [H, W], "counts": 5}, "'counts' is a int"),
    ([], "empty list"),
    ("polygon", "neither polygons nor RLE"),
])
def test_bad_segmentations_are_one_error(seg, match):
    """Hand-checked: size mismatches (pycocotools would keep the RLE's own size) and junk."""
    with pytest.raises(D2SegError, match=match):
        to_rle(seg, H, W)


@pytest.mark.parametrize("poly, ok", [
    ([0, 0, 1, 0, 1, 1], True), ([0.5, 0, 1, 0, 1, 1, 2, 2], True),
    ([0, 0, 1, 0], False), ([0, 0, 1, 0, 1, 1, 2], False), ([0, 0, 1, 0, "1", 1], False),
    ([0, 0, 1, 0, True, 1], False), ((0, 0, 1, 0, 1, 1), False), (5, False),
])
def test_polygon_problem(poly, ok):
    """Hand-checked: even count >= 6 of numbers (not bools), in a list."""
    assert (polygon_problem(poly) is None) == ok


def test_encode_mask_is_json_ready_and_decodes_back():
    """encode_mask equals pycocotools' encode with the counts as text and the size as ints."""
    mask = np.zeros((H, W), bool)
    mask[1:4, 2:9] = True
    ref = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    got = encode_mask(mask)
    assert got == {"size": [H, W], "counts": ref["counts"].decode("ascii")}
    assert type(got["size"][0]) is int
    assert np.array_equal(mask_utils.decode({**got, "counts": got["counts"].encode()}), mask)
