"""What the deploy tests share: the test images, comparisons of an exported model's answers
with PyTorch's, the one-error-line check of ``d2seg predict --model``, and ``d2seg label``
with an export folder."""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of XYXY boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare_detections(ref, got: dict, score_thresh: float) -> int:
    """Every PyTorch detection (detectron2 Instances) not within 1e-3 of the threshold has an
    exported one of the same class with box IoU >= 0.99, score within 1e-3 and mask IoU >= 0.98,
    and both have as many detections away from the threshold; returns the matches."""
    ref = ref.to("cpu")
    r_boxes, r_scores = ref.pred_boxes.tensor.numpy(), ref.scores.numpy()
    r_classes, r_masks = ref.pred_classes.numpy(), ref.pred_masks.numpy()
    border = np.abs(r_scores - score_thresh) < 1e-3
    g_border = np.abs(got["scores"] - score_thresh) < 1e-3
    assert (~border).sum() == (~g_border).sum(), (len(r_scores), len(got["scores"]))
    assert got["masks"].shape[1:] == r_masks.shape[1:] and got["masks"].dtype == bool
    if not len(r_boxes):
        return 0
    iou = box_iou(r_boxes, got["boxes"])
    taken, matched = set(), 0
    for i in np.flatnonzero(~border):
        same = (got["classes"] == r_classes[i]) & (np.abs(got["scores"] - r_scores[i]) <= 1e-3)
        candidates = [j for j in np.argsort(-iou[i]) if same[j] and j not in taken]
        assert candidates, f"detection {i} (class {r_classes[i]}, {r_scores[i]:.4f}) unmatched"
        j = candidates[0]
        assert iou[i, j] >= 0.99, (i, iou[i, j])
        assert mask_iou(r_masks[i], got["masks"][j]) >= 0.98, (i, mask_iou(r_masks[i], got["masks"][j]))
        taken.add(j)
        matched += 1
    return matched


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of pixels where two label maps of one shape agree."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a == b).mean())


def segment_labels(pan: np.ndarray, segments: list[dict]) -> np.ndarray:
    """Per pixel: 0 void, 1 + thing class for things, 1000 + semantic label for stuff."""
    lut = np.zeros(max([s["id"] for s in segments], default=0) + 1, np.int64)
    for s in segments:
        lut[s["id"]] = 1 + s["category_id"] if s["isthing"] else 1000 + s["category_id"]
    return lut[np.asarray(pan)]


def compare_results_json(ref: list[dict], got: list[dict]) -> None:
    """Each result of ``ref`` (a results.json of ``d2seg predict``) has one in ``got`` of the
    same category with score within 1e-3, box IoU >= 0.99 and RLE mask IoU >= 0.98, and both
    have as many."""
    from pycocotools import mask as mask_util

    assert len(got) == len(ref)
    for r in ref:
        best = max(got, key=lambda g: mask_util.iou([g["bbox"]], [r["bbox"]], [0])[0, 0]
                   if g["category_id"] == r["category_id"] else -1)
        assert best["category_id"] == r["category_id"]
        assert abs(best["score"] - r["score"]) <= 1e-3
        assert mask_util.iou([best["bbox"]], [r["bbox"]], [0])[0, 0] >= 0.99
        areas = mask_util.area([best["segmentation"], r["segmentation"]])
        assert (areas == 0).all() or \
            mask_util.iou([best["segmentation"]], [r["segmentation"]], [0])[0, 0] >= 0.98


def demo_images(odd_size: bool = True) -> dict:
    """Two demo images (192x160, as trained), and resized copies: 500x300 (down to the 320
    long-side limit), 240x400 (portrait, short side 160: not a multiple of 32), 128x96 (resized
    up) and, with ``odd_size``, 333x170."""
    import cv2

    from d2seg.data.demo import ensure_demo

    files = sorted((ensure_demo() / "val" / "images").iterdir())
    first, second = (cv2.imread(str(f)) for f in files[:2])
    images = {"demo_0": first, "demo_1": second,
              "500x300": cv2.resize(first, (500, 300), interpolation=cv2.INTER_LINEAR),
              "240x400": cv2.resize(second, (240, 400), interpolation=cv2.INTER_LINEAR),
              "128x96": cv2.resize(second, (128, 96), interpolation=cv2.INTER_AREA)}
    if odd_size:
        images["333x170"] = cv2.resize(first, (333, 170), interpolation=cv2.INTER_LINEAR)
    return images


def assert_list_gives_one_by_one(model, images: dict) -> list:
    """``model(list)`` returns a list with, for each image, the result of ``model(image)``
    (same keys, equal arrays); returns that list."""
    listed = model(list(images.values()))
    assert isinstance(listed, list) and len(listed) == len(images)
    for image, got in zip(images.values(), listed):
        alone = model(image)
        assert got.keys() == alone.keys()
        for key in alone:
            np.testing.assert_array_equal(got[key], alone[key])
    return listed


def predict_error(capsys, model_dir, image, *args) -> str:
    """``d2seg predict IMAGE --model DIR ARGS`` exits 2 with one error line; returns it."""
    from pathlib import Path

    from d2seg.cli.main import main

    code = main(["predict", str(image), "--model", str(model_dir), *args, "--out",
                 str(Path(model_dir).parent / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def check_label_with_exported_model(exported, images: dict, tmp_path) -> None:
    """``d2seg label suggest --model`` writes one annotation per detection of ``d2seg predict
    --model`` (same scores and category ids), each polygon set (tolerance 0) rasterising to that
    detection's mask with holes filled; ``d2seg label next --model`` ranks the images."""
    import json

    import cv2
    import pytest
    from pycocotools import mask as mask_util
    from scipy import ndimage as ndi

    from d2seg.cli.main import main

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("demo_0", "demo_1"):
        cv2.imwrite(str(folder / f"{name}.png"), images[name])
    assert main(["predict", str(folder), "--model", str(exported), "--out",
                 str(tmp_path / "pred"), "--no-render", "--batch-size", "1"]) == 0
    pred = json.loads((tmp_path / "pred" / "results.json").read_text())
    files = {im["id"]: im["file_name"] for im in
             json.loads((tmp_path / "pred" / "images.json").read_text())}
    pred = [r for r in pred if mask_util.area(r["segmentation"]) > 0]
    assert main(["label", "suggest", str(folder), "--model", str(exported), "--out",
                 str(tmp_path / "suggest"), "--tolerance", "0", "--score-thresh", "0",
                 "--batch-size", "1", "--quiet"]) == 0
    coco = json.loads((tmp_path / "suggest" / "instances.json").read_text())
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    key = lambda file, score: (file, -round(score, 5))  # noqa: E731
    ours = sorted(coco["annotations"], key=lambda a: key(names[a["image_id"]], a["score"]))
    theirs = sorted(pred, key=lambda r: key(files[r["image_id"]], r["score"]))
    assert len(ours) == len(theirs) > 0
    for a, r in zip(ours, theirs):
        assert a["category_id"] == r["category_id"] and a["score"] == pytest.approx(r["score"],
                                                                                    abs=1e-6)
        mask = mask_util.decode(r["segmentation"]).astype(bool)
        drawn = mask_util.decode(mask_util.merge(mask_util.frPyObjects(a["segmentation"],
                                                                       *mask.shape)))
        assert np.array_equal(drawn.astype(bool), ndi.binary_fill_holes(mask))
    assert main(["label", "next", str(folder), "--model", str(exported), "-n", "1", "--out",
                 str(tmp_path / "next"), "--quiet"]) == 0
    assert len(json.loads((tmp_path / "next" / "ranking.json").read_text())["images"]) == 2
