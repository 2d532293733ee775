"""``d2seg data merge``: hand-built COCO files whose merge is worked out by hand, read back with
pycocotools; the merged file of two image folders passes ``d2seg data check``."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from d2seg.cli.main import main


def _square(x, y, s=10):
    return [[x, y, x + s, y, x + s, y + s, x, y + s]]


def _ann(i, image_id, cat, x, **extra):
    return {"id": i, "image_id": image_id, "category_id": cat, "iscrowd": 0,
            "segmentation": _square(x, 5), "bbox": [x, 5, 10, 10], "area": 100.0, **extra}


@pytest.fixture
def files(tmp_path):
    """A: categories cat(1) dog(2), images x.png(1) y.png(2). B (pre-annotations, with scores):
    categories dog(7) bird(3), images y.png(10) z.png(11). Both in their own folder."""
    for folder, names in (("a", ("x", "y")), ("b", ("y", "z"))):
        (tmp_path / folder).mkdir()
        for n in names:
            cv2.imwrite(str(tmp_path / folder / f"{n}.png"), np.full((40, 50, 3), 90, np.uint8))
    size = {"height": 40, "width": 50}
    a = {"images": [{"id": 1, "file_name": "x.png", **size}, {"id": 2, "file_name": "y.png", **size}],
         "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
         "annotations": [_ann(5, 1, 1, 1), _ann(6, 2, 2, 2), _ann(7, 2, 1, 3)]}
    b = {"images": [{"id": 10, "file_name": "y.png", **size}, {"id": 11, "file_name": "z.png", **size}],
         "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "bird"}],
         "annotations": [_ann(1, 10, 7, 11, score=0.9), _ann(2, 11, 3, 12, score=0.8),
                         _ann(3, 11, 7, 13, score=0.7)]}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    return tmp_path


def _by_file(path) -> dict:
    """{file_name: sorted [(category name, x of the square, has score)]} via pycocotools."""
    coco = COCO(str(path))
    out = {}
    for img in coco.dataset["images"]:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        out[img["file_name"]] = sorted((coco.cats[a["category_id"]]["name"], a["bbox"][0],
                                        "score" in a) for a in anns)
    return out


def test_merge_remaps_ids_matches_categories_and_prefers(files, capsys):
    """Hand-worked: categories cat 1, dog 2 (B's dog 7 -> 2), bird 3 (new, one note line); the
    duplicate y.png is an error without --prefer, and with --prefer b.json keeps B's one label
    of it and drops A's two; ids are 1..N; --drop-score removes every score."""
    a, b, out = files / "a.json", files / "b.json", files / "m.json"
    assert main(["data", "merge", str(a), str(b), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "y.png is also in" in err and "--prefer" in err
    assert not out.exists()

    assert main(["data", "merge", str(a), str(b), "--out", str(out), "--prefer", str(b),
                 "--drop-score"]) == 0
    printed = capsys.readouterr().out
    assert "adds category 'bird' (id 3)" in printed and "keeping" in printed
    merged = json.loads(out.read_text())
    assert [(c["id"], c["name"]) for c in merged["categories"]] == [(1, "cat"), (2, "dog"),
                                                                    (3, "bird")]
    assert [im["id"] for im in merged["images"]] == [1, 2, 3]
    assert [an["id"] for an in merged["annotations"]] == [1, 2, 3, 4]
    assert _by_file(out) == {"x.png": [("cat", 1, False)], "y.png": [("dog", 11, False)],
                             "z.png": [("bird", 12, False), ("dog", 13, False)]}

    assert main(["data", "merge", str(a), str(b), "--out", str(out), "--prefer", "first"]) == 0
    assert _by_file(out) == {"x.png": [("cat", 1, False)],
                             "y.png": [("cat", 3, False), ("dog", 2, False)],
                             "z.png": [("bird", 12, True), ("dog", 13, True)]}


def test_merge_of_two_folders_passes_data_check(files, capsys):
    """With --images a b, y.png of A and of B are different files: all four images are kept,
    named a/x.png, a/y.png, b/y.png, b/z.png relative to the common folder, and the merged file
    passes d2seg data check against that folder."""
    out = files / "m.json"
    assert main(["data", "merge", str(files / "a.json"), str(files / "b.json"), "--out",
                 str(out), "--images", str(files / "a"), str(files / "b")]) == 0
    assert sorted(_by_file(out)) == ["a/x.png", "a/y.png", "b/y.png", "b/z.png"]
    capsys.readouterr()
    assert main(["data", "check", str(out), "--images", str(files)]) == 0
    assert ": ok: 0 errors" in capsys.readouterr().out


@pytest.mark.parametrize("breakage, words", [
    (lambda a: a["annotations"].append(_ann(9, 1, 42, 4)), "unknown category id 42"),
    (lambda a: a["categories"].append({"id": 9, "name": "cat"}), "category name 'cat' is listed twice"),
    (lambda a: a["annotations"].append(_ann(9, 77, 1, 4)), "unknown image id 77"),
])
def test_bad_inputs_are_one_line(files, capsys, breakage, words):
    """An annotation of an undeclared category or image, or a category name listed twice, is one
    error line naming a.json, exit 2, and nothing is written."""
    a = json.loads((files / "a.json").read_text())
    breakage(a)
    (files / "a.json").write_text(json.dumps(a))
    assert main(["data", "merge", str(files / "a.json"), str(files / "b.json"), "--out",
                 str(files / "m.json"), "--prefer", "last"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "a.json" in err
    assert not (files / "m.json").exists()
