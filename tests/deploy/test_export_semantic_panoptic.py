"""``d2seg export --format onnx`` of semantic models (DeepLabV3+, UNet, FCN over MobileNetV2)
and of Panoptic FPN (MobileNetV2-FPN), each with the ImageNet backbone and randomly
initialised heads saved as a checkpoint, against the same model in PyTorch eager (d2seg's
``BatchPredictor``, what ``d2seg predict`` runs), end to end from the BGR image, on demo images
and resized copies of other sizes and aspect ratios:

* semantic: the exported label map agrees with the argmax of PyTorch's logits on >= 99.9% of
  the pixels of every image;
* Panoptic FPN: the same detections as PyTorch's instances (box IoU >= 0.99, same class,
  scores within 1e-3, mask IoU >= 0.98, but for detections within 1e-3 of the threshold), its
  semantic labels agree on >= 99.9% of pixels, and the panoptic map's segments (thing class or
  stuff label per pixel) agree with detectron2's combination on >= 99% of pixels; an export
  whose threshold leaves no detection gives no instance and stuff-only segments.

A list of images gives the list of one-by-one results; ``d2seg predict --model`` runs in an
interpreter that never imports torch or detectron2 and writes the label PNGs and pictures that
``d2seg predict --config-file/--weights`` writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="pip install onnxruntime (d2seg's deploy runtime)")
pytest.importorskip("onnx", reason="pip install onnx (torch's ONNX exporter)")

from d2seg.cli.main import main  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_helpers import agreement as _agreement  # noqa: E402
from deploy_helpers import compare_detections  # noqa: E402
from deploy_helpers import segment_labels as _segment_labels  # noqa: E402
from deploy_helpers import assert_list_gives_one_by_one, demo_images  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = "imagenet:mobilenet_v2"
SEMANTIC = {"deeplabv3plus": "configs/semantic/deeplabv3plus_MNV2_cpu_quick.yaml",
            "unet": "configs/semantic/unet_MNV2_cpu_quick.yaml",
            "fcn": "configs/semantic/fcn_MNV2_cpu_quick.yaml"}
SEMANTIC_DATASET = "demo_semseg_train"
PANOPTIC = "configs/panoptic/panoptic_fpn_MNV2_cpu_quick.yaml"
PANOPTIC_DATASET = "demo_panoptic_train_separated"
# detections at score threshold 0; the combination takes those above 0.3 (the random heads
# score about 1/5 per class, so some instances pass it and some do not)
PANOPTIC_OPTS = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                 "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", "0.3"]


def _export(config: str, dataset: str, weights, out: Path, opts=(), fmt: str = "onnx") -> None:
    assert main(["export", "--config-file", str(REPO / config), "--weights", str(weights),
                 "--dataset", dataset, "--format", fmt, "--out", str(out),
                 "--opts", *opts]) == 0


def _eager(config: str, dataset: str, weights=WEIGHTS, opts=()):
    from d2seg.config import load_config
    from d2seg.engine.predict import BatchPredictor
    from d2seg.data.register import register_datasets
    from d2seg.config.prepare import prepare_config

    register_datasets()
    cfg = load_config(REPO / config, ["DATASETS.TRAIN", f"('{dataset}',)", "DATASETS.TEST", "()",
                                      "MODEL.DEVICE", "cpu", *opts])
    return BatchPredictor(prepare_config(cfg), str(weights))


def _checkpoint(folder: Path, config: str, dataset: str, opts=()) -> Path:
    """The ImageNet backbone and one random draw of the heads, saved so that the export and the
    PyTorch reference load the same weights."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    torch.manual_seed(0)
    DetectionCheckpointer(_eager(config, dataset, opts=opts).model, str(folder)).save("model")
    return folder / "model.pth"


@pytest.fixture(scope="module")
def images():
    """The demo images and five resized copies (deploy_helpers.demo_images)."""
    return demo_images()


@pytest.fixture(scope="module", params=sorted(SEMANTIC))
def semantic(request, tmp_path_factory):
    """(config, checkpoint, export folder) of one semantic model."""
    config = SEMANTIC[request.param]
    checkpoint = _checkpoint(tmp_path_factory.mktemp("weights"), config, SEMANTIC_DATASET)
    out = tmp_path_factory.mktemp("export")
    _export(config, SEMANTIC_DATASET, checkpoint, out)
    return config, checkpoint, out


def test_semantic_labels_agree_with_pytorch(semantic, images):
    from d2seg.deploy import load

    config, checkpoint, out = semantic
    meta = json.loads((out / "model.json").read_text())
    assert meta["task"] == "semantic" and meta["semantic_classes"]["count"] == 7
    eager, exported = _eager(config, SEMANTIC_DATASET, checkpoint), load(out, threads=1)
    for name, image in images.items():
        ref = eager([image])[0]["sem_seg"].argmax(0).numpy()
        got = exported(image)["sem_seg"]
        assert got.shape == image.shape[:2], name
        assert len(np.unique(ref)) > 1, name  # the random head does not paint one class only
        assert _agreement(ref, got) >= 0.999, (name, _agreement(ref, got))


