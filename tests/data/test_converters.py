"""Converters round-trip: convert, decode with pycocotools, compare with the source."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from shapely.geometry import Polygon

from d2seg.cli.main import main
from d2seg.data.check import check_coco
from d2seg.data.converters import (instance_masks_to_coco, labelme_to_coco,
                                   semantic_masks_to_coco)
from d2seg.errors import D2SegError


def _labelme(path, image, h, w, shapes):
    path.write_text(json.dumps({"version": "5.4.1", "imagePath": image, "imageHeight": h,
                                "imageWidth": w, "imageData": None, "shapes": shapes}))


def _shape(label, points, kind="polygon", group=None):
    return {"label": label, "points": points, "shape_type": kind, "group_id": group,
            "flags": {}}


TRI = [[10.5, 10.0], [60.0, 12.0], [30.0, 50.25]]
PENTA = [[70, 5], [95, 10], [98, 40], [80, 55], [65, 30]]


@pytest.fixture
def labelme_dir(tmp_path):
    src = tmp_path / "lm"
    (src / "sub").mkdir(parents=True)
    for name, size in (("one.jpg", (100, 80)), ("sub/two.jpg", (64, 64))):
        Image.new("RGB", size).save(src / name)
    _labelme(src / "one.json", "one.jpg", 80, 100, [
        _shape("zebra", TRI), _shape("apple", [[5, 60], [25, 75]], "rectangle"),
        _shape("zebra", PENTA, group=1), _shape("zebra", [[0, 0], [5, 0], [5, 5]], group=1),
        _shape("apple", [[50, 50], [55, 55]], "circle")])
    _labelme(src / "sub" / "two.json", "two.jpg", 64, 64, [
        _shape("apple", [[1, 1], [20, 1], [20, 30], [1, 30]])])
    return src


def test_labelme_round_trip(labelme_dir, tmp_path):
    out = tmp_path / "coco.json"
    summary = labelme_to_coco(labelme_dir, out)
    assert summary["skipped_shapes"] == {"circle": 1}
    coco = COCO(str(out))
    # deterministic ids: sorted label names
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == [
        (1, "apple"), (2, "zebra")]
    imgs = {i["file_name"]: i for i in coco.imgs.values()}
    assert set(imgs) == {"one.jpg", "sub/two.jpg"}
    assert (imgs["one.jpg"]["width"], imgs["one.jpg"]["height"]) == (100, 80)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[imgs["one.jpg"]["id"]]))
    assert len(anns) == 3  # triangle, rectangle, the 2-polygon group
    tri = next(a for a in anns if a["segmentation"] == [sum(TRI, [])])
    assert tri["category_id"] == 2
    # polygon area: pycocotools' rasterised area is close to the exact (shapely) area
    assert tri["area"] == pytest.approx(Polygon(TRI).area, rel=0.05)
    rect = next(a for a in anns if a["category_id"] == 1)
    assert rect["bbox"] == [5.0, 60.0, 20.0, 15.0]
    assert rect["area"] == pytest.approx(20 * 15, rel=0.1)
    group = next(a for a in anns if len(a["segmentation"]) == 2)
    exact = Polygon(PENTA).area + Polygon([[0, 0], [5, 0], [5, 5]]).area
    assert group["area"] == pytest.approx(exact, rel=0.1)
    assert coco.annToMask(group).sum() == group["area"]
    # and the result passes d2seg data check
    assert check_coco(out, labelme_dir).ok


def test_labelme_cli_with_label_order(labelme_dir, tmp_path, capsys):
    out = tmp_path / "c.json"
    assert main(["data", "convert", "labelme", str(labelme_dir), str(out),
                 "--labels", "zebra,apple,pear"]) == 0
    cats = json.loads(out.read_text())["categories"]
    assert [(c["id"], c["name"]) for c in cats] == [(1, "zebra"), (2, "apple"), (3, "pear")]
    assert main(["data", "convert", "labelme", str(labelme_dir), str(out),
                 "--labels", "zebra"]) == 2
    assert "apple" in capsys.readouterr().err


def _with_ignore_shapes(labelme_dir):
    """Adds an ``__ignore__`` polygon to each labelme file of ``labelme_dir``."""
    for path, points in ((labelme_dir / "one.json", PENTA), (labelme_dir / "sub" / "two.json", TRI)):
        doc = json.loads(path.read_text())
        doc["shapes"].append(_shape("__ignore__", points))
        path.write_text(json.dumps(doc))


def test_labelme_ignore_label_is_no_class(labelme_dir, tmp_path):
    """``__ignore__`` shapes make no category and no annotation (labelme's own COCO export skips
    them the same way): the JSON equals the one converted from the files without them, and the
    two skipped shapes are counted."""
    reference = tmp_path / "reference.json"
    labelme_to_coco(labelme_dir, reference)
    _with_ignore_shapes(labelme_dir)
    out = tmp_path / "coco.json"
    summary = labelme_to_coco(labelme_dir, out)
    assert summary["skipped_shapes"] == {"circle": 1, "__ignore__": 2}
    assert json.loads(out.read_text()) == json.loads(reference.read_text())
    # an explicit list without __ignore__ is enough, and __ignore__ in it is dropped too
    for labels in (["zebra", "apple"], ["__ignore__", "zebra", "apple"]):
        labelme_to_coco(labelme_dir, out, labels=labels)
        assert [c["name"] for c in json.loads(out.read_text())["categories"]] == ["zebra", "apple"]


def test_labelme_labels_file_as_labelme_writes_it(labelme_dir, tmp_path, capsys):
    """A labels file in labelme's labels.txt layout: ``__ignore__`` dropped, the others (with
    ``_background_``, which labelme keeps as a category) in file order, ids 1..K."""
    _with_ignore_shapes(labelme_dir)
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\nzebra\napple\n\n")
    out = tmp_path / "c.json"
    assert main(["data", "convert", "labelme", str(labelme_dir), str(out),
                 "--labels", str(labels)]) == 0
    cats = json.loads(out.read_text())["categories"]
    assert [(c["id"], c["name"]) for c in cats] == [(1, "_background_"), (2, "zebra"), (3, "apple")]
    anns = json.loads(out.read_text())["annotations"]
    assert sorted(a["category_id"] for a in anns) == [2, 2, 3, 3]


def test_labelme_unlisted_label_error_names_the_file(labelme_dir, tmp_path, capsys):
    """A label the files use but the labels do not list: one error line naming the labels file
    (and the labelme file using the label); with a comma list, the labelme file using it."""
    _with_ignore_shapes(labelme_dir)
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\nzebra\n")
    out = tmp_path / "c.json"
    assert main(["data", "convert", "labelme", str(labelme_dir), str(out),
                 "--labels", str(labels)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and not out.exists()
    assert f"{labels}: label 'apple', used in {labelme_dir / 'one.json'}, is not listed" in err
    with pytest.raises(D2SegError) as info:
        labelme_to_coco(labelme_dir, out, labels=["zebra"])
    assert info.value.file == str(labelme_dir / "one.json")
    assert str(info.value).startswith(
        f"{labelme_dir / 'one.json'}: --labels: label 'apple' is not in the --labels list")
    labels.write_text("zebra\napple\nzebra\n")
    with pytest.raises(D2SegError, match="listed twice") as info:
        labelme_to_coco(labelme_dir, out, labels=labels)
    assert (info.value.file, info.value.where) == (str(labels), "line 3")


@pytest.fixture
def mask_dirs(tmp_path):
    """Two images; instance-id PNGs (16-bit) and semantic PNGs (8-bit, 255 = ignore)."""
    rng = np.random.default_rng(3)
    for d in ("img", "inst", "sem"):
        (tmp_path / d).mkdir()
    truth = {}
    for k, (h, w) in enumerate([(30, 40), (25, 35)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            tmp_path / "img" / f"im{k}.jpg")
        inst = np.zeros((h, w), np.uint16)
        inst[2:10, 3:15] = 1001
        inst[12:20, 5:9] = 1002
        inst[5:25, 20:30] = 2001
        inst[0, w - 1] = 7  # a value below the divisor: not an instance
        if k == 1:
            inst[inst == 1002] = 0
        Image.fromarray(inst).save(tmp_path / "inst" / f"im{k}.png")
        sem = rng.integers(0, 3, (h, w)).astype(np.uint8)
        sem[:3] = 255
        Image.fromarray(sem).save(tmp_path / "sem" / f"im{k}.png")
        truth[f"im{k}.jpg"] = (inst, sem)
    return tmp_path, truth


def test_instance_masks_round_trip_pixel_exact(mask_dirs):
    root, truth = mask_dirs
    out = root / "inst.json"
    instance_masks_to_coco(root / "inst", out, image_dir=root / "img", classes=["car", "tree"])
    coco = COCO(str(out))
    for img in coco.imgs.values():
        inst, _ = truth[img["file_name"]]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        expected = {int(v) for v in np.unique(inst) if v >= 1000}
        assert len(anns) == len(expected)
        for a in anns:
            m = coco.annToMask(a).astype(bool)
            [value] = np.unique(inst[m])
            assert np.array_equal(m, inst == value)  # pixel-exact
            assert a["category_id"] == value // 1000 and a["area"] == m.sum()
    assert check_coco(out, root / "img").ok


def test_semantic_masks_round_trip_pixel_exact(mask_dirs):
    root, truth = mask_dirs
    out = root / "sem.json"
    semantic_masks_to_coco(root / "sem", out, image_dir=root / "img", classes=["a", "b", "c"])
    coco = COCO(str(out))
    for img in coco.imgs.values():
        _, sem = truth[img["file_name"]]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        assert sorted(a["category_id"] - 1 for a in anns) == sorted(
            int(v) for v in np.unique(sem) if v != 255)
        for a in anns:
            assert np.array_equal(coco.annToMask(a).astype(bool), sem == a["category_id"] - 1)


def test_mask_converters_cli_and_errors(mask_dirs, capsys):
    root, _ = mask_dirs
    assert main(["data", "convert", "masks", str(root / "inst"), str(root / "i.json"),
                 "--images", str(root / "img"), "--classes", "car,tree"]) == 0
    assert main(["data", "convert", "semantic", str(root / "sem"), str(root / "s.json"),
                 "--images", str(root / "img"), "--classes", "a,b,c"]) == 0
    # value 2001 means class 2, but only one class is named: one-line error, exit 2
    assert main(["data", "convert", "masks", str(root / "inst"), str(root / "x.json"),
                 "--images", str(root / "img"), "--classes", "car"]) == 2
    assert "2001" in capsys.readouterr().err
    assert not (root / "x.json").exists()
    with pytest.raises(D2SegError, match="ignore label"):
        semantic_masks_to_coco(root / "sem", root / "y.json", image_dir=root / "img",
                               classes=["a", "b"])
