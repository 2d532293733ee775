"""Semantic segmentation metrics from a streaming confusion matrix: mIoU, fwIoU, pixel accuracy.

``SemanticConfusion.update(gt, pred)`` adds one image (ground truth pixels equal to the ignore
label are left out), ``metrics()`` reads the totals. Definitions (those of detectron2's
``SemSegEvaluator``, the COCO-stuff ones):

* IoU of class c = TP / (GT + PRED - TP), NaN when c appears in neither;
* mIoU = mean IoU over the classes that appear in the ground truth or the prediction;
* fwIoU = sum over classes of IoU weighted by the class's share of ground truth pixels;
* pixel accuracy = correct pixels / labelled pixels; mean accuracy = mean over classes present
  in the ground truth of TP / GT.

mIoU, fwIoU, pixel and mean accuracy equal SemSegEvaluator's (which reports percent). Per class,
a class predicted but absent from the ground truth has IoU 0 here and NaN in detectron2's table;
both count it as 0 in the mean.
"""

from __future__ import annotations

import numpy as np

from d2seg.errors import D2SegError


class SemanticConfusion:
    """Confusion matrix (rows: ground truth, columns: prediction), updated one image at a time."""

    def __init__(self, num_classes: int, ignore_label: int | None = 255,
                 unlabeled_prediction: int | None = None):
        """``unlabeled_prediction``: a predicted value meaning "no class" (a method that may
        leave pixels unlabelled, e.g. voting sparse labels); such pixels count as misses of
        their ground-truth class and as no class's prediction."""
        if num_classes < 1:
            raise D2SegError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.unlabeled_prediction = unlabeled_prediction
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.unlabeled = np.zeros(num_classes, dtype=np.int64)  # per ground-truth class

    def update(self, gt, pred) -> None:
        """Add one image: ``gt`` and ``pred`` are (H, W) label maps (arrays or tensors)."""
        gt = np.asarray(gt.cpu() if hasattr(gt, "cpu") else gt).astype(np.int64, copy=False)
        pred = np.asarray(pred.cpu() if hasattr(pred, "cpu") else pred).astype(np.int64, copy=False)
        if gt.shape != pred.shape:
            raise D2SegError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
        keep = gt != self.ignore_label if self.ignore_label is not None else np.ones(gt.shape, bool)
        gt, pred = gt[keep], pred[keep]
        n = self.num_classes
        if self.unlabeled_prediction is not None:
            missing = pred == self.unlabeled_prediction
            if missing.any():
                pred = np.where(missing, n, pred)  # column n: "no class"
        for name, labels, top in (("ground truth", gt, n), ("prediction", pred,
                                  n + (self.unlabeled_prediction is not None))):
            if labels.size and (labels.min() < 0 or labels.max() >= top):
                bad = labels[(labels < 0) | (labels >= top)][0]
                raise D2SegError(f"{name} label {int(bad)} is outside 0..{n - 1}",
                                 hint="set num_classes or the ignore label")
        if self.unlabeled_prediction is not None:
            counts = np.bincount(gt * (n + 1) + pred, minlength=n * (n + 1)).reshape(n, n + 1)
            self.unlabeled += counts[:, n]
            self.matrix += counts[:, :n]
            return
        self.matrix += np.bincount(gt * n + pred, minlength=n * n).reshape(n, n)

    def metrics(self) -> dict:
        """mIoU, fwIoU, pixel and mean accuracy (fractions in [0, 1]), per-class IoU, accuracy."""
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        gt_count, pred_count = m.sum(axis=1) + self.unlabeled, m.sum(axis=0)
        union = gt_count + pred_count - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt_count > 0, tp / gt_count, np.nan)
        total = gt_count.sum()
        present = union > 0
        return {
            "mIoU": float(np.nanmean(iou)) if present.any() else float("nan"),
            "fwIoU": float(np.nansum(iou * gt_count) / total) if total else float("nan"),
            "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
            "mean_accuracy": float(np.nanmean(acc)) if (gt_count > 0).any() else float("nan"),
            "per_class_iou": iou.tolist(),
            "per_class_accuracy": acc.tolist(),
        }


def semantic_metrics(pairs, num_classes: int, ignore_label: int | None = 255,
                     unlabeled_prediction: int | None = None) -> dict:
    """Metrics over (gt, pred) label-map pairs, streamed one image at a time."""
    confusion = SemanticConfusion(num_classes, ignore_label, unlabeled_prediction)
    for gt, pred in pairs:
        confusion.update(gt, pred)
    return confusion.metrics()
