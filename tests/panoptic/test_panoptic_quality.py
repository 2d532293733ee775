"""pq_compute_folders against panopticapi.evaluation.pq_compute on real and synthetic data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from d2seg.errors import D2SegError
from d2seg.evaluation.panoptic_quality import pq_compute_folders

pytest.importorskip("panopticapi.evaluation")


def assert_same_as_reference(ours: dict, ref: dict) -> None:
    for group in ("All", "Things", "Stuff"):
        assert ours[group] == ref[group], group  # exact, not approximately
    assert ours["per_class"] == ref["per_class"]


def _sample(shared_data):
    root = shared_data / "panopticapi_sample" / "sample_data"
    return root / "panoptic_examples.json", root / "panoptic_examples"


def test_sample_ground_truth_against_itself_is_one(shared_data, panoptic_helpers):
    gt_json, gt_dir = _sample(shared_data)
    ours = pq_compute_folders(gt_json, gt_dir, gt_json, gt_dir)
    ref = panoptic_helpers.reference_pq(gt_json, gt_dir, gt_json, gt_dir)
    assert_same_as_reference(ours, ref)
    assert ours["All"]["pq"] == ours["All"]["sq"] == ours["All"]["rq"] == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_sample_with_perturbed_predictions(shared_data, panoptic_helpers, tmp_path, seed):
    h = panoptic_helpers
    gt_json, gt_dir = _sample(shared_data)
    images, categories = h.load_dataset(gt_json, gt_dir)
    pred_json, pred_dir = h.write_dataset(tmp_path, "pred", h.perturb(images, categories, seed),
                                          categories)
    ours = pq_compute_folders(gt_json, gt_dir, pred_json, pred_dir)
    ref = h.reference_pq(gt_json, gt_dir, pred_json, pred_dir)
    assert_same_as_reference(ours, ref)
    assert ours["All"]["pq"] < 1.0


@pytest.mark.parametrize("seed", range(12))
def test_synthetic_with_crowd_void_and_perturbations(panoptic_helpers, tmp_path, seed, decoder):
    h = panoptic_helpers
    images, categories = h.synthetic_panoptic(seed, n_images=5)
    gt_json, gt_dir = h.write_dataset(tmp_path, "gt", images, categories)
    pred_json, pred_dir = h.write_dataset(tmp_path, "pred", h.perturb(images, categories, seed),
                                          categories)
    ours = pq_compute_folders(gt_json, gt_dir, pred_json, pred_dir, workers=1 + seed % 2)
    ref = h.reference_pq(gt_json, gt_dir, pred_json, pred_dir)
    assert_same_as_reference(ours, ref)


def test_many_images_through_the_process_pool(panoptic_helpers, tmp_path):
    h = panoptic_helpers
    images, categories = h.synthetic_panoptic(99, n_images=24, h=40, w=50)
    gt_json, gt_dir = h.write_dataset(tmp_path, "gt", images, categories)
    pred_json, pred_dir = h.write_dataset(tmp_path, "pred", h.perturb(images, categories, 5),
                                          categories)
    ours = pq_compute_folders(gt_json, gt_dir, pred_json, pred_dir, workers=2)
    assert_same_as_reference(ours, h.reference_pq(gt_json, gt_dir, pred_json, pred_dir))


def test_hand_checked_crowd_and_void_case(panoptic_helpers, tmp_path):
    """4x4 image: a person (8 px), a crowd of people (4 px), VOID (4 px)."""
    h = panoptic_helpers
    cats = [{"id": 1, "name": "person", "isthing": 1}, {"id": 2, "name": "sky", "isthing": 0}]
    gt = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [5, 5, 0, 0], [5, 5, 0, 0]])
    # prediction: person grows onto VOID (still a match: VOID pixels leave the union);
    # a second person mostly on the crowd (ignored, no FP); nothing else.
    pred = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [9, 9, 1, 1], [9, 0, 1, 1]])
    gt_json, gt_dir = h.write_dataset(tmp_path, "gt", [(1, gt, {1: (1, 0), 5: (1, 1)})], cats)
    pred_json, pred_dir = h.write_dataset(tmp_path, "pred", [(1, pred, {1: (1, 0), 9: (1, 0)})],
                                          cats)
    ours = pq_compute_folders(gt_json, gt_dir, pred_json, pred_dir)
    assert ours["per_class"][1] == {"pq": 1.0, "sq": 1.0, "rq": 1.0}  # IoU 8 / (12 + 8 - 8 - 4)
    assert ours["counts"][1] == {"tp": 1, "fp": 0, "fn": 0}
    assert ours["Stuff"]["n"] == 0


def test_segment_missing_from_the_png_is_a_user_error(panoptic_helpers, tmp_path):
    h = panoptic_helpers
    images, categories = h.synthetic_panoptic(3, n_images=2)
    gt_json, gt_dir = h.write_dataset(tmp_path, "gt", images, categories)
    data = json.loads(gt_json.read_text())
    data["annotations"][0]["segments_info"].append({"id": 123, "category_id": 1, "iscrowd": 0})
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps(data))
    with pytest.raises(D2SegError, match="in the JSON but not in the PNG"):
        pq_compute_folders(gt_json, gt_dir, bad_json, gt_dir, workers=1)
    shutil.rmtree(gt_dir)
    with pytest.raises(D2SegError, match="folder"):
        pq_compute_folders(gt_json, gt_dir, gt_json, gt_dir)


def test_ground_truth_pixels_missing_from_its_json(panoptic_helpers, tmp_path):
    """Ground truth ids in the PNG but not the JSON are neither segments nor VOID (reference)."""
    h = panoptic_helpers
    images, categories = h.synthetic_panoptic(8, n_images=4)
    pred_json, pred_dir = h.write_dataset(tmp_path, "pred", h.perturb(images, categories, 8),
                                          categories)
    trimmed = [(i, ids, dict(list(segs.items())[1:])) for i, ids, segs in images]
    gt_json, gt_dir = h.write_dataset(tmp_path, "gt", trimmed, categories)
    for (_, ids, segs), (_, _, kept) in zip(images, trimmed):
        assert len(kept) < len(segs) and np.isin(ids, list(segs)).any()
    ours = pq_compute_folders(gt_json, gt_dir, pred_json, pred_dir)
    assert_same_as_reference(ours, h.reference_pq(gt_json, gt_dir, pred_json, pred_dir))
