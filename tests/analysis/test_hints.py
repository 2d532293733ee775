"""From error to cause (d2seg.analysis.hints): each hint appears when its cause is in the run's
numbers and not otherwise. Runs are analysis.json contents, training JSONs and configs built by
hand here, with the counts checked by hand."""

from __future__ import annotations

import json

from d2seg.analysis.hints import hints, training_facts
from d2seg.report import build_html, read_run

ERRORS = ("classification", "localization", "both", "duplicate", "background", "missed")


def _analysis(top: str, per_class=None) -> dict:
    dap = {e: 1.0 for e in ERRORS}
    dap[top] = 9.0
    return {"iou_types": {"segm": {"dAP": dap, "per_class": per_class or []}}}


def _train_json(tmp_path, empty_images: int, per_class: dict) -> str:
    images, anns = [], []
    names = list(per_class)
    for i, (name, count) in enumerate(per_class.items()):
        for k in range(count):
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": f"{image_id}.png", "height": 8, "width": 8})
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": i + 1,
                         "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0})
    crowd_only = len(images) + 1  # an image whose only object is a crowd region counts as empty
    images.append({"id": crowd_only, "file_name": "c.png", "height": 8, "width": 8})
    anns.append({"id": len(anns) + 1, "image_id": crowd_only, "category_id": 1,
                 "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 1})
    for _ in range(empty_images - 1):
        images.append({"id": len(images) + 1, "file_name": "e.png", "height": 8, "width": 8})
    path = tmp_path / f"train_{empty_images}.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [
        {"id": i + 1, "name": n} for i, n in enumerate(names)]}))
    return str(path)


def test_training_facts_count_empty_images_and_instances(tmp_path):
    facts = training_facts(_train_json(tmp_path, 3, {"cat": 4, "dog": 2}))
    assert facts == {"images": 9, "empty_images": 3, "instances_per_class": {"cat": 4, "dog": 2}}


def test_background_hint_needs_dominant_background_empty_images_and_the_filter(tmp_path):
    facts = training_facts(_train_json(tmp_path, 3, {"cat": 4, "dog": 2}))
    given = hints(_analysis("background"), facts, {"FILTER_EMPTY_ANNOTATIONS": True})
    assert [h["kind"] for h in given] == ["background_empty_images"]
    assert "3 of 9 training images have no objects" in given[0]["text"]
    assert "FILTER_EMPTY_ANNOTATIONS" in given[0]["text"]
    # cause absent: no empty image / the filter is off / background is not the largest error
    none_empty = training_facts(_train_json(tmp_path, 1, {"cat": 4, "dog": 2}))
    none_empty["empty_images"] = 0
    assert hints(_analysis("background"), none_empty, {"FILTER_EMPTY_ANNOTATIONS": True}) == []
    assert hints(_analysis("background"), facts, {"FILTER_EMPTY_ANNOTATIONS": False}) == []
    assert hints(_analysis("missed"), facts, {"FILTER_EMPTY_ANNOTATIONS": True}) == []
    assert hints(_analysis("background")) == []  # no training facts: no guess


def test_small_object_hint_needs_dominant_localization_and_weak_small_objects():
    config = {"MIN_SIZE_TRAIN": [320], "MIN_SIZE_TEST": 320}
    weak_small = {"segm": {"stats": {"APs": 0.10, "APl": 0.60}}}
    given = hints(_analysis("localization"), None, config, weak_small)
    assert [h["kind"] for h in given] == ["localization_small_objects"]
    assert "APs 10.0 vs APl 60.0" in given[0]["text"] and "320 px" in given[0]["text"]
    even = {"segm": {"stats": {"APs": 0.40, "APl": 0.60}}}
    assert hints(_analysis("localization"), None, config, even) == []
    no_small = {"segm": {"stats": {"APs": -1.0, "APl": 0.60}}}  # pycocotools: no small object
    assert hints(_analysis("localization"), None, config, no_small) == []
    assert hints(_analysis("background"), None, config, weak_small) == []


def test_low_recall_hint_names_the_class_and_its_share_of_training_instances(tmp_path):
    facts = training_facts(_train_json(tmp_path, 1, {"cat": 18, "dog": 18, "eel": 4}))
    per_class = [{"name": "cat", "num_objects": 10, "recall_at_best": 0.9},
                 {"name": "dog", "num_objects": 10, "recall_at_best": 0.8},
                 {"name": "eel", "num_objects": 5, "recall_at_best": 0.2}]
    given = hints(_analysis("missed", per_class), facts, {})
    assert [(h["kind"], h["evidence"]["class"]) for h in given] == [("class_low_recall", "eel")]
    assert "4 of the 40 training instances (10.0%)" in given[0]["text"]
    balanced = [dict(c, recall_at_best=0.85) for c in per_class]
    assert hints(_analysis("missed", balanced), facts, {}) == []
    assert hints(_analysis("missed", per_class), None, {}) == []  # no training facts: no guess


def test_report_shows_the_hints(tmp_path):
    analysis = _analysis("background")
    analysis.update({"error_types": list(ERRORS), "special_types": [], "bg_iou": 0.1,
                     "pos_iou": 0.5, "score_threshold": 0.5})
    analysis["iou_types"]["segm"].update({"special_dAP": {}, "counts": {}, "ap50": 50.0,
                                          "num_objects": 1, "num_detections": 1, "overall": {}})
    analysis["hints"] = [{"kind": "x", "iou_type": "segm", "text": "keep <empty> images"}]
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "analysis.json").write_text(json.dumps(analysis))
    page = build_html(read_run(tmp_path))
    assert '<ul id="hints"><li>keep &lt;empty&gt; images</li></ul>' in page
