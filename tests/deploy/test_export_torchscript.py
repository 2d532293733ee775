"""``d2seg export --format torchscript`` (model.ts, served by ``d2seg.deploy.load`` on the
torchscript backend) of the demo Mask R-CNN, a semantic model (DeepLabV3+) and Panoptic FPN, all
over MobileNetV2 with the ImageNet backbone and randomly initialised heads saved as a
checkpoint, against the same model in PyTorch eager (d2seg's ``BatchPredictor``, what ``d2seg
predict`` runs), end to end from the BGR image, on demo images and resized copies of other sizes
and aspect ratios: the tolerances of the ONNX tests (detections: box IoU >= 0.99, same class,
scores within 1e-3, mask IoU >= 0.98, but for detections within 1e-3 of the threshold;
semantic labels: >= 99.9% of pixels; panoptic segments: >= 99% of pixels).

Also: an export with no detection gives an empty result, a list of images the one-by-one
results; ``d2seg predict --model`` serves the export in an interpreter that never imports
detectron2 and writes PyTorch's results.json; ``d2seg label suggest/next --model`` take the
folder; a size baked into the trace fails the export's own check. Wrong backend for the
folder's format, a model.ts that is not TorchScript and a format-1 reader given the folder are
one error line each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from d2seg.cli.main import main
from d2seg.errors import D2SegError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_helpers import agreement, compare_detections, compare_results_json  # noqa: E402
from deploy_helpers import check_label_with_exported_model, segment_labels  # noqa: E402
from deploy_helpers import assert_list_gives_one_by_one, demo_images, predict_error  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = "imagenet:mobilenet_v2"
INSTANCE = ("configs/instance/mask_rcnn_MNV2_FPN_cpu_quick.yaml", "demo_instances_train",
            ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])  # threshold 0: many detections
SEMANTIC = ("configs/semantic/deeplabv3plus_MNV2_cpu_quick.yaml", "demo_semseg_train", [])
# the combination takes detections above 0.3 (the random heads score about 1/5 per class)
PANOPTIC = ("configs/panoptic/panoptic_fpn_MNV2_cpu_quick.yaml", "demo_panoptic_train_separated",
            ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
             "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", "0.3"])


def _config(model, weights=WEIGHTS, opts=()):
    from d2seg.config import load_config
    from d2seg.config.prepare import prepare_config
    from d2seg.data.register import register_datasets

    config, dataset, model_opts = model
    register_datasets()
    cfg = load_config(REPO / config, ["DATASETS.TRAIN", f"('{dataset}',)", "DATASETS.TEST", "()",
                                      "MODEL.DEVICE", "cpu", *model_opts, *opts])
    return prepare_config(cfg)


def _eager(model, weights, opts=()):
    from d2seg.engine.predict import BatchPredictor

    return BatchPredictor(_config(model, weights, opts), str(weights))


def _export(model, weights, out: Path, opts=()) -> None:
    config, dataset, model_opts = model
    assert main(["export", "--config-file", str(REPO / config), "--weights", str(weights),
                 "--dataset", dataset, "--format", "torchscript", "--out", str(out),
                 "--opts", *model_opts, *opts]) == 0


def _checkpoint_and_export(tmp_path_factory, model) -> tuple[Path, Path]:
    """One random draw of the heads (seed 0), saved so that the export and the PyTorch
    reference load the same weights, and its torchscript export."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    DetectionCheckpointer(_eager(model, WEIGHTS).model, str(folder)).save("model")
    out = tmp_path_factory.mktemp("export")
    _export(model, folder / "model.pth", out)
    return folder / "model.pth", out


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    return _checkpoint_and_export(tmp_path_factory, INSTANCE)


@pytest.fixture(scope="module")
def images():
    """The demo images and five resized copies (deploy_helpers.demo_images)."""
    return demo_images()


def test_export_folder_describes_the_torchscript_model(instance):
    """model.json names the format, the file and the traced outputs in order, as format
    version 2 (which a d2seg reading only version 1 refuses)."""
    meta = json.loads((instance[1] / "model.json").read_text())
    assert meta["model_format"] == "torchscript" and meta["model_file"] == "model.ts"
    assert meta["format_version"] == 2 and meta["task"] == "instances"
    assert meta["output_names"] == ["boxes", "classes", "mask_probs", "scores", "image_size"]
    assert (instance[1] / "model.ts").is_file() and not (instance[1] / "model.onnx").exists()


