"""``d2seg label next`` and the uncertainty measure: the measure against hand-computed binary
entropies, the ranking against a brute-force recomputation from detectron2's DefaultPredictor,
and bad inputs (empty pool, unreadable image, a model without masks) as one error line."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from d2seg.cli.main import main
from d2seg.errors import D2SegError
from d2seg.label.uncertainty import binary_entropy, image_uncertainty

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "instance" / "mask_rcnn_MNV2_FPN_cpu_quick.yaml"
DATASET = "demo_instances_train"


def test_binary_entropy_and_measures_by_hand():
    """H(0.5) = 1, H(0.25) = 0.811278 bits (= 2 - 0.75 log2 3), H(0) = H(1) = 0; scores
    (0.5, 0.25, 0.02) give sum 1.811278, max 1, mean 0.905639 (0.02 is under the 0.05 floor);
    no detection gives 0; an unknown measure is a D2SegError."""
    h = binary_entropy([0.5, 0.25, 0.0, 1.0])
    assert h == pytest.approx([1.0, 2 - 0.75 * math.log2(3), 0.0, 0.0], abs=1e-12)
    scores = [0.5, 0.25, 0.02]
    assert image_uncertainty(scores, "sum") == pytest.approx(1 + 2 - 0.75 * math.log2(3))
    assert image_uncertainty(scores, "max") == pytest.approx(1.0)
    assert image_uncertainty(scores, "mean") == pytest.approx((3 - 0.75 * math.log2(3)) / 2)
    assert image_uncertainty([], "sum") == 0.0
    with pytest.raises(D2SegError):
        image_uncertainty(scores, "median")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The demo config's model: ImageNet backbone, heads drawn with seed 0, saved."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    from d2seg.config import load_config
    from d2seg.engine.predict import BatchPredictor
    from d2seg.data.register import register_datasets
    from d2seg.config.prepare import prepare_config

    register_datasets()
    cfg = prepare_config(load_config(str(CONFIG), ["DATASETS.TRAIN", f"('{DATASET}',)",
                                                   "DATASETS.TEST", "()", "MODEL.DEVICE", "cpu"]))
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    DetectionCheckpointer(BatchPredictor(cfg, "imagenet:mobilenet_v2").model,
                          str(folder)).save("model")
    return cfg, folder / "model.pth"


@pytest.fixture
def pool(tmp_path):
    from d2seg.data.demo import ensure_demo

    folder = tmp_path / "pool"
    folder.mkdir()
    for f in sorted((ensure_demo() / "val" / "images").iterdir())[:6]:
        shutil.copy(f, folder / f.name)
    return folder


def _args(weights, *more):
    return ["--config-file", str(CONFIG), "--weights", str(weights), "--dataset", DATASET,
            "--quiet", "--opts", "MODEL.DEVICE", "cpu", *more]


def test_ranking_matches_a_brute_force_recomputation(model, pool, tmp_path):
    """Each image's uncertainty is the sum of H(s) over detectron2 DefaultPredictor's detections
    scored >= 0.05 (computed here with math.log2; one image a batch); the ranking is by that, highest first;
    next.txt holds the top 3; --labelled leaves listed images out; the contact sheet has 3
    tiles side by side."""
    from detectron2.engine import DefaultPredictor

    cfg, weights = model
    ref_cfg = cfg.clone()
    ref_cfg.defrost()
    ref_cfg.MODEL.WEIGHTS = str(weights)
    ref_cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
    predictor = DefaultPredictor(ref_cfg)
    expected = {}
    for f in sorted(pool.iterdir()):
        with Image.open(f) as im:  # PIL decodes JPEG as d2seg's reader does (not as OpenCV)
            bgr = np.ascontiguousarray(np.asarray(im.convert("RGB"))[:, :, ::-1])
        scores = predictor(bgr)["instances"].scores.tolist()
        expected[str(f)] = sum(-(s * math.log2(s) + (1 - s) * math.log2(1 - s))
                               for s in scores if 0.05 <= s < 1)
    values = sorted(expected.values())
    assert min(b - a for a, b in zip(values, values[1:])) > 1e-3  # no near-ties to flip

    out = tmp_path / "next"
    # one image a batch: a batch pads its images to one size, which moves scores slightly
    assert main(["label", "next", str(pool), "-n", "3", "--out", str(out), "--batch-size", "1",
                 *_args(weights)]) == 0
    ranking = json.loads((out / "ranking.json").read_text())["images"]
    order = sorted(expected, key=lambda f: -expected[f])
    assert [r["file"] for r in ranking] == order
    assert [r["uncertainty"] for r in ranking] == pytest.approx([expected[f] for f in order],
                                                               abs=1e-4)
    assert (out / "next.txt").read_text().splitlines() == order[:3]
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet.shape[1] == 3 * (200 + 4)

    labelled = tmp_path / "labelled.json"
    labelled.write_text(json.dumps({"images": [{"id": 1, "file_name": Path(order[0]).name}],
                                    "annotations": [], "categories": []}))
    assert main(["label", "next", str(pool), "-n", "3", "--out", str(tmp_path / "next2"),
                 "--batch-size", "1", "--labelled", str(labelled), *_args(weights)]) == 0
    again = json.loads((tmp_path / "next2" / "ranking.json").read_text())["images"]
    assert [r["file"] for r in again] == order[1:]


def test_bad_inputs_are_one_line(model, pool, tmp_path, capsys):
    """Exit 2 with one error line: an empty pool folder, an unreadable image (named), a model
    without masks (MODEL.MASK_ON False), suggest with a video."""
    _, weights = model
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.jpg").write_bytes(b"not a jpeg")
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    cases = [
        (["label", "next", str(empty), "--out", str(tmp_path / "o1"), *_args(weights)],
         "no images or videos found"),
        (["label", "next", str(broken), "--out", str(tmp_path / "o2"), *_args(weights)],
         "bad.jpg"),
        (["label", "suggest", str(pool), "--out", str(tmp_path / "o3"),
          *_args(weights, "MODEL.MASK_ON", "False")], "predicts no masks"),
        (["label", "suggest", str(video), "--out", str(tmp_path / "o4"), *_args(weights)],
         "not videos"),
    ]
    for argv, words in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and words in err, err
