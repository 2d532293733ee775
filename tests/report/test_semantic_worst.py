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


# 2 processes (torchrun, gloo), each feeding the evaluator its share of the CamVid frames with
# shifted ground truth as predictions (the shifts of conftest.camvid_predictions)
EVAL_2 = """
import json, os, sys
from pathlib import Path
import cv2, numpy as np, torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm
from d2seg.engine.launch import init_from_env, shutdown
from d2seg.evaluation.evaluator import SemSegReportEvaluator
init_from_env("cpu")
folder, out = Path(sys.argv[1]), sys.argv[2]
records, preds = [], []
for k, image in enumerate(sorted((folder / "val").glob("*.png"))[:6]):
    gt_path = folder / "valannot" / image.name
    gt = cv2.imread(str(gt_path), cv2.IMREAD_UNCHANGED).astype(np.int64)
    pred = np.roll(gt, [3, 40, 0, 90, 12, 25][k], axis=1)
    pred[pred == 11] = 0
    records.append({"file_name": str(image), "sem_seg_file_name": str(gt_path),
                    "height": gt.shape[0], "width": gt.shape[1], "image_id": k})
    preds.append(pred)
DatasetCatalog.register("camvid6", lambda: records)
MetadataCatalog.get("camvid6").set(stuff_classes=[str(c) for c in range(11)], ignore_label=11,
                                   evaluator_type="sem_seg")
evaluator = SemSegReportEvaluator("camvid6", distributed=True, output_dir=out, worst=4)
evaluator.reset()
rank, world = comm.get_rank(), comm.get_world_size()
assert world == 2
for record, pred in list(zip(records, preds))[rank::world]:
    logits = torch.nn.functional.one_hot(torch.from_numpy(pred), 11).permute(2, 0, 1).float()
    evaluator.process([record], [{"sem_seg": logits}])
evaluator.evaluate()
comm.synchronize()
shutdown()  # leave the gloo group before exit, as d2seg eval does
"""


@pytest.mark.slow
def test_two_process_evaluation_finds_the_worst_images_of_every_rank(shared_data, tmp_path):
    """The same 6 frames split over 2 evaluation processes (rank 0: frames 0, 2, 4; rank 1:
    1, 3, 5): the report lists the 4 lowest brute-force per-image mIoUs over all 6, in order,
    and keeps each one's predicted label map, whichever rank scored it."""
    import os
    import socket
    import subprocess
    import sys

    script = tmp_path / "eval2.py"
    script.write_text(EVAL_2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
         str(port), str(script), str(shared_data / "camvid_val"), str(out)],
        env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    from d2seg.evaluation import semantic_report

    frames = []
    for k, image in enumerate(sorted((shared_data / "camvid_val" / "val").glob("*.png"))[:6]):
        gt = cv2.imread(str(shared_data / "camvid_val" / "valannot" / image.name),
                        cv2.IMREAD_UNCHANGED).astype(np.int64)
        pred = np.roll(gt, [3, 40, 0, 90, 12, 25][k], axis=1)
        pred[pred == IGNORE] = 0
        frames.append((image.name, gt, pred))
    scores = {name: _brute_force_miou(gt, pred) for name, gt, pred in frames}
    ranked = sorted(scores, key=scores.get)
    sem = json.loads((out / semantic_report.REPORT_JSON).read_text())["sem_seg"]
    assert sorted(r["file_name"] for r in sem["per_image"]) == sorted(scores)
    worst = sem["worst_images"]
    assert [w["file_name"] for w in worst] == ranked[:4]
    shares = {name: k % 2 for k, (name, _, _) in enumerate(frames)}
    assert {shares[w["file_name"]] for w in worst} == {0, 1}  # both ranks' images among them
    preds = {name: pred for name, _, pred in frames}
    for w in worst:
        assert w["mIoU"] == pytest.approx(scores[w["file_name"]], abs=1e-9)
        kept = cv2.imread(str(out / w["prediction"]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(kept, preds[w["file_name"]]), w["file_name"]


def test_eval_of_label_pngs_equals_the_evaluator_and_brute_force(semantic_run, shared_data,
                                                                  tmp_path, monkeypatch):
    """d2seg eval --sem-seg-pred-dir on the same 6 CamVid frames and predictions as the
    evaluator run (a sem_seg manifest over links to those frames): overall mIoU equal to a
    brute-force count over all frames, per-image and per-class numbers equal to the
    evaluator's report, the same worst images, drawn, and report.html with the gallery."""
    from d2seg.cli.main import main
    from d2seg.data import manifest as mf
    from d2seg.data.register import register_manifest, unregister_manifest

    root, frames = semantic_run
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    preds = tmp_path / "preds"
    preds.mkdir()
    for image, gt_path, gt, pred in frames:
        (data / "images" / image.name).symlink_to(image)
        (data / "labels" / gt_path.name).symlink_to(gt_path)
        cv2.imwrite(str(preds / gt_path.name), pred.astype(np.uint8))
    classes = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
               "Car", "Pedestrian", "Bicyclist"]
    manifest = tmp_path / "camvid6.yaml"
    manifest.write_text(f"name: camvid6\nkind: sem_seg\nsplits:\n  val:\n    images: {data}/images\n"
                        f"    sem_seg_root: {data}/labels\nclasses: {json.dumps(classes)}\n"
                        f"ignore_label: {IGNORE}\n")
    monkeypatch.setenv("D2SEG_CACHE", str(tmp_path / "cache"))
    register_manifest(mf.load_manifest(manifest))
    try:
        out = tmp_path / "out"
        assert main(["eval", "--sem-seg-pred-dir", str(preds), "--dataset", "camvid6_val",
                     "--out", str(out)]) == 0
    finally:
        unregister_manifest("camvid6")
    sem = json.loads((out / "metrics.json").read_text())["sem_seg"]
    ref = json.loads((root / "report" / "metrics.json").read_text())["sem_seg"]

    inter = np.zeros(NUM_CLASSES)
    union = np.zeros(NUM_CLASSES)
    for _, _, gt, pred in frames:
        valid = gt != IGNORE
        for c in range(NUM_CLASSES):
            inter[c] += np.sum((gt == c) & (pred == c) & valid)
            union[c] += np.sum(((gt == c) | (pred == c)) & valid)
    assert sem["mIoU"] == pytest.approx(100 * np.mean(inter[union > 0] / union[union > 0]),
                                        abs=1e-9)
    for key in ("mIoU", "fwIoU", "mACC", "pACC", "per_class", "confusion", "per_image"):
        assert sem[key] == ref[key], key
    assert [w["file_name"] for w in sem["worst_images"]][:4] == \
        [w["file_name"] for w in ref["worst_images"]]
    assert all((out / w["png"]).is_file() for w in sem["worst_images"])
    page = (out / "report.html").read_text()
    assert page.count('alt="0016E5_') == len(sem["worst_images"])