def test_instances_agree_with_pytorch(instance, images):
    from d2seg.deploy import load

    checkpoint, out = instance
    eager, exported = _eager(INSTANCE, checkpoint), load(out, threads=1)
    assert exported.backend == "torchscript"  # the folder's format picks the backend
    for name, image in images.items():
        ref = eager([image])[0]["instances"]
        got = exported(image)
        assert got["masks"].shape[1:] == image.shape[:2], name
        assert compare_detections(ref, got, 0.0) > 10, name


def test_a_list_of_images_gives_the_one_by_one_results(instance, images):
    from d2seg.deploy import load

    listed = assert_list_gives_one_by_one(load(instance[1], threads=1), images)
    assert all(len(got["scores"]) > 0 for got in listed)


def test_no_detections_is_an_empty_result(instance, images, tmp_path):
    """At score threshold 0.9 the random heads leave no detection (PyTorch's output is checked
    to be empty too); the export (Python API) returns empty arrays of the right shapes."""
    from d2seg.deploy import load
    from d2seg.deploy.export import export_torchscript

    checkpoint, _ = instance
    strict = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.9"]
    export_torchscript(_config(INSTANCE, checkpoint, strict), str(checkpoint), tmp_path / "strict")
    image = images["demo_0"]
    assert len(_eager(INSTANCE, checkpoint, strict)([image])[0]["instances"]) == 0
    got = load(tmp_path / "strict", threads=1)(image)
    assert got["boxes"].shape == (0, 4) and got["scores"].shape == (0,)
    assert got["masks"].shape == (0, *image.shape[:2])


def test_a_size_baked_into_the_trace_fails_the_export(instance, tmp_path, monkeypatch):
    """A model that resizes its input to the size it sees with Python ints (the identity in
    eager, the traced picture's size in the trace): the export's check on a picture of
    another aspect ratio refuses it."""
    import torch.nn.functional as F

    from d2seg.deploy import export

    raw = export._INFERENCE["instances"]

    def baked(model, inputs):
        image = inputs[0]["image"]
        size = (int(image.shape[1]), int(image.shape[2]))
        image = F.interpolate(image[None].float(), size=size, mode="bilinear",
                              align_corners=False)[0]
        return raw(model, [{"image": image}])

    monkeypatch.setitem(export._INFERENCE, "instances", baked)
    checkpoint, _ = instance
    with pytest.raises(D2SegError, match="disagrees with PyTorch"):
        export.export_torchscript(_config(INSTANCE, checkpoint), str(checkpoint),
                                  tmp_path / "baked")


PROBE = """
import json, sys
import cv2
from d2seg.deploy import load
from d2seg.cli.main import main
model = load(sys.argv[1])
result = model(cv2.imread(sys.argv[2]))
code = main(["predict", sys.argv[2], "--model", sys.argv[1], "--out", sys.argv[3]])
print("PROBE " + json.dumps([code, model.backend, len(result["boxes"]),
                             "torchvision" in sys.modules, "detectron2" in sys.modules]))
"""


def test_label_suggest_and_next_with_a_torchscript_model(instance, images, tmp_path):
    check_label_with_exported_model(instance[1], images, tmp_path)


