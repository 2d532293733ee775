"""draw_panoptic / draw_semantic: each region takes its class colour (things: shades of it)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from d2seg.visualize import draw_panoptic, draw_semantic
from d2seg.visualize.colours import class_colors
from d2seg.io.panoptic_png import read_panoptic_png
from d2seg.visualize.files import category_tables

CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def interior(region):
    """Region pixels whose 4-neighbours are all in the region (away from drawn edges)."""
    return cv2.erode(region.astype(np.uint8), CROSS, borderType=cv2.BORDER_CONSTANT,
                     borderValue=1).astype(bool) & region


def hue(bgr):
    hsv = cv2.cvtColor(np.asarray(bgr, np.float32).reshape(1, 1, 3) / 255.0, cv2.COLOR_BGR2HSV)
    return float(hsv[0, 0, 0])


def toy_panoptic():
    """Sky (stuff) on top, grass (stuff) below, three people and a dog, void on the right."""
    pan = np.zeros((60, 100), np.int64)
    pan[:30, :90] = 11            # sky
    pan[30:, :90] = 12            # grass
    pan[20:50, 5:20] = 101        # person
    pan[20:50, 25:40] = 102       # person
    pan[20:50, 45:60] = 103       # person
    pan[40:55, 65:85] = 104       # dog
    segments = [{"id": 11, "category_id": 7}, {"id": 12, "category_id": 9},
                {"id": 101, "category_id": 1}, {"id": 102, "category_id": 1},
                {"id": 103, "category_id": 1, "score": 0.8}, {"id": 104, "category_id": 3}]
    names = {1: "person", 3: "dog", 7: "sky", 9: "grass"}
    isthing = {1: True, 3: True, 7: False, 9: False}
    colours = {1: (30, 30, 220), 3: (200, 120, 20), 7: (230, 180, 90), 9: (40, 200, 60)}
    return pan, segments, names, isthing, colours


def test_every_segment_takes_its_class_colour_things_in_distinct_shades():
    pan, segments, names, isthing, colours = toy_panoptic()
    image = np.zeros((60, 100, 3), np.uint8)
    out = draw_panoptic(image, pan, segments, names, isthing, colours, alpha=1.0,
                        show_labels=False)
    fills = {}
    for s in segments:
        inside = interior(pan == s["id"])
        values = np.unique(out[inside], axis=0)
        assert len(values) == 1, s  # one colour per segment
        fills[s["id"]] = tuple(int(v) for v in values[0])
    assert fills[11] == colours[7] and fills[12] == colours[9]  # stuff: the class colour
    assert fills[101] == colours[1] and fills[104] == colours[3]  # first thing of a class too
    people = [fills[i] for i in (101, 102, 103)]
    assert len(set(people)) == 3
    assert all(abs(hue(p) - hue(colours[1])) < 4 for p in people)
    assert (out[pan == 0] == 0).all()  # void untouched


def test_segment_edges_are_darker_and_void_and_unknown_ids_stay_as_they_are():
    pan, segments, names, isthing, colours = toy_panoptic()
    pan[0:3, 0:3] = 999  # an id without segments_info: void
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 100, 3), dtype=np.uint8)
    out = draw_panoptic(image, pan, segments, names, isthing, colours, show_labels=False)
    void = (pan == 0) | (pan == 999)
    assert (out[void] == image[void]).all()
    assert (out[~void] != image[~void]).any(axis=1).mean() > 0.9
    black = np.zeros_like(image)
    edges = draw_panoptic(black, pan, segments, names, isthing, colours, alpha=1.0,
                          show_labels=False)
    boundary = (pan[:, 19] == 101) & (pan[:, 20] == 12)  # person | grass column edge
    assert boundary.any()
    person_edge, grass_edge = edges[boundary, 19].astype(int), edges[boundary, 20].astype(int)
    assert (person_edge < np.array(colours[1])).any(axis=1).all()
    assert (grass_edge <= np.array(colours[9])).all()


def test_labels_name_things_and_stuff_inside_their_segments():
    pan, segments, names, isthing, colours = toy_panoptic()
    pan = np.kron(pan, np.ones((4, 4), np.int64))  # room for text
    image = np.zeros(pan.shape + (3,), np.uint8)
    plain = draw_panoptic(image, pan, segments, names, isthing, colours, show_labels=False)
    labelled = draw_panoptic(image, pan, segments, names, isthing, colours)
    changed = (plain != labelled).any(axis=2).astype(np.uint8)
    count, _, stats, centroids = cv2.connectedComponentsWithStats(changed)
    assert count - 1 == len(segments)  # one label per segment
    ids_under = {int(pan[int(cy), int(cx)]) for cx, cy in centroids[1:]}
    assert ids_under == {s["id"] for s in segments}  # each label centred on its own segment


def test_coco_panoptic_png_decoding_matches_panopticapi(shared_data):
    from panopticapi.utils import rgb2id

    folder = shared_data / "panopticapi_sample" / "sample_data" / "panoptic_examples"
    for png in sorted(folder.glob("*.png")):
        reference = rgb2id(np.array(Image.open(png), dtype=np.uint32))
        assert (read_panoptic_png(png) == reference).all()


def test_real_coco_panoptic_segments_take_their_category_colours(shared_data):
    root = shared_data / "panopticapi_sample"
    data = json.loads((root / "sample_data" / "panoptic_examples.json").read_text())
    categories = json.loads((root / "panoptic_coco_categories.json").read_text())
    names, colours, isthing = category_tables(categories)
    ann = data["annotations"][0]
    pan = read_panoptic_png(root / "sample_data" / "panoptic_examples" / ann["file_name"])
    image = np.zeros(pan.shape + (3,), np.uint8)
    out = draw_panoptic(image, pan, ann["segments_info"], names, isthing, colours, alpha=1.0,
                        show_labels=False)
    sorted_ids = sorted(c["id"] for c in categories)
    expected_palette = class_colors(len(sorted_ids))
    for s in ann["segments_info"]:
        inside = interior(pan == s["id"])
        if not inside.any():
            continue
        values = np.unique(out[inside], axis=0)
        assert len(values) == 1
        base = expected_palette[sorted_ids.index(s["category_id"])]
        if isthing[s["category_id"]]:
            assert abs(hue(values[0]) - hue(base)) < 4 or base.max() - base.min() < 10
        else:
            assert (values[0] == base).all()


def test_semantic_classes_take_their_colours_and_the_ignore_label_is_left_alone():
    labels = np.full((40, 60), 255, np.int64)
    labels[:20, :30] = 0
    labels[:20, 30:] = 2
    labels[20:, :40] = 1
    colours = np.array([(10, 20, 30), (200, 100, 0), (0, 250, 125)], np.uint8)
    image = np.full((40, 60, 3), 77, np.uint8)
    out = draw_semantic(image, labels, ["road", "car", "tree"], colours, ignore_label=255,
                        alpha=1.0, show_labels=False)
    for c in range(3):
        assert (out[interior(labels == c)] == colours[c]).all()
    assert (out[labels == 255] == 77).all()
    # Each class is named once, by a label centred on its own pixels, and the ignore label is not
    # named. At 4x the size there is room for the names in any font, and what was drawn is read
    # off the pixels inside and outside the reported label rectangles (whether the letters of
    # one name touch each other depends on the font, so blobs of text are not counted).
    labels = np.kron(labels, np.ones((4, 4), np.int64))
    image = np.full(labels.shape + (3,), 77, np.uint8)
    out = draw_semantic(image, labels, ["road", "car", "tree"], colours, ignore_label=255,
                        alpha=1.0, show_labels=False)
    placed = []
    named = draw_semantic(image, labels, ["road", "car", "tree"], colours, ignore_label=255,
                          alpha=1.0, min_label_area=1, placed_labels=placed)
    assert sorted(p.key for p in placed) == [0, 1, 2]
    assert [p.text for p in sorted(placed, key=lambda p: p.key)] == ["road", "car", "tree"]
    changed = (named != out).any(axis=2)
    in_labels = np.zeros_like(changed)
    for p in placed:
        left, top, bw, bh = p.rect
        assert labels[top + bh // 2, left + bw // 2] == p.key  # centred on its class
        assert changed[top:top + bh, left:left + bw].sum() > 10  # its name was written there
        assert not in_labels[top:top + bh, left:left + bw].any()  # on no other label
        in_labels[top:top + bh, left:left + bw] = True
    assert not (changed & ~in_labels).any()  # and nothing outside the labels


def test_a_map_of_another_size_is_a_user_error():
    from d2seg.errors import D2SegError

    with pytest.raises(D2SegError, match="10x10"):
        draw_panoptic(np.zeros((10, 10, 3), np.uint8), np.zeros((8, 10), np.int64),
                      [{"id": 0, "category_id": 1}], ["a", "b"])


def test_detectron2_panoptic_output_draws_things_and_stuff_in_their_own_colours():
    import torch
    from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
    from detectron2.structures import Instances

    from d2seg.visualize import panoptic_from_detectron2

    h, w = 64, 96
    inst = Instances((h, w))
    masks = torch.zeros((2, h, w), dtype=torch.bool)
    masks[0, 10:40, 10:30] = True
    masks[1, 10:40, 50:70] = True
    inst.pred_masks, inst.scores = masks, torch.tensor([0.9, 0.8])
    inst.pred_classes = torch.tensor([1, 1])
    sem = torch.zeros((h, w), dtype=torch.long)
    sem[:, 75:] = 2  # stuff "wall"; 0 stands for all things in detectron2's convention
    sem[45:, :75] = 1  # stuff "floor"
    pan, info = combine_semantic_and_instance_outputs(inst, sem, 0.5, 100, 0.5)
    thing_classes, stuff_classes = ["cat", "dog"], ["things", "floor", "wall"]
    kwargs = panoptic_from_detectron2(pan, info, thing_classes, stuff_classes)
    image = np.zeros((h, w, 3), np.uint8)
    out = draw_panoptic(image, **kwargs, alpha=1.0, show_labels=False)
    palette = class_colors(len(thing_classes) + len(stuff_classes))
    pan = pan.numpy()
    fills = {}
    for s in info:
        values = np.unique(out[interior(pan == s["id"])], axis=0)
        assert len(values) == 1
        fills[s["id"]] = values[0]
        if not s["isthing"]:  # floor -> index 2 + 1, wall -> 2 + 2
            assert (values[0] == palette[len(thing_classes) + s["category_id"]]).all()
    things = [s for s in info if s["isthing"]]
    assert len(things) == 2 and len(info) == 4
    assert (fills[things[0]["id"]] == palette[1]).all()  # the first dog: the dog colour
    assert (fills[things[1]["id"]] != palette[1]).any()  # the second: a shade of it
    assert kwargs["class_names"][len(thing_classes) + 2] == "wall"


def test_semantic_scores_are_drawn_as_their_argmax():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(4, 20, 30)).astype(np.float32)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    names = ["a", "b", "c", "d"]
    assert (draw_semantic(image, logits, names) ==
            draw_semantic(image, logits.argmax(axis=0), names)).all()