def test_min_score_on_a_semantic_export_is_refused(semantic):
    """A semantic model has no scores to threshold: ``load(min_score=...)`` says so, naming
    model.json."""
    from d2seg.deploy import load
    from d2seg.errors import D2SegError

    with pytest.raises(D2SegError, match="no detection scores") as info:
        load(semantic[2], threads=1, min_score=0.3)
    assert "model.json" in str(info.value)


def test_a_list_of_images_gives_the_one_by_one_results(semantic, images):
    from d2seg.deploy import load

    assert_list_gives_one_by_one(load(semantic[2], threads=1), images)


@pytest.fixture(scope="module")
def panoptic(tmp_path_factory):
    checkpoint = _checkpoint(tmp_path_factory.mktemp("weights"), PANOPTIC, PANOPTIC_DATASET,
                             PANOPTIC_OPTS)
    out = tmp_path_factory.mktemp("export")
    _export(PANOPTIC, PANOPTIC_DATASET, checkpoint, out, PANOPTIC_OPTS)
    return checkpoint, out


def test_panoptic_agrees_with_pytorch(panoptic, images):
    from d2seg.deploy import load

    checkpoint, out = panoptic
    meta = json.loads((out / "model.json").read_text())
    assert meta["task"] == "panoptic" and meta["panoptic_combine"]["score_threshold"] == 0.3
    assert meta["semantic_classes"]["names"][0] == "things"
    eager = _eager(PANOPTIC, PANOPTIC_DATASET, checkpoint, PANOPTIC_OPTS)
    exported = load(out, threads=1)
    things = 0
    for name, image in images.items():
        ref = eager([image])[0]
        got = exported(image)
        assert compare_detections(ref["instances"], got["instances"], 0.0) > 10, name
        sem = _agreement(ref["sem_seg"].argmax(0).numpy(), got["sem_seg"])
        assert sem >= 0.999, (name, sem)
        r_pan, r_segments = ref["panoptic_seg"]
        g_pan, g_segments = got["panoptic_seg"]
        assert g_pan.shape == image.shape[:2] and g_pan.dtype == np.int32
        pan = _agreement(_segment_labels(r_pan.numpy(), r_segments),
                         _segment_labels(g_pan, g_segments))
        assert pan >= 0.99, (name, pan)
        things += sum(s["isthing"] for s in g_segments)
        assert any(not s["isthing"] for s in g_segments), name
    assert things > 0


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_panoptic_without_detections(panoptic, images, tmp_path, fmt):
    """At score threshold 0.9 the random heads leave no detection (PyTorch's output is checked to
    be empty too): the export, in either format, returns empty instances and a panoptic map of
    stuff segments only, like PyTorch's."""
    from d2seg.deploy import load

    checkpoint, _ = panoptic
    opts = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.9"]
    _export(PANOPTIC, PANOPTIC_DATASET, checkpoint, tmp_path / "strict", opts, fmt)
    assert json.loads((tmp_path / "strict" / "model.json").read_text())["model_format"] == fmt
    image = images["demo_0"]
    ref = _eager(PANOPTIC, PANOPTIC_DATASET, checkpoint, opts)([image])[0]
    assert len(ref["instances"]) == 0
    got = load(tmp_path / "strict", threads=1)(image)
    assert got["instances"]["boxes"].shape == (0, 4)
    assert got["instances"]["masks"].shape == (0, *image.shape[:2])
    pan, segments = got["panoptic_seg"]
    assert segments and not any(s["isthing"] for s in segments)
    assert [s["category_id"] for s in segments] == \
        [s["category_id"] for s in ref["panoptic_seg"][1]]


PROBE = """
import json, sys
from d2seg.cli.main import main
code = main(["predict", sys.argv[2], "--model", sys.argv[1], "--out", sys.argv[3]])
print("PROBE " + json.dumps([code, "torch" in sys.modules, "detectron2" in sys.modules]))
"""


def _predict_without_torch(model: Path, inputs: Path, out: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(model), str(inputs), str(out)],
                          capture_output=True, text=True, timeout=300, cwd=out.parent,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
    assert lines, proc.stderr[-2000:]
    assert json.loads(lines[-1][6:]) == [0, False, False]


def _write_inputs(folder: Path, images: dict, names) -> Path:
    folder.mkdir()
    for name in names:
        cv2.imwrite(str(folder / f"{name}.png"), images[name])
    return folder


