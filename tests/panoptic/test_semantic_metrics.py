"""Semantic metrics against a brute-force pixel loop and detectron2's SemSegEvaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from d2seg.errors import D2SegError
from d2seg.evaluation.semantic_metrics import SemanticConfusion, semantic_metrics


def brute_force(pairs, n, ignore, unlabeled=None):
    """Per-pixel counting with plain Python, then the textbook definitions. A prediction equal
    to ``unlabeled`` is a miss of its ground-truth class and no class's prediction."""
    tp, gt_n, pred_n = [0] * n, [0] * n, [0] * n
    labelled = correct = 0
    for gt, pred in pairs:
        for g, p in zip(gt.flatten().tolist(), pred.flatten().tolist()):
            if g == ignore:
                continue
            labelled += 1
            gt_n[g] += 1
            if p == unlabeled:
                continue
            pred_n[p] += 1
            if g == p:
                tp[g] += 1
                correct += 1
    ious = [tp[c] / (gt_n[c] + pred_n[c] - tp[c]) for c in range(n) if gt_n[c] + pred_n[c]]
    accs = [tp[c] / gt_n[c] for c in range(n) if gt_n[c]]
    fw = sum(tp[c] / (gt_n[c] + pred_n[c] - tp[c]) * gt_n[c] for c in range(n) if gt_n[c])
    return {"mIoU": sum(ious) / len(ious), "fwIoU": fw / labelled,
            "pixel_accuracy": correct / labelled, "mean_accuracy": sum(accs) / len(accs)}


@pytest.mark.parametrize("seed", range(10))
def test_equal_to_brute_force(seed):
    g = np.random.default_rng(seed)
    n = int(g.integers(2, 7))
    pairs = []
    for _ in range(3):
        gt = g.integers(0, n, size=(17, 23))
        gt[g.random(gt.shape) < 0.1] = 255
        pred = np.where(g.random(gt.shape) < 0.6, np.where(gt == 255, 0, gt),
                        g.integers(0, n, size=gt.shape))
        pairs.append((gt, pred))
    ours = semantic_metrics(pairs, n, ignore_label=255)
    ref = brute_force(pairs, n, 255)
    for key, value in ref.items():
        assert math.isclose(ours[key], value, rel_tol=1e-12), key


def test_streaming_updates_equal_one_big_update():
    g = np.random.default_rng(0)
    gts = [g.integers(0, 4, size=(10, 10)) for _ in range(4)]
    preds = [g.integers(0, 4, size=(10, 10)) for _ in range(4)]
    streamed = SemanticConfusion(4)
    for gt, pred in zip(gts, preds):
        streamed.update(gt, torch.from_numpy(pred))
    whole = SemanticConfusion(4)
    whole.update(np.concatenate(gts), np.concatenate(preds))
    assert np.array_equal(streamed.matrix, whole.matrix)


def test_equal_to_detectron2_sem_seg_evaluator(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import SemSegEvaluator

    g = np.random.default_rng(3)
    n, records, pairs = 4, [], []
    for i in range(3):
        gt = g.integers(0, n, size=(12, 9)).astype(np.uint8)
        gt[:2] = 255
        gt[gt == 3] = 2  # class 3 never in the ground truth: d2 and we must still agree
        Image.fromarray(gt).save(tmp_path / f"gt{i}.png")
        records.append({"file_name": f"img{i}.jpg",
                        "sem_seg_file_name": str(tmp_path / f"gt{i}.png")})
        logits = torch.randn(n, 12, 9, generator=torch.Generator().manual_seed(i))
        pairs.append((gt, logits.argmax(0).numpy(), logits))
    name = "d2seg_test_semseg_toy"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: records)
        MetadataCatalog.get(name).set(stuff_classes=list("abcd"), ignore_label=255)
    evaluator = SemSegEvaluator(name, distributed=False)
    evaluator.reset()
    evaluator.process([{"file_name": r["file_name"]} for r in records],
                      [{"sem_seg": logits} for _, _, logits in pairs])
    ref = evaluator.evaluate()["sem_seg"]
    ours = semantic_metrics([(gt, pred) for gt, pred, _ in pairs], n, ignore_label=255)
    assert math.isclose(100 * ours["mIoU"], ref["mIoU"], rel_tol=1e-12)
    assert math.isclose(100 * ours["fwIoU"], ref["fwIoU"], rel_tol=1e-12)
    assert math.isclose(100 * ours["pixel_accuracy"], ref["pACC"], rel_tol=1e-12)
    assert math.isclose(100 * ours["mean_accuracy"], ref["mACC"], rel_tol=1e-12)
    for c, cls in enumerate("abc"):
        assert math.isclose(100 * ours["per_class_iou"][c], ref[f"IoU-{cls}"], rel_tol=1e-12)


def test_out_of_range_labels_are_user_errors():
    with pytest.raises(D2SegError, match="prediction label 7"):
        SemanticConfusion(3).update(np.zeros((2, 2), int), np.full((2, 2), 7))


@pytest.mark.parametrize("seed", range(5))
def test_unlabeled_predictions_count_as_misses(seed):
    g = np.random.default_rng(100 + seed)
    n = int(g.integers(2, 6))
    pairs = []
    for _ in range(3):
        gt = g.integers(0, n, size=(13, 19))
        gt[g.random(gt.shape) < 0.1] = 255
        pred = g.integers(0, n, size=gt.shape)
        pred[g.random(gt.shape) < 0.3] = 255  # left without a label (e.g. no superpixel vote)
        pairs.append((gt, pred))
    ours = semantic_metrics(pairs, n, ignore_label=255, unlabeled_prediction=255)
    ref = brute_force(pairs, n, 255, unlabeled=255)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key
    with pytest.raises(D2SegError, match="prediction label 255"):
        semantic_metrics(pairs, n, ignore_label=255)  # without the option 255 is an error
