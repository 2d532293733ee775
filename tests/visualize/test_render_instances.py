"""draw_instances: hand-checkable pixel cases (blend, contours, boxes, labels, inputs)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from d2seg.errors import D2SegError
from d2seg.visualize import draw_instances
from d2seg.visualize.colours import darker

CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def ellipse_mask(h, w, centre, axes, angle=0.0, hole=0):
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, centre, axes, angle, 0, 360, 1, -1)
    if hole:
        cv2.circle(m, centre, hole, 0, -1)
    return m.astype(bool)


def inner_boundary(mask):
    """Mask pixels with a 4-neighbour outside the mask (outside the image counts as outside)."""
    eroded = cv2.erode(mask.astype(np.uint8), CROSS, borderType=cv2.BORDER_CONSTANT,
                       borderValue=0).astype(bool)
    return mask & ~eroded


def random_masks(rng, n, h, w):
    def one():
        centre = (int(rng.integers(10, w - 10)), int(rng.integers(10, h - 10)))
        axes = (int(rng.integers(4, 25)), int(rng.integers(4, 25)))
        return ellipse_mask(h, w, centre, axes, float(rng.uniform(0, 180)))

    return np.stack([one() for _ in range(n)])


def test_mask_interior_moves_towards_the_class_colour_by_alpha_exactly():
    image = np.empty((40, 50, 3), np.uint8)
    image[:] = (100, 60, 20)
    mask = np.zeros((40, 50), bool)
    mask[10:30, 5:45] = True
    for alpha, expected in ((0.5, (150, 80, 30)), (0.25, (125, 70, 25))):
        out = draw_instances(image, mask[None], classes=[0], colors=[(200, 100, 40)],
                             alpha=alpha, show_boxes=False, show_labels=False)
        interior = mask & ~inner_boundary(mask)
        assert (out[interior] == expected).all()  # (1 - a) * image + a * colour, by hand


def test_blend_on_a_textured_image_is_the_correctly_rounded_weighted_sum():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    mask = ellipse_mask(48, 64, (30, 24), (20, 14), 30)
    colour = np.array([13, 201, 77])
    alpha = 0.35
    out = draw_instances(image, [mask], classes=[0], colors=[colour], alpha=alpha,
                         show_boxes=False, show_labels=False, show_contours=False)
    exact = image.astype(np.float64) * (1 - alpha) + colour * alpha
    assert np.abs(out[mask] - exact[mask]).max() <= 0.5 + 1e-4
    assert (out[~mask] == image[~mask]).all()


def test_contour_pixels_are_exactly_the_mask_boundary_holes_included():
    mask = ellipse_mask(60, 80, (40, 30), (25, 18), 20, hole=6)
    image = np.zeros((60, 80, 3), np.uint8)
    colour = (200, 100, 40)
    out = draw_instances(image, mask[None], classes=[0], colors=[colour], show_boxes=False,
                         show_labels=False)
    contour = (out != np.array(colour) // 2).any(axis=2) & mask
    assert (contour == inner_boundary(mask)).all()
    assert (out[contour] == darker(colour)).all()
    assert (out[~mask] == 0).all()


def test_pixels_outside_masks_and_boxes_are_unchanged_without_labels():
    rng = np.random.default_rng(2)
    h, w = 90, 120
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    masks = random_masks(rng, 6, h, w)
    boxes = np.array([[10, 5, 60, 40], [50, 30, 119, 89], [0, 0, 20, 20],
                      [70, 10, 100, 50], [30, 60, 50, 85], [5, 50, 40, 80]], float)
    out = draw_instances(image, masks, boxes, classes=[0, 1, 2, 0, 1, 2], show_labels=False)
    touched = masks.any(axis=0)
    for x0, y0, x1, y1 in boxes.astype(int):
        outline = np.zeros((h, w), bool)
        outline[y0:y1, x0:x1] = True
        outline[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = False  # a 1-pixel frame, x1/y1 exclusive
        touched |= outline
    assert (out[~touched] == image[~touched]).all()
    assert (out[touched] != image[touched]).any(axis=1).mean() > 0.95


def test_a_label_sits_on_a_filled_rectangle_just_above_its_box_and_stays_inside_the_image():
    h, w = 120, 200
    image = np.full((h, w, 3), 90, np.uint8)
    colour = (40, 200, 240)  # light: black text
    widths = []
    for box in ([80, 60, 130, 100], [170, 60, 199, 100], [0, 0, 40, 30]):
        out = draw_instances(image, None, np.array([box], float), classes=[0], scores=[0.87],
                             class_names=["zebra"], colors=[colour], show_boxes=False)
        x0, y0, x1, y1 = box
        label = (out != image).any(axis=2)
        ys, xs = np.nonzero(label)
        top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
        rect = out[top:bottom + 1, left:right + 1]
        # Every pixel is the background, black text, or an anti-aliased mix of the two.
        bg = np.array(colour, float)
        t = (rect.astype(float) @ bg) / (bg @ bg)
        assert np.abs(rect - t[..., None] * bg).max() <= 2.5
        assert (rect == colour).all(axis=2).mean() > 0.5
        assert (rect.max(axis=2) < 60).sum() > 20  # dark text pixels drawn
        if y0 > 0:
            assert bottom == y0 - 1  # right above the box
        else:
            assert top == 0  # no room above: inside the box's top
        assert 10 <= bottom - top + 1 <= 40
        widths.append(right - left + 1)
    assert len(set(widths)) == 1  # never clipped by the image border


def test_labels_of_overlapping_boxes_do_not_cover_each_other():
    image = np.zeros((200, 300, 3), np.uint8)
    boxes = np.array([[100, 80, 200, 150], [105, 85, 190, 140]], float)
    colours = [(255, 0, 0), (0, 0, 255)]
    out = draw_instances(image, None, boxes, classes=[0, 1], scores=[0.9, 0.8],
                         class_names=["aa", "bb"], colors=colours, show_boxes=False)
    for c in colours:
        assert (out == c).all(axis=2).sum() > 100  # both label backgrounds visible


@pytest.mark.parametrize("form", ["rle", "uncompressed_rle", "tensor", "list", "uint8"])
def test_every_mask_form_gives_the_image_of_bool_masks(form):
    rng = np.random.default_rng(3)
    h, w = 64, 96
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    masks = random_masks(rng, 5, h, w)
    kwargs = dict(classes=[3, 1, 3, 0, 2], scores=[0.9, 0.5, 0.7, 0.6, 0.95],
                  class_names=["a", "b", "c", "d"])
    ref = draw_instances(image, masks, **kwargs)
    if form == "rle":
        given = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    elif form == "uncompressed_rle":
        given = [{"size": [h, w], "counts": uncompressed_counts(m)} for m in masks]
    elif form == "tensor":
        given = torch.from_numpy(masks)
    elif form == "list":
        given = list(masks)
    else:
        given = masks.astype(np.uint8)
    assert (draw_instances(image, given, **kwargs) == ref).all()


def uncompressed_counts(mask):
    """COCO's uncompressed RLE, computed by hand: run lengths in column-major order, 0s first."""
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return ([0] + runs) if flat[0] else runs


