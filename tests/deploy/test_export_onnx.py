"""``d2seg export --format onnx`` of the demo Mask R-CNN (MobileNetV2-FPN, ImageNet backbone,
randomly initialised heads saved as a checkpoint, score threshold 0 so every image has
detections) against the same model in
PyTorch eager (d2seg's ``BatchPredictor``, what ``d2seg predict`` runs), end to end from the BGR
image: on demo images and on resized copies of other sizes and aspect ratios, the same
detections (boxes IoU >= 0.99, same class, scores within 1e-3, pasted masks IoU >= 0.98); an
export whose threshold leaves no detection gives an empty result; the exported model is served
without importing torch or detectron2, and ``d2seg predict --model`` writes the results.json
``d2seg predict --config-file/--weights`` writes. Bad export folders are one error line each."""

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
from deploy_helpers import compare_detections as _compare  # noqa: E402
from deploy_helpers import check_label_with_exported_model, compare_results_json  # noqa: E402
from deploy_helpers import assert_list_gives_one_by_one, demo_images, predict_error  # noqa: E402

CONFIG = "configs/instance/mask_rcnn_MNV2_FPN_cpu_quick.yaml"
REPO = Path(__file__).resolve().parents[2]
WEIGHTS = "imagenet:mobilenet_v2"
DATASET = "demo_instances_train"
THRESH = 0.0


def _export(out: Path, weights: Path, score_thresh: float) -> None:
    code = main(["export", "--config-file", str(REPO / CONFIG), "--weights", str(weights),
                 "--dataset", DATASET, "--format", "onnx", "--out", str(out),
                 "--opts", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(score_thresh)])
    assert code == 0


