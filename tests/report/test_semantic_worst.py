"""A semantic run's worst images by mIoU: the ones a brute-force per-image mIoU ranks lowest,
their predicted label maps kept by the evaluator, drawn as ground truth | prediction and shown
in report.html."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

NUM_CLASSES, IGNORE = 11, 11  # CamVid (shared/README.md)


def _brute_force_miou(gt, pred):
    """Mean IoU over the classes present in this frame's ground truth or prediction (ignored
    ground-truth pixels left out), in percent."""
    valid = gt != IGNORE
    ious = []
    for c in range(NUM_CLASSES):
        union = np.sum(((gt == c) | (pred == c)) & valid)
        if union:
            ious.append(np.sum((gt == c) & (pred == c) & valid) / union)
    return 100 * float(np.mean(ious))


def test_worst_images_are_the_lowest_brute_force_miou_and_are_drawn(semantic_run):
    root, frames = semantic_run
    scores = {image.name: _brute_force_miou(gt, pred) for image, _, gt, pred in frames}
    assert len(set(np.round(list(scores.values()), 6))) == len(frames)  # a strict ranking
    ranked = sorted(scores, key=scores.get)

    sem = json.loads((root / "report" / "metrics.json").read_text())["sem_seg"]
    worst = sem["worst_images"]
    assert worst[0]["file_name"] == min(scores, key=scores.get)
    assert [w["file_name"] for w in worst] == ranked[:4]
    for w in worst:
        assert w["mIoU"] == pytest.approx(scores[w["file_name"]], abs=1e-9)

    by_name = {image.name: (gt, pred) for image, _, gt, pred in frames}
    source = next((root / "eval").iterdir())
    for w in worst:
        gt, pred = by_name[w["file_name"]]
        # the label map the evaluator kept is the prediction it was given
        kept = cv2.imread(str(source / w["prediction"]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(kept, pred), w["file_name"]
        picture = cv2.imread(str(root / "report" / w["png"]))
        # ground truth | prediction side by side: wider than two frames, at least as tall
        assert picture.shape[1] > 2 * gt.shape[1] and picture.shape[0] > gt.shape[0]

    from d2seg.report import write_report

    page = write_report(root).read_text()
    assert page.count('alt="0016E5_') == 4  # one drawing per worst image, inlined
    assert 'id="worst-sem_seg"' in page


def test_no_drawing_without_plots(semantic_run, tmp_path):
    from d2seg.evaluation import semantic_report

    root, _ = semantic_run
    source = next((root / "eval").iterdir())
    report = json.loads((source / semantic_report.REPORT_JSON).read_text())
    written = semantic_report.write_report(report, tmp_path / "out", plots=False, source_dir=source)
    assert "worst" not in written and not (tmp_path / "out" / "worst_sem_seg").exists()
    rows = json.loads((tmp_path / "out" / "metrics.json").read_text())["sem_seg"]["worst_images"]
    assert rows and not any("png" in r for r in rows)
