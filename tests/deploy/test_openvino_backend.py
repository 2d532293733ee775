"""The OpenVINO backend (``d2seg.deploy.load(DIR, backend="openvino")``, ``d2seg predict --model
DIR --backend openvino``) serving exports of Panoptic FPN (MobileNetV2-FPN) and DeepLabV3+
(MobileNetV2), ImageNet backbone and randomly initialised heads saved as a checkpoint, against
the same model in PyTorch eager (d2seg's ``BatchPredictor``) on images of several sizes: the
same detections (box IoU >= 0.99, same class, scores within 1e-3, mask IoU >= 0.98, but for
detections within 1e-3 of the threshold) and semantic labels agreeing on >= 99.9% of pixels;
``d2seg predict --backend openvino`` writes PyTorch's number of detections."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("openvino", reason="pip install 'd2seg[openvino]' (the OpenVINO backend)")
pytest.importorskip("onnx", reason="pip install onnx (torch's ONNX exporter)")

from d2seg.cli.main import main  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_helpers import compare_detections  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = "imagenet:mobilenet_v2"
PANOPTIC = "configs/panoptic/panoptic_fpn_MNV2_cpu_quick.yaml"
PANOPTIC_DATASET = "demo_panoptic_train_separated"
PANOPTIC_OPTS = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                 "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", "0.3"]
SEMANTIC = "configs/semantic/deeplabv3plus_MNV2_cpu_quick.yaml"
SEMANTIC_DATASET = "demo_semseg_train"


def _eager(config: str, dataset: str, weights=WEIGHTS, opts=()):
    from d2seg.config import load_config
    from d2seg.engine.predict import BatchPredictor
    from d2seg.data.register import register_datasets
    from d2seg.config.prepare import prepare_config

    register_datasets()
    cfg = load_config(REPO / config, ["DATASETS.TRAIN", f"('{dataset}',)", "DATASETS.TEST", "()",
                                      "MODEL.DEVICE", "cpu", *opts])
    return BatchPredictor(prepare_config(cfg), str(weights))


def _exported(tmp_path_factory, config: str, dataset: str, opts=()):
    """(checkpoint, export folder): one random draw of the heads, saved and exported."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    DetectionCheckpointer(_eager(config, dataset, opts=opts).model, str(folder)).save("model")
    out = tmp_path_factory.mktemp("export")
    assert main(["export", "--config-file", str(REPO / config), "--weights",
                 str(folder / "model.pth"), "--dataset", dataset, "--out", str(out),
                 "--opts", *opts]) == 0
    return folder / "model.pth", out


@pytest.fixture(scope="module")
def images():
    """A demo image (192x160) and resized copies: 500x300, 240x400 (portrait), 333x170."""
    from d2seg.data.demo import ensure_demo

    first = cv2.imread(str(sorted((ensure_demo() / "val" / "images").iterdir())[0]))
    return {"demo_0": first,
            "500x300": cv2.resize(first, (500, 300), interpolation=cv2.INTER_LINEAR),
            "240x400": cv2.resize(first, (240, 400), interpolation=cv2.INTER_LINEAR),
            "333x170": cv2.resize(first, (333, 170), interpolation=cv2.INTER_LINEAR)}


def test_panoptic_on_openvino_agrees_with_pytorch(tmp_path_factory, images, tmp_path):
    from d2seg.deploy import load

    checkpoint, out = _exported(tmp_path_factory, PANOPTIC, PANOPTIC_DATASET, PANOPTIC_OPTS)
    eager = _eager(PANOPTIC, PANOPTIC_DATASET, checkpoint, PANOPTIC_OPTS)
    model = load(out, threads=1, backend="openvino")
    assert model.backend == "openvino"
    for name, image in images.items():
        ref, got = eager([image])[0], model(image)
        assert compare_detections(ref["instances"], got["instances"], 0.0) > 10, name
        agree = float((ref["sem_seg"].argmax(0).numpy() == got["sem_seg"]).mean())
        assert agree >= 0.999, (name, agree)
    cv2.imwrite(str(tmp_path / "a.png"), images["240x400"])
    assert main(["predict", str(tmp_path / "a.png"), "--model", str(out), "--backend",
                 "openvino", "--out", str(tmp_path / "pred")]) == 0
    results = json.loads((tmp_path / "pred" / "results.json").read_text())
    assert len(results) == len(eager([images["240x400"]])[0]["instances"])


def test_semantic_on_openvino_agrees_with_pytorch(tmp_path_factory, images):
    from d2seg.deploy import load

    checkpoint, out = _exported(tmp_path_factory, SEMANTIC, SEMANTIC_DATASET)
    eager = _eager(SEMANTIC, SEMANTIC_DATASET, checkpoint)
    model = load(out, threads=1, backend="openvino")
    for name, image in images.items():
        ref = eager([image])[0]["sem_seg"].argmax(0).numpy()
        got = model(image)["sem_seg"]
        assert len(np.unique(ref)) > 1 and got.shape == ref.shape, name
        agree = float((ref == got).mean())
        assert agree >= 0.999, (name, agree)
