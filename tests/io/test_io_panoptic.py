"""d2seg.io.panoptic id <-> RGB against panopticapi's rgb2id / id2rgb."""

import numpy as np
import pytest
from panopticapi.utils import id2rgb, rgb2id

from d2seg.errors import D2SegError
from d2seg.io.panoptic import MAX_ID, id_to_rgb, rgb_to_id


def test_matches_panopticapi_both_ways():
    """Random ids over the whole 24-bit range convert as panopticapi converts them."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, MAX_ID + 1, size=(17, 23))
    ids[0, :3] = [0, 1, MAX_ID]
    rgb = id_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (17, 23, 3)
    assert np.array_equal(rgb, id2rgb(ids))
    assert np.array_equal(rgb_to_id(rgb), rgb2id(rgb))
    assert np.array_equal(rgb_to_id(rgb), ids)


def test_hand_checked_values():
    """id 1 + 256*2 + 65536*3 is RGB (1, 2, 3); MAX_ID is white."""
    assert id_to_rgb(1 + 2 * 256 + 3 * 65536).tolist() == [1, 2, 3]
    assert id_to_rgb([MAX_ID]).tolist() == [[255, 255, 255]]
    assert int(rgb_to_id([1, 2, 3])) == 197121


def test_out_of_range_ids_are_one_error():
    """2^24 and -1 do not fit in an RGB pixel."""
    with pytest.raises(D2SegError, match="segment id 16777216 does not fit"):
        id_to_rgb(np.array([[0, 1 << 24]]))
    with pytest.raises(D2SegError, match="segment id -1 does not fit"):
        id_to_rgb([-1, 3])
