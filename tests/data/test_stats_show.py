"""``d2seg data stats`` and ``d2seg data show`` against pycocotools and plain counting."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from d2seg.cli.main import main
from d2seg.visualize.ground_truth import render_ground_truth
from d2seg.data.stats import dataset_stats, write_stats

TINY = ("tiny_coco16/small_coco/instances_train2017_small.json",
        "tiny_coco16/small_coco/train_2017_small")


@pytest.mark.shared
def test_stats_match_pycocotools_on_tiny_coco(shared_data, tmp_path):
    js = shared_data / TINY[0]
    coco = COCO(str(js))
    st = dataset_stats(js)
    assert st["images"] == len(coco.imgs) and st["instances"] == len(coco.anns)
    for cat in coco.cats.values():
        assert st["instances_per_class"][cat["name"]] == len(coco.getAnnIds(catIds=[cat["id"]]))
    per_image = [len(coco.getAnnIds(imgIds=[i])) for i in coco.imgs]
    assert st["masks_per_image"]["max"] == max(per_image)
    assert st["masks_per_image"]["min"] == min(per_image)
    # COCOeval's area ranges: small [0, 32^2), medium [32^2, 96^2), large the rest
    areas = [a["area"] for a in coco.anns.values()]
    assert st["sizes"]["small"] == sum(a < 32 ** 2 for a in areas)
    assert st["sizes"]["medium"] == sum(32 ** 2 <= a < 96 ** 2 for a in areas)
    assert st["sizes"]["large"] == sum(a >= 96 ** 2 for a in areas)
    present = [n for n in Counter(a["category_id"] for a in coco.anns.values()).values()]
    assert st["class_imbalance"] == pytest.approx(max(present) / min(present))
    assert len(st["classes_without_instances"]) == len(coco.cats) - len(present)
    assert st["crowd"] == sum(a["iscrowd"] for a in coco.anns.values())

    j, png = write_stats(st, tmp_path)
    assert json.loads(j.read_text())["instances"] == len(coco.anns)
    with Image.open(png) as im:
        assert im.size[0] > 500 and im.size[1] > 300
        assert len(np.unique(np.asarray(im.convert("L")))) > 10  # something was drawn


@pytest.mark.shared
def test_stats_on_panoptic_counts_segments(shared_data):
    js = shared_data / "panopticapi_sample/sample_data/panoptic_examples.json"
    raw = json.loads(js.read_text())
    st = dataset_stats(js)
    segments = [s for a in raw["annotations"] for s in a["segments_info"]]
    assert st["kind"] == "coco_panoptic" and st["instances"] == len(segments) == 50
    assert st["masks_per_image"]["max"] == 32 and st["masks_per_image"]["min"] == 18


def _instances(tmp_path):
    """One 200x120 image: a square of class 3 and a square of class 7, 100 px^2 each."""
    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((120, 200, 3), 90, np.uint8)).save(tmp_path / "images" / "x.png")
    data = {"images": [{"id": 1, "file_name": "x.png", "width": 200, "height": 120}],
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 100,
                 "bbox": [60, 50, 10, 10], "segmentation": [[60, 50, 70, 50, 70, 60, 60, 60]]},
                {"id": 2, "image_id": 1, "category_id": 7, "iscrowd": 0, "area": 100,
                 "bbox": [130, 70, 10, 10],
                 "segmentation": [[130, 70, 140, 70, 140, 80, 130, 80]]}]}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return tmp_path / "ann.json", tmp_path / "images"


def test_show_colours_mask_pixels_only(tmp_path):
    ann, images = _instances(tmp_path)
    [out] = render_ground_truth(ann, images, tmp_path / "show", n=5)
    drawn = np.asarray(Image.open(out).convert("RGB")).astype(int)
    source = np.asarray(Image.open(images / "x.png").convert("RGB")).astype(int)
    coco = COCO(str(ann))
    masks = [coco.annToMask(a).astype(bool) for a in coco.anns.values()]
    changed = np.abs(drawn - source).sum(-1) > 0
    for m in masks:  # the inside of every mask (one pixel in from the contour) is coloured
        inner = m & np.roll(m, 2, 0) & np.roll(m, -2, 0) & np.roll(m, 2, 1) & np.roll(m, -2, 1)
        assert inner.sum() > 20 and changed[inner].all()
    # pixels more than 30 px from every mask (room for contour, box and label) are untouched
    ys, xs = np.mgrid[:120, :200]
    near = np.zeros_like(changed)
    for m in masks:
        my, mx = np.nonzero(m)
        near |= ((ys >= my.min() - 30) & (ys <= my.max() + 30)
                 & (xs >= mx.min() - 30) & (xs <= mx.max() + 30))
    assert (~near).sum() > 10000 and not changed[~near].any()
    # the two classes get different colours
    assert tuple(drawn[55, 65]) != tuple(drawn[75, 135])


@pytest.mark.shared
def test_show_and_stats_cli_on_panoptic(shared_data, tmp_path, capsys):
    sample = shared_data / "panopticapi_sample/sample_data"
    args = [str(sample / "panoptic_examples.json"), "--images", str(sample / "input_images"),
            "--panoptic-root", str(sample / "panoptic_examples")]
    assert main(["data", "show", *args, "--out", str(tmp_path), "-n", "1"]) == 0
    [png] = list(tmp_path.rglob("*_gt.png"))
    raw = json.loads((sample / "panoptic_examples.json").read_text())
    first = min(raw["images"], key=lambda i: i["id"])
    assert Image.open(png).size == (first["width"], first["height"])
    assert main(["data", "stats", *args, "--out", str(tmp_path / "st")]) == 0
    assert len(list((tmp_path / "st").glob("*.png"))) == 1
    assert "50 instances" in capsys.readouterr().out


def test_stats_cli_on_small_dataset(tmp_path, capsys):
    ann, _ = _instances(tmp_path)
    assert main(["data", "stats", str(ann), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "2 instances" in out
    summary = json.loads((tmp_path / "out" / "ann_stats.json").read_text())
    assert summary["sizes"] == {"small": 2, "medium": 0, "large": 0}
    assert summary["class_imbalance"] == 1.0