def _eager(score_thresh: float, weights=WEIGHTS):
    from d2seg.config import load_config
    from d2seg.engine.predict import BatchPredictor
    from d2seg.data.register import register_datasets
    from d2seg.config.prepare import prepare_config

    register_datasets()
    cfg = load_config(REPO / CONFIG, ["DATASETS.TRAIN", f"('{DATASET}',)", "DATASETS.TEST", "()",
                                      "MODEL.DEVICE", "cpu",
                                      "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(score_thresh)])
    return BatchPredictor(prepare_config(cfg), str(weights))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The ImageNet backbone and one random draw of the heads, saved so that the export and
    the PyTorch reference load the same weights."""
    from detectron2.checkpoint import DetectionCheckpointer

    import torch

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    DetectionCheckpointer(_eager(THRESH).model, str(folder)).save("model")
    return folder / "model.pth"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, checkpoint):
    out = tmp_path_factory.mktemp("export")
    _export(out, checkpoint, THRESH)
    return out


@pytest.fixture(scope="module")
def images():
    """The demo images and four resized copies (deploy_helpers.demo_images, no odd size)."""
    return demo_images(odd_size=False)


def test_export_folder_describes_the_model(exported):
    meta = json.loads((exported / "model.json").read_text())
    assert meta["task"] == "instances" and meta["format_version"] == 1
    assert meta["model_format"] == "onnx" and meta["model_file"] == "model.onnx"
    assert meta["classes"]["names"] == ["square", "disc", "triangle", "star"]
    assert len(meta["classes"]["category_ids"]) == len(meta["classes"]["colors_rgb"]) == 4
    assert meta["input"]["channel_order"] == "RGB"
    assert (meta["input"]["min_size_test"], meta["input"]["max_size_test"]) == (160, 320)
    assert meta["input"]["size_divisibility"] == 32 and meta["score_thresh"] == THRESH
    assert (exported / "model.onnx").read_bytes()[:1] == b"\x08"  # an ONNX ModelProto


def test_same_answers_as_pytorch(exported, checkpoint, images):
    from d2seg.deploy import load

    eager, onnx_model = _eager(THRESH, checkpoint), load(exported, threads=1)
    for name, image in images.items():
        ref = eager([image])[0]["instances"]
        got = onnx_model(image)
        assert got["masks"].shape[1:] == image.shape[:2], name
        assert _compare(ref, got, THRESH) > 10, name  # score threshold 0: many detections


def test_a_list_of_images_gives_the_one_by_one_results(exported, images):
    """Images of five sizes in one call: a list of results, each equal to that image's own."""
    from d2seg.deploy import load

    listed = assert_list_gives_one_by_one(load(exported, threads=1), images)
    assert all(len(got["scores"]) > 0 for got in listed)


def test_no_detections_is_an_empty_result(tmp_path, checkpoint, images):
    """At score threshold 0.9 the random heads leave no detection (PyTorch's output is checked
    to be empty too); the export returns empty arrays of the right shapes."""
    from d2seg.deploy import load

    _export(tmp_path / "strict", checkpoint, 0.9)
    image = images["demo_0"]
    assert len(_eager(0.9, checkpoint)([image])[0]["instances"]) == 0
    got = load(tmp_path / "strict", threads=1)(image)
    assert got["boxes"].shape == (0, 4) and got["scores"].shape == (0,)
    assert got["masks"].shape == (0, *image.shape[:2])


def test_min_score_at_serve_time_is_an_export_with_that_threshold(exported, checkpoint, images):
    """``load(min_score=S)`` on the threshold-0 export keeps what PyTorch keeps at
    ``SCORE_THRESH_TEST`` S (same detections, boxes, scores, masks), S being the median score on
    the image so that some detections go and some stay."""
    from d2seg.deploy import load

    everything = load(exported, threads=1)
    for name in ("demo_0", "240x400"):
        image = images[name]
        scores = everything(image)["scores"]
        s = float(np.round(np.median(scores), 3))
        ref = _eager(s, checkpoint)([image])[0]["instances"]
        assert 0 < len(ref) < len(scores), name
        got = load(exported, threads=1, min_score=s)(image)
        assert (got["scores"] > s).all()
        assert _compare(ref, got, s) >= len(ref) - 2, name  # all but those within 1e-3 of S


def test_predict_min_score_writes_the_same_results_on_both_paths(exported, checkpoint, images,
                                                                  tmp_path):
    """``d2seg predict --min-score S`` from the export and from the checkpoint: the same
    detections (category, score within 1e-3, box IoU >= 0.99, mask IoU >= 0.98) in results.json,
    every one scoring above S, fewer than without it."""
    image_file = tmp_path / "in" / "demo.png"
    image_file.parent.mkdir()
    cv2.imwrite(str(image_file), images["demo_1"])
    base = ["predict", str(image_file), "--min-score", "0.3", "--no-render"]
    assert main(base + ["--model", str(exported), "--out", str(tmp_path / "onnx")]) == 0
    assert main(base + ["--config-file", str(REPO / CONFIG), "--weights", str(checkpoint),
                        "--dataset", DATASET, "--out", str(tmp_path / "eager"),
                        "--opts", "MODEL.DEVICE", "cpu"]) == 0
    assert main(["predict", str(image_file), "--no-render", "--model", str(exported),
                 "--out", str(tmp_path / "all")]) == 0
    got, ref, everything = (json.loads((tmp_path / d / "results.json").read_text())
                            for d in ("onnx", "eager", "all"))
    assert 0 < len(got) == len(ref) < len(everything)
    assert min(r["score"] for r in got + ref) > 0.3
    compare_results_json(ref, got)  # same category, box, score, mask for each eager result


def test_predict_model_on_a_video(exported, checkpoint, images, tmp_path):
    """A 4-frame video through ``d2seg predict --model``: a result per frame with the
    detections of ``--config-file/--weights`` on the same frames (count, categories, scores
    within 1e-3, box IoU >= 0.99, mask IoU >= 0.98), and a rendered mp4 of 4 frames."""
    frames = [images["demo_0"], images["demo_1"], images["demo_0"], images["demo_1"]]
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0,
                             frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()
    assert main(["predict", str(video), "--model", str(exported), "--out",
                 str(tmp_path / "onnx"), "--min-score", "0.2"]) == 0
    assert main(["predict", str(video), "--config-file", str(REPO / CONFIG), "--weights",
                 str(checkpoint), "--dataset", DATASET, "--out", str(tmp_path / "eager"),
                 "--min-score", "0.2", "--no-render", "--opts", "MODEL.DEVICE", "cpu"]) == 0
    got, ref = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("onnx", "eager"))
    index = json.loads((tmp_path / "onnx" / "images.json").read_text())
    assert [e["file_name"] for e in index] == [f"clip.mp4#{i}" for i in range(4)]
    for entry in index:
        mine = [r for r in got if r["image_id"] == entry["id"]]
        theirs = [r for r in ref if r["image_id"] == entry["id"]]
        assert mine
        compare_results_json(theirs, mine)  # as many, each of the same category, box, score, mask
    cap = cv2.VideoCapture(str(tmp_path / "onnx" / "rendered" / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4


def test_min_score_below_the_export_threshold(exported, tmp_path, capsys, image_file):
    """An export made at threshold 0.5 cannot serve 0.3: one line naming model.json, exit 2."""
    folder = _copy_export(exported, tmp_path / "at05", score_thresh=0.5)
    err = predict_error(capsys, folder, image_file, "--min-score", "0.3")
    assert "model.json" in err and "score threshold 0.5" in err and "--min-score" in err


PROBE = """
import json, sys
import cv2
from d2seg.deploy import load
from d2seg.cli.main import main
result = load(sys.argv[1])(cv2.imread(sys.argv[2]))
code = main(["predict", sys.argv[2], "--model", sys.argv[1], "--out", sys.argv[3]])
print("PROBE " + json.dumps([code, len(result["boxes"]), "torch" in sys.modules,
                             "detectron2" in sys.modules]))
"""


def test_predict_model_is_torch_free_and_writes_the_same_results(exported, checkpoint, images,
                                                                 tmp_path):
    """A fresh interpreter loads the export, predicts and runs ``d2seg predict --model``
    without importing torch or detectron2; its results.json has the detections (category ids,
    scores, boxes, RLE masks) of ``d2seg predict --config-file/--weights --dataset``."""
    image_file = tmp_path / "in" / "portrait.png"
    image_file.parent.mkdir()
    cv2.imwrite(str(image_file), images["240x400"])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", PROBE, str(exported), str(image_file),
                           str(tmp_path / "onnx")], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
    assert lines, proc.stderr[-2000:]
    code, n, torch_loaded, d2_loaded = json.loads(lines[-1][6:])
    assert code == 0 and n > 0 and not torch_loaded and not d2_loaded
    assert main(["predict", str(image_file), "--config-file", str(REPO / CONFIG), "--weights",
                 str(checkpoint), "--dataset", DATASET, "--out", str(tmp_path / "eager"),
                 "--opts", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(THRESH),
                 "MODEL.DEVICE", "cpu"]) == 0
    ref = json.loads((tmp_path / "eager" / "results.json").read_text())
    got = json.loads((tmp_path / "onnx" / "results.json").read_text())
    assert len(got) == len(ref) == n
    assert (tmp_path / "onnx" / "rendered" / "portrait.png").is_file()
    compare_results_json(ref, got)  # same category, box, score, mask for each eager result


# -- bad export folders and a missing runtime: one error line each, exit 2 ---------------------


def _copy_export(exported, dest: Path, **changes) -> Path:
    dest.mkdir()
    meta = json.loads((exported / "model.json").read_text())
    meta.update(changes)
    (dest / "model.json").write_text(json.dumps(meta))
    os.symlink(exported / "model.onnx", dest / "model.onnx")
    return dest


def test_folder_without_model_json(tmp_path, capsys, image_file):
    (tmp_path / "empty").mkdir()
    err = predict_error(capsys, tmp_path / "empty", image_file)
    assert "model.json" in err and "not a d2seg export folder" in err


def test_model_json_for_an_unknown_task(exported, tmp_path, capsys, image_file):
    folder = _copy_export(exported, tmp_path / "keypoints", task="keypoints")
    err = predict_error(capsys, folder, image_file)
    assert str(folder / "model.json") in err and "'keypoints'" in err


def test_model_json_whose_graph_lacks_the_task_outputs(exported, tmp_path, capsys, image_file):
    """model.json says semantic, the graph is a Mask R-CNN's: the missing output is named."""
    folder = _copy_export(exported, tmp_path / "semantic", task="semantic")
    err = predict_error(capsys, folder, image_file)
    assert str(folder / "model.onnx") in err and "missing sem_seg_logits" in err


def test_export_of_another_task_than_asked(exported, tmp_path, capsys, image_file):
    code = main(["predict", str(image_file), "--model", str(exported), "--task", "semantic",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(exported / "model.json") in err and "instances model, not a semantic one" in err


def test_model_file_missing(exported, tmp_path, capsys, image_file):
    folder = _copy_export(exported, tmp_path / "no_onnx")
    (folder / "model.onnx").unlink()
    err = predict_error(capsys, folder, image_file)
    assert str(folder / "model.onnx") in err and "model file not found" in err


def test_model_json_of_a_newer_format(exported, tmp_path, capsys, image_file):
    """A folder from a newer d2seg (its version and a format version this one does not read):
    the line names the file, both d2seg versions and the upgrade command."""
    import d2seg

    versions = dict(json.loads((exported / "model.json").read_text())["versions"], d2seg="9.0.0")
    folder = _copy_export(exported, tmp_path / "newer", format_version=99, versions=versions)
    err = predict_error(capsys, folder, image_file)
    assert str(folder / "model.json") in err and "newer d2seg (9.0.0" in err and "99" in err
    assert f"this d2seg {d2seg.__version__}" in err and "pip install -U d2seg" in err


def test_onnx_folders_stay_readable_by_a_format_1_reader(exported, tmp_path, monkeypatch,
                                                         images):
    """An ONNX export is written as format version 1, so a d2seg that reads up to version 1
    (simulated: FORMAT_VERSION patched to 1) reads it; a folder written before model.json
    recorded ``model_format`` is served as ONNX, with the answers of the current export."""
    from d2seg.deploy import load, runtime

    monkeypatch.setattr(runtime, "FORMAT_VERSION", 1)
    assert runtime.read_model_json(exported)["model_format"] == "onnx"
    meta = json.loads((exported / "model.json").read_text())
    del meta["model_format"]
    folder = _copy_export(exported, tmp_path / "before")
    (folder / "model.json").write_text(json.dumps(meta))
    old = load(folder, threads=1)
    assert old.backend == "onnxruntime"
    got, ref = old(images["demo_0"]), load(exported, threads=1)(images["demo_0"])
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key])


def test_model_file_that_is_not_onnx(exported, tmp_path, capsys, image_file):
    folder = _copy_export(exported, tmp_path / "garbage")
    (folder / "model.onnx").unlink()
    (folder / "model.onnx").write_bytes(b"PK\x03\x04 not a protobuf at all" * 10)
    err = predict_error(capsys, folder, image_file)
    assert str(folder / "model.onnx") in err and "ONNX" in err


@pytest.mark.parametrize("package, backend_args, extra", [
    ("onnxruntime", [], "deploy"),
    ("openvino", ["--backend", "openvino"], "openvino"),
])
def test_backend_not_installed(exported, image_file, tmp_path, package, backend_args, extra):
    """The backend's package cannot be imported (onnxruntime, the default; openvino with
    ``--backend openvino``): one line naming the package and the install command, exit 2."""
    args = [str(image_file), "--model", str(exported), *backend_args, "--out",
            str(tmp_path / "out")]
    code = (f"import sys; sys.modules[{package!r}] = None\n"
            "from d2seg.cli.main import main\n"
            f"sys.exit(main(['predict', *{args!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and f"{package} is not installed" in err
    assert f"pip install 'd2seg[{extra}]'" in err


def test_label_suggest_and_next_with_an_exported_model(exported, images, tmp_path):
    check_label_with_exported_model(exported, images, tmp_path)
