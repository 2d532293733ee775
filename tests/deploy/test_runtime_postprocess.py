"""The deploy runtime's own pre/post-processing against detectron2's (the PyTorch reference):
the test-time resize (size rule and pixels) and mask pasting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.structures import Boxes

from d2seg.deploy.runtime import paste_mask, resize_image, resized_shape


@pytest.mark.parametrize("hw", [(160, 192), (300, 500), (400, 240), (96, 128), (801, 1203),
                                (50, 1000), (333, 333)])
@pytest.mark.parametrize("sizes", [(160, 320), (800, 1333), (0, 0)])
def test_resize_matches_detectron2(hw, sizes):
    rng = np.random.default_rng(hw[0] * 7 + hw[1])
    image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    resize = T.ResizeShortestEdge([sizes[0]] * 2, sizes[1])
    ref = resize.get_transform(image).apply_image(image)
    shape = resized_shape(*hw, *sizes)
    assert shape == ref.shape[:2]
    np.testing.assert_array_equal(resize_image(image, *shape), ref)


def test_paste_matches_detectron2():
    """Random 28x28 probabilities in random boxes (clipped to the image, some tiny): the pasted masks equal detectron2's, but for at most 2 pixels in all
    (samples that land on the threshold may round either way: float32 there, float64 here)."""
    rng = np.random.default_rng(0)
    h, w, n = 90, 120, 200
    probs = rng.random((n, 28, 28), dtype=np.float32)
    x0 = rng.uniform(-30, w, n)
    y0 = rng.uniform(-30, h, n)
    sizes = rng.choice([0.7, 3.0, 20.0, 80.0], n) * rng.uniform(0.5, 1.5, (2, n))
    boxes = np.stack([x0, y0, x0 + sizes[0], y0 + sizes[1]], 1).astype(np.float32)
    # clipped to the image and non-empty, as detector_postprocess leaves them before pasting
    boxes[:, 0::2], boxes[:, 1::2] = boxes[:, 0::2].clip(0, w), boxes[:, 1::2].clip(0, h)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, probs, n = boxes[keep], probs[keep], int(keep.sum())
    assert n > 150
    ref = paste_masks_in_image(torch.from_numpy(probs), Boxes(torch.from_numpy(boxes)), (h, w),
                               threshold=0.5).numpy()
    differ = 0
    for i in range(n):
        got = paste_mask(probs[i], boxes[i], h, w)
        differ += int((got != ref[i]).sum())
    assert differ <= 2, differ