def test_no_instances_returns_an_unchanged_copy():
    image = np.random.default_rng(4).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    empty_tensor = torch.zeros((0, 30, 40), dtype=torch.bool)
    for masks in (None, [], np.zeros((0, 30, 40), bool), empty_tensor):
        out = draw_instances(image, masks, None, [], [], ["a"])
        assert out is not image and (out == image).all()


def test_the_input_image_is_not_modified():
    image = np.full((30, 40, 3), 7, np.uint8)
    mask = np.zeros((30, 40), bool)
    mask[5:20, 5:20] = True
    draw_instances(image, [mask], classes=[0], scores=[0.5], class_names=["x"])
    assert (image == 7).all()


def test_instances_of_one_class_get_different_shades_the_first_the_class_colour():
    image = np.zeros((40, 90, 3), np.uint8)
    masks = np.zeros((3, 40, 90), bool)
    masks[0, 5:35, 2:28] = masks[1, 5:35, 32:58] = masks[2, 5:35, 62:88] = True
    colour = (40, 120, 240)
    out = draw_instances(image, masks, classes=[0, 0, 0], colors=[colour], alpha=1.0,
                         show_boxes=False, show_labels=False, show_contours=False)
    fills = [tuple(out[20, x]) for x in (15, 45, 75)]
    assert fills[0] == colour
    assert len(set(fills)) == 3
    hues = cv2.cvtColor(np.array([fills], np.uint8), cv2.COLOR_BGR2HSV)[0, :, 0].astype(int)
    assert np.abs(hues - hues[0]).max() <= 2  # same hue, lighter or darker


def test_a_mask_of_another_size_is_a_user_error():
    image = np.zeros((30, 40, 3), np.uint8)
    with pytest.raises(D2SegError, match="30x40"):
        draw_instances(image, [np.ones((20, 40), bool)], classes=[0])
    rle = mask_utils.encode(np.asfortranarray(np.ones((20, 40, 1), np.uint8)))
    with pytest.raises(D2SegError, match="30x40"):
        draw_instances(image, rle, classes=[0])
