"""``d2seg predict`` on a folder, a glob and a short video equals detectron2's DefaultPredictor."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from d2seg.cli.main import main
from d2seg.runners.diagnostics import tiny_mask_rcnn_cfg


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    cfg = tiny_mask_rcnn_cfg("cpu", 96)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # an untrained model: keep its low-score output
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    model = build_model(cfg)
    root = tmp_path_factory.mktemp("ckpt")
    DetectionCheckpointer(model, save_dir=str(root)).save("model")
    yaml_path = root / "config.yaml"
    yaml_path.write_text(cfg.dump())
    return cfg, root / "model.pth", yaml_path


def _frames(n, seed):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        img = np.full((96, 128, 3), 40, np.uint8)
        x, y = rng.integers(10, 70, 2)
        cv2.rectangle(img, (int(x), int(y)), (int(x) + 30, int(y) + 20), (0, 200, 0), -1)
        frames.append(img)
    return frames


def _reference(cfg, weights, image):
    from detectron2.engine import DefaultPredictor

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(weights)
    return DefaultPredictor(cfg)(image)["instances"].to("cpu")


@pytest.mark.slow
def test_predict_folder_and_video(checkpoint, tmp_path, capsys):
    cfg, weights, yaml_path = checkpoint
    folder = tmp_path / "imgs"
    folder.mkdir()
    images = _frames(3, 0)
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"im{i}.png"), img)
    video = tmp_path / "clip.mp4"
    frames = _frames(4, 1)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (128, 96))
    for f in frames:
        writer.write(f)
    writer.release()
    decoded = []
    cap = cv2.VideoCapture(str(video))
    while True:
        ok, f = cap.read()
        if not ok:
            break
        decoded.append(f)
    assert len(decoded) == 4

    out = tmp_path / "out"
    code = main(["predict", str(folder), str(video), "--config-file", str(yaml_path), "--weights", str(weights),
                 "--out", str(out), "--batch-size", "2", "--score-thresh", "0.0"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    index = json.loads((out / "images.json").read_text())
    assert [im["file_name"] for im in index] == ["im0.png", "im1.png", "im2.png"] + [f"clip.mp4#{i}" for i in range(4)]
    for entry, image in zip(index, images + decoded):
        ref = _reference(cfg, weights, image)
        ours = [r for r in results if r["image_id"] == entry["id"]]
        assert len(ours) == len(ref)
        ours.sort(key=lambda r: -r["score"])
        order = torch.argsort(ref.scores, descending=True)
        for r, k in zip(ours, order.tolist()):
            assert r["score"] == pytest.approx(float(ref.scores[k]), abs=1e-5)
            x0, y0, x1, y1 = ref.pred_boxes.tensor[k].tolist()
            assert r["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=1e-3)
            # batched inference sums in another order: a pixel at the 0.5 mask threshold may flip
            differ = (mask_util.decode(r["segmentation"]).astype(bool) != ref.pred_masks[k].numpy()).mean()
            assert differ <= 1e-3
    assert sorted(p.name for p in (out / "rendered").iterdir()) == ["clip.mp4", "im0.png", "im1.png", "im2.png"]
    line = capsys.readouterr().out.strip().splitlines()[-1]  # the summary counts what was written
    assert line.startswith(f"7 images, {len(results)} detections -> ") and "label maps" not in line
    cap = cv2.VideoCapture(str(out / "rendered" / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4


def test_predict_bad_inputs_one_line(checkpoint, tmp_path, capsys):
    _, weights, yaml_path = checkpoint
    (tmp_path / "notes.txt").write_text("x")
    for args, reason in [([str(tmp_path / "missing")], "no such file or folder"),
                         ([str(tmp_path / "*.png")], "matches no file"),
                         ([str(tmp_path / "notes.txt")], "not an image or video")]:
        code = main(["predict", *args, "--config-file", str(yaml_path), "--weights", str(weights),
                     "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and reason in err and "\n" not in err