def test_predict_model_semantic_writes_the_same_label_maps(semantic, images, tmp_path):
    """``d2seg predict --model`` (no torch, no detectron2 imported) writes a label PNG and a
    picture per image; the labels agree with ``d2seg predict --config-file/--weights`` (default
    batch size 4: the three images of three sizes in one call) on >= 99.9% of pixels."""
    config, checkpoint, out = semantic
    inputs = _write_inputs(tmp_path / "in", images, ["demo_1", "240x400", "333x170"])
    _predict_without_torch(out, inputs, tmp_path / "onnx")
    assert main(["predict", str(inputs), "--config-file", str(REPO / config), "--weights",
                 str(checkpoint), "--dataset", SEMANTIC_DATASET, "--out", str(tmp_path / "eager"),
                 "--opts", "MODEL.DEVICE", "cpu"]) == 0
    for name in ["demo_1", "240x400", "333x170"]:
        ref = cv2.imread(str(tmp_path / "eager" / "semantic" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        got = cv2.imread(str(tmp_path / "onnx" / "semantic" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert _agreement(ref, got) >= 0.999, name
        assert (tmp_path / "onnx" / "rendered" / f"{name}.png").is_file()
    ref_index = json.loads((tmp_path / "eager" / "images.json").read_text())
    got_index = json.loads((tmp_path / "onnx" / "images.json").read_text())
    assert [sorted(e) for e in got_index] == [sorted(e) for e in ref_index]


def test_predict_model_panoptic_writes_the_same_outputs(panoptic, images, tmp_path):
    """``d2seg predict --model`` on the Panoptic FPN export (no torch, no detectron2 imported)
    writes results.json with PyTorch's number of detections, the semantic label PNGs (>= 99.9%
    agreement), a COCO panoptic PNG per image whose segments (thing category or stuff label per
    pixel, from images.json's segments_info) agree on >= 99% of pixels, and a picture per image,
    as ``d2seg predict --config-file/--weights`` does; the PyTorch path's panoptic PNG holds
    detectron2's panoptic_seg ids exactly."""
    from d2seg.io.panoptic_png import read_panoptic_png

    checkpoint, out = panoptic
    names = ["demo_0", "500x300"]
    inputs = _write_inputs(tmp_path / "in", images, names)
    _predict_without_torch(out, inputs, tmp_path / "onnx")
    assert main(["predict", str(inputs), "--config-file", str(REPO / PANOPTIC), "--weights",
                 str(checkpoint), "--dataset", PANOPTIC_DATASET, "--out", str(tmp_path / "eager"),
                 "--opts", "MODEL.DEVICE", "cpu", *PANOPTIC_OPTS]) == 0
    ref = json.loads((tmp_path / "eager" / "results.json").read_text())
    got = json.loads((tmp_path / "onnx" / "results.json").read_text())
    assert len(got) == len(ref) > 0
    assert sorted({r["category_id"] for r in got}) == sorted({r["category_id"] for r in ref})
    for name in names:
        r = cv2.imread(str(tmp_path / "eager" / "semantic" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        g = cv2.imread(str(tmp_path / "onnx" / "semantic" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert _agreement(r, g) >= 0.999, name
        assert (tmp_path / "onnx" / "rendered" / f"{name}.png").is_file()
    eager = _eager(PANOPTIC, PANOPTIC_DATASET, checkpoint, PANOPTIC_OPTS)
    indexes = {run: {e["file_name"]: e for e in
                     json.loads((tmp_path / run / "images.json").read_text())}
               for run in ("eager", "onnx")}
    for name in names:
        maps = {}
        for run in ("eager", "onnx"):
            entry = indexes[run][f"{name}.png"]
            assert entry["panoptic_file_name"] == f"panoptic/{name}.png"
            ids = read_panoptic_png(tmp_path / run / entry["panoptic_file_name"])
            maps[run] = _segment_labels(ids, entry["segments_info"])
            if run == "eager":
                ref_ids = eager([images[name]])[0]["panoptic_seg"][0].numpy()
                np.testing.assert_array_equal(ids, ref_ids)
        assert _agreement(maps["eager"], maps["onnx"]) >= 0.99, name


def test_pytorch_predictor_batches_only_images_of_one_size(semantic, images):
    """d2seg's PyTorch ``BatchPredictor`` given images of several sizes (and two of one size)
    returns, for each, the logits it returns for that image alone (detectron2 would pad them
    into one batch, which changes a GroupNorm/global-pooling model's outputs)."""
    import torch

    config, checkpoint, _ = semantic
    eager = _eager(config, SEMANTIC_DATASET, checkpoint)
    batch = [images["demo_0"], images["500x300"], images["demo_1"], images["240x400"]]
    together = eager(batch)
    for image, got in zip(batch, together):
        torch.testing.assert_close(got["sem_seg"], eager([image])[0]["sem_seg"],
                                   rtol=1e-4, atol=1e-4)