def test_predict_model_without_detectron2_writes_the_same_results(instance, images, tmp_path):
    """A fresh interpreter loads the export, predicts and runs ``d2seg predict --model``
    (default backend: the folder's, torchscript) with torch and torchvision but without
    importing detectron2; its results.json has the detections (category ids, scores, boxes, RLE
    masks) of ``d2seg predict --config-file/--weights --dataset``."""
    checkpoint, out = instance
    image_file = tmp_path / "in" / "portrait.png"
    image_file.parent.mkdir()
    cv2.imwrite(str(image_file), images["240x400"])
    proc = subprocess.run([sys.executable, "-c", PROBE, str(out), str(image_file),
                           str(tmp_path / "ts")], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
    assert lines, proc.stderr[-2000:]
    code, backend, n, torchvision_loaded, d2_loaded = json.loads(lines[-1][6:])
    assert code == 0 and backend == "torchscript" and torchvision_loaded and not d2_loaded
    config, dataset, opts = INSTANCE
    assert main(["predict", str(image_file), "--config-file", str(REPO / config), "--weights",
                 str(checkpoint), "--dataset", dataset, "--out", str(tmp_path / "eager"),
                 "--opts", *opts, "MODEL.DEVICE", "cpu"]) == 0
    ref = json.loads((tmp_path / "eager" / "results.json").read_text())
    got = json.loads((tmp_path / "ts" / "results.json").read_text())
    assert len(ref) == n > 0 and (tmp_path / "ts" / "rendered" / "portrait.png").is_file()
    compare_results_json(ref, got)


def test_semantic_labels_agree_with_pytorch(tmp_path_factory, images):
    from d2seg.deploy import load

    checkpoint, out = _checkpoint_and_export(tmp_path_factory, SEMANTIC)
    assert json.loads((out / "model.json").read_text())["output_names"] == ["sem_seg_logits"]
    eager, exported = _eager(SEMANTIC, checkpoint), load(out, threads=1)
    for name, image in images.items():
        ref = eager([image])[0]["sem_seg"].argmax(0).numpy()
        got = exported(image)["sem_seg"]
        assert len(np.unique(ref)) > 1, name  # the random head does not paint one class only
        assert agreement(ref, got) >= 0.999, (name, agreement(ref, got))


def test_panoptic_agrees_with_pytorch(tmp_path_factory, images):
    from d2seg.deploy import load

    checkpoint, out = _checkpoint_and_export(tmp_path_factory, PANOPTIC)
    eager, exported = _eager(PANOPTIC, checkpoint), load(out, threads=1)
    things = 0
    for name, image in images.items():
        ref, got = eager([image])[0], exported(image)
        assert compare_detections(ref["instances"], got["instances"], 0.0) > 10, name
        sem = agreement(ref["sem_seg"].argmax(0).numpy(), got["sem_seg"])
        assert sem >= 0.999, (name, sem)
        (r_pan, r_segments), (g_pan, g_segments) = ref["panoptic_seg"], got["panoptic_seg"]
        assert g_pan.shape == image.shape[:2] and g_pan.dtype == np.int32
        pan = agreement(segment_labels(r_pan.numpy(), r_segments),
                        segment_labels(g_pan, g_segments))
        assert pan >= 0.99, (name, pan)
        things += sum(s["isthing"] for s in g_segments)
        assert any(not s["isthing"] for s in g_segments), name
    assert things > 0


# -- wrong backend, a file that is not TorchScript, an older reader: one error line each -------


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_backend_on_a_torchscript_folder(instance, capsys, image_file, backend):
    err = predict_error(capsys, instance[1], image_file, "--backend", backend)
    assert str(instance[1] / "model.json") in err and "torchscript export" in err
    assert f"the {backend} backend cannot serve it" in err and "use backend torchscript" in err


def test_torchscript_backend_on_an_onnx_folder(instance, tmp_path, capsys, image_file):
    """An ONNX folder's model.json (no ONNX file needed: the mismatch is found first)."""
    folder = tmp_path / "onnx"
    folder.mkdir()
    meta = json.loads((instance[1] / "model.json").read_text())
    meta.update(model_format="onnx", model_file="model.onnx", format_version=1)
    (folder / "model.json").write_text(json.dumps(meta))
    err = predict_error(capsys, folder, image_file, "--backend", "torchscript")
    assert str(folder / "model.json") in err and "onnx export" in err
    assert "use backend onnxruntime or openvino" in err


def test_model_file_that_is_not_torchscript(instance, tmp_path, capsys, image_file):
    folder = tmp_path / "garbage"
    folder.mkdir()
    (folder / "model.json").write_bytes((instance[1] / "model.json").read_bytes())
    (folder / "model.ts").write_bytes(b"PK\x03\x04 not a TorchScript archive" * 10)
    err = predict_error(capsys, folder, image_file)
    assert str(folder / "model.ts") in err and "cannot load it as a TorchScript model" in err


def test_a_format_1_reader_refuses_the_folder(instance, monkeypatch):
    """A d2seg that reads model.json up to format version 1 (simulated by patching
    FORMAT_VERSION) refuses a torchscript folder as written by a newer d2seg, instead of
    handing model.ts to onnxruntime."""
    from d2seg.deploy import runtime

    monkeypatch.setattr(runtime, "FORMAT_VERSION", 1)
    with pytest.raises(D2SegError, match=r"written by a newer d2seg .*format version 2") as e:
        runtime.read_model_json(instance[1])
    assert e.value.file == str(instance[1] / "model.json")
