"""``d2seg predict`` with semantic and panoptic models: a label PNG per image and per video frame
equal to detectron2's DefaultPredictor's argmax, and pictures drawn from the model's output."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from d2seg.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def _checkpoint(tmp_path, config: str, dataset: str):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from d2seg.config import load_config
    from d2seg.data.register import register_datasets
    from d2seg.config.prepare import prepare_config

    register_datasets()
    cfg = prepare_config(load_config(REPO / config, [
        "DATASETS.TRAIN", f"('{dataset}',)", "DATASETS.TEST", "()", "MODEL.WEIGHTS", "",
        "MODEL.DEVICE", "cpu"]))
    torch.manual_seed(0)
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    return cfg, tmp_path / "model.pth"


def _inputs(tmp_path, n_images=2, n_frames=3):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(n_images):
        cv2.imwrite(str(folder / f"im{i}.png"), rng.integers(0, 255, (120, 150, 3), np.uint8))
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (150, 120))
    for _ in range(n_frames):
        writer.write(rng.integers(0, 255, (120, 150, 3), np.uint8))
    writer.release()
    return folder, video


def _video_frames(video):
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_semantic_model_writes_label_pngs_equal_to_default_predictor(tmp_path, capsys):
    from detectron2.engine import DefaultPredictor

    torch.set_num_threads(1)
    cfg, weights = _checkpoint(tmp_path, "configs/semantic/fcn_R18_GN_scratch.yaml",
                               "demo_semseg_train")
    folder, video = _inputs(tmp_path)
    out = tmp_path / "out"
    assert main(["predict", str(folder), str(video), "--config-file",
                 str(REPO / "configs/semantic/fcn_R18_GN_scratch.yaml"), "--weights", str(weights),
                 "--dataset", "demo_semseg_train", "--out", str(out), "--opts", "MODEL.WEIGHTS", ""]) == 0

    reference_cfg = cfg.clone()
    reference_cfg.defrost()
    reference_cfg.MODEL.WEIGHTS = str(weights)
    reference = DefaultPredictor(reference_cfg)
    expected = {f"im{i}": cv2.imread(str(folder / f"im{i}.png")) for i in range(2)}
    expected.update({f"clip_{k:06d}": f for k, f in enumerate(_video_frames(video))})
    assert len(expected) == 5
    for stem, image in expected.items():
        labels = cv2.imread(str(out / "semantic" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        want = reference(image)["sem_seg"].argmax(0).numpy()
        assert labels.shape == image.shape[:2]
        assert np.array_equal(labels, want), stem
    index = json.loads((out / "images.json").read_text())
    assert [e["sem_seg_file_name"] for e in index] == [f"semantic/{s}.png" for s in expected]
    assert json.loads((out / "results.json").read_text()) == []  # no instances from this model
    assert sorted(p.name for p in (out / "rendered").iterdir()) == ["clip.mp4", "im0.png", "im1.png"]
    # the summary speaks of what this model made: 5 label maps, not "0 detections"
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("5 images, 5 label maps (PNG") and "detections" not in line, line


@pytest.mark.slow
def test_panoptic_model_draws_panoptic_maps(tmp_path):
    torch.set_num_threads(1)
    _, weights = _checkpoint(tmp_path, "configs/panoptic/panoptic_fpn_R18_GN_scratch.yaml",
                             "demo_panoptic_train_separated")
    folder, video = _inputs(tmp_path, n_images=1, n_frames=1)
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--config-file",
                 str(REPO / "configs/panoptic/panoptic_fpn_R18_GN_scratch.yaml"), "--weights",
                 str(weights), "--dataset", "demo_panoptic_train_separated", "--out", str(out),
                 "--opts", "MODEL.WEIGHTS", "", "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT", "0"]) == 0
    image = cv2.imread(str(folder / "im0.png"))
    drawn = cv2.imread(str(out / "rendered" / "im0.png"))
    labels = cv2.imread(str(out / "semantic" / "im0.png"), cv2.IMREAD_UNCHANGED)
    assert drawn.shape == image.shape and labels.shape == image.shape[:2]
    assert not np.array_equal(drawn, image)  # stuff segments (area limit 0) were painted
    assert isinstance(json.loads((out / "results.json").read_text()), list)
