"""Labels of different instances / regions never overlap or touch and stay inside the image, in
any font (issue 12: a new OpenCV's font metrics made two labels touch and read as one).

The rectangles the renderer reports (``placed_labels``) are checked against each other and, on
their own terms, against the pixels: drawn on a constant image with nothing else that labels
could be confused with, every label must be one separate blob of changed pixels exactly the size
of its rectangle, so touching or overlapping labels, or text spilling out of its rectangle, show
up whatever the renderer believes.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from d2seg.visualize import render
from d2seg.visualize.render import draw_instances, draw_panoptic, draw_semantic

GREY = 128  # the constant image; no palette colour, shade or text colour is this grey

# (font, font scale): OpenCV fonts with different metrics, at small and large sizes; None keeps
# the renderer's own font and the scale it picks for the image size.
FONTS = [
    pytest.param(None, None, id="default"),
    pytest.param(cv2.FONT_HERSHEY_SIMPLEX, 0.5, id="simplex-0.5"),
    pytest.param(cv2.FONT_HERSHEY_COMPLEX, 0.8, id="complex-0.8"),
    pytest.param(cv2.FONT_HERSHEY_TRIPLEX, 1.2, id="triplex-1.2"),
    pytest.param(cv2.FONT_HERSHEY_PLAIN | cv2.FONT_ITALIC, 1.0, id="plain-italic-1.0"),
]

NAMES = ["person", "traffic light", "fire hydrant", "dog", "potted plant", "car", "umbrella",
         "sky", "grass", "building", "tennis racket", "cat", "road", "tree", "wall"]


def use_font(monkeypatch, module, font, scale):
    """Make ``module`` (the renderer) write in ``font`` at ``scale``."""
    if font is None:
        return
    monkeypatch.setattr(module, "FONT", font)
    style = module.Style(line=1, font_scale=scale, font_thickness=1 if scale < 0.9 else 2)
    monkeypatch.setattr(module.Style, "for_image",
                        classmethod(lambda cls, height, width, line_width=None: style))


def overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def check_labels(plain, labelled, rects, min_labels):
    """No two label rectangles overlap, all lie inside the image, and the pixels agree."""
    h, w = plain.shape[:2]
    assert len(rects) >= min_labels
    for left, top, bw, bh in rects:
        assert bw > 0 and bh > 0
        assert left >= 0 and top >= 0 and left + bw <= w and top + bh <= h, (left, top, bw, bh)
    for a, b in itertools.combinations(rects, 2):
        assert not overlap(a, b), (a, b)
    # From the pixels alone: each label is a blob of its own (8-connected, so touching labels
    # would merge) with exactly its rectangle as bounding box; nothing else was drawn.
    changed = (plain != labelled).any(axis=2).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(changed, connectivity=8)
    blobs = sorted(tuple(int(v) for v in stats[k, :4]) for k in range(1, count))
    assert blobs == sorted(tuple(int(v) for v in r) for r in rects)


def voronoi(h, w, n, seed):
    """An ``(h, w)`` map of ``n`` crowded cells, each pixel the index of its nearest seed."""
    rng = np.random.default_rng(seed)
    seeds = rng.uniform((0, 0), (h, w), (n, 2))
    yy, xx = np.mgrid[:h, :w]
    d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    return d.argmin(axis=2)


def instances_scene(seed=0, n=60, h=240, w=320):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), np.uint8)
    for m in masks:
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(6, 50)), int(rng.integers(6, 50)))
        cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    kwargs = dict(masks=masks.astype(bool), classes=rng.integers(0, len(NAMES), n).tolist(),
                  scores=rng.uniform(0.3, 1.0, n).tolist(), class_names=NAMES, alpha=0.0,
                  show_boxes=False, show_contours=False)
    return np.full((h, w, 3), GREY, np.uint8), kwargs


def panoptic_scene(seed=1, n=60, h=240, w=320):
    cells = voronoi(h, w, n, seed)
    pan = (cells + 1) * 7  # segment ids; 0 would be void
    # Every segment its own category (things and stuff): each takes its class colour itself.
    segments = [{"id": (k + 1) * 7, "category_id": k, "isthing": k % 2 == 0,
                 **({"score": 0.5 + k / 200} if k % 2 == 0 else {})} for k in range(n)]
    names = {k: NAMES[k % len(NAMES)] for k in range(n)}
    kwargs = dict(panoptic_map=pan, segments_info=segments, class_names=names, alpha=0.0)
    return np.full((h, w, 3), GREY, np.uint8), kwargs


def semantic_scene(seed=2, n=60, h=240, w=320):
    classes = np.random.default_rng(seed).permutation(n)  # one class per cell
    kwargs = dict(label_map=classes[voronoi(h, w, n, seed)],
                  class_names=[f"{NAMES[k % len(NAMES)]} {k}" for k in range(n)], alpha=0.0)
    return np.full((h, w, 3), GREY, np.uint8), kwargs


SCENES = {"instances": (draw_instances, instances_scene),
          "panoptic": (draw_panoptic, panoptic_scene),
          "semantic": (draw_semantic, semantic_scene)}


@pytest.mark.parametrize("font, scale", FONTS)
@pytest.mark.parametrize("kind", list(SCENES))
def test_labels_never_overlap_and_stay_inside_the_image_in_any_font(monkeypatch, kind, font,
                                                                    scale):
    use_font(monkeypatch, render, font, scale)
    draw, scene = SCENES[kind]
    image, kwargs = scene()
    plain = draw(image, **kwargs, show_labels=False)
    placed = []
    labelled = draw(image, **kwargs, placed_labels=placed)
    check_labels(plain, labelled, [p.rect for p in placed], min_labels=5)
    assert len({p.key for p in placed}) == len(placed)  # one label per instance / region at most
    if kind != "instances":
        # A region's label names the region under its centre (unless pushed there by the
        # image border, the only thing that may move a label off its region).
        regions = kwargs.get("panoptic_map", kwargs.get("label_map"))
        h, w = regions.shape
        for p in placed:
            left, top, bw, bh = p.rect
            if 0 < left and left + bw < w and 0 < top and top + bh < h:
                assert regions[top + bh // 2, left + bw // 2] == p.key


def test_a_smaller_instance_never_takes_a_label_place_from_a_larger_one(monkeypatch):
    """Larger instances are labelled first, whatever the scores: the labels of the k largest
    are the same whether the smaller instances are drawn too or not, so in a crowd the labels
    left out are those of smaller instances."""
    use_font(monkeypatch, render, cv2.FONT_HERSHEY_SIMPLEX, 0.6)
    image, kwargs = instances_scene(seed=3, n=120)
    masks = kwargs["masks"]
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    kwargs["scores"] = (1.0 - 0.7 * areas / areas.max()).tolist()  # the smaller, the surer
    placed = []
    draw_instances(image, **kwargs, placed_labels=placed)
    everything = {p.key: p.rect for p in placed}
    assert 8 <= len(everything) < len(masks)  # crowded: some labels must go
    by_area = np.argsort(-areas, kind="stable")
    for k in (5, 20, 60):
        keep = np.sort(by_area[:k])
        largest = dict(kwargs, masks=masks[keep], classes=[kwargs["classes"][i] for i in keep],
                       scores=[kwargs["scores"][i] for i in keep])
        placed_k = []
        draw_instances(image, **largest, placed_labels=placed_k)
        assert ({int(keep[p.key]): p.rect for p in placed_k}
                == {i: r for i, r in everything.items() if i in set(keep.tolist())})


def test_when_only_one_label_fits_the_larger_region_keeps_it(monkeypatch):
    use_font(monkeypatch, render, cv2.FONT_HERSHEY_SIMPLEX, 0.5)
    bw, bh, _, _ = render._label_box_size("building", render.Style.for_image(1, 1))
    sw, sh, _, _ = render._label_box_size("building", render.Style(1, render.MIN_FONT_SCALE, 1))
    h, w = bh + 2, bw + 2
    assert 2 * sh + 1 > h and 2 * sw + 1 > w  # two labels fit in no font: one must go
    left_larger = np.zeros((h, w), np.int64)
    left_larger[:, w // 2 + 3:] = 1
    image = np.full((h, w, 3), GREY, np.uint8)
    for labels, larger in ((left_larger, 0), (1 - left_larger, 1)):
        placed = []
        out = draw_semantic(image, labels, ["building", "building"], alpha=0.0,
                            min_label_area=1, placed_labels=placed)
        assert [p.key for p in placed] == [larger]
        plain = draw_semantic(image, labels, ["building", "building"], alpha=0.0,
                              show_labels=False)
        check_labels(plain, out, [placed[0].rect], min_labels=1)


def test_a_label_too_wide_for_its_font_is_drawn_whole_in_a_smaller_one(monkeypatch):
    use_font(monkeypatch, render, cv2.FONT_HERSHEY_COMPLEX, 0.8)
    (tw, _), _ = cv2.getTextSize("giraffe 93%", cv2.FONT_HERSHEY_COMPLEX, 0.8, 1)
    h, w = 60, int(tw * 0.9)  # narrower than the label in the given font
    image = np.full((h, w, 3), GREY, np.uint8)
    boxes = np.array([[2, 30, w - 2, 58]], float)
    kwargs = dict(boxes=boxes, classes=[0], scores=[0.93], class_names=["giraffe"],
                  show_boxes=False)
    placed = []
    out = draw_instances(image, **kwargs, placed_labels=placed)
    assert len(placed) == 1 and placed[0].text == "giraffe 93%"
    assert placed[0].font_scale < 0.8
    check_labels(draw_instances(image, **kwargs, show_labels=False), out, [placed[0].rect], 1)
