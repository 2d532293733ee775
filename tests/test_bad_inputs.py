"""A corpus of malformed inputs, each run through the real ``d2seg`` command line.

Every case ends in exit code 2 and exactly one stderr line ``error: FILE: WHERE: reason; hint``
naming the offending file (and field or id where there is one), with no traceback unless
``--debug``. Files that are unusual but valid are handled as documented (EXIF orientation
applied, greyscale/RGBA/16-bit converted), checked against PIL as an independent reference in
the three places images are read: the training mapper, ``d2seg predict`` and ``d2seg visualize``.
Training on a dataset with a few unreadable images skips them with one warning each and a count
at the end, with and without DataLoader workers; a dataset with no readable image is one line.

Everything is built in temporary folders; the models are tiny (48-pixel images, ResNet-18 GN).
"""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps
from pycocotools import mask as mask_utils

from d2seg.cli.main import main

H, W = 48, 64  # every test image


# ------------------------------------------------------------------ files, good and bad

def _picture(seed: int = 0, size=(H, W)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
    image[10:30, 10:40] = (30, 200, 60)  # the one object of every image
    return image


def _encoded(array: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def decompression_bomb() -> bytes:
    """A 69-byte PNG whose header declares 30000 x 30000 RGB pixels (2.7 GB decoded)."""
    return (b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b""))


BAD_IMAGES = {  # file name -> (bytes, what the error line must say)
    "empty.jpg": (lambda: b"", r"empty file \(0 bytes\)"),
    "truncated.jpg": (lambda: _encoded(_picture(), "JPEG")[:600], r"truncated image data"),
    "truncated.png": (lambda: (lambda b: b[: len(b) // 2])(_encoded(_picture(), "PNG")),
                      r"truncated image data"),
    "text.jpg": (lambda: b"name,width,height\na.jpg,64,48\n", r"not an image file"),
    "bomb.png": (decompression_bomb, r"900 Mpx is over the \d+ Mpx decompression-bomb limit"),
}


def _rle(h, w, box=(10, 10, 40, 30)) -> dict:
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def coco_dataset(root: Path, n: int = 4, bad: dict[int, bytes] | None = None) -> Path:
    """``n`` images with one rectangle each (polygon masks) and ``root/instances.json``;
    ``bad`` replaces the files of some images by the given bytes."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        name = f"{i}.png"
        if bad and i in bad:
            (root / "images" / name).write_bytes(bad[i])
        else:
            Image.fromarray(_picture(i)).save(root / "images" / name)
        images.append({"id": i + 1, "file_name": name, "height": H, "width": W})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                     "bbox": [10, 10, 30, 20], "area": 600.0,
                     "segmentation": [[10, 10, 40, 10, 40, 30, 10, 30]]})
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "box"}]}))
    return path


def edit_json(path: Path, edit) -> Path:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))  # json writes NaN as NaN, as Python exporters do
    return path


def manifest(folder: Path, name: str, root: Path, text: str | None = None, **split) -> Path:
    """A coco_instances manifest ``folder/name.yaml`` for ``root``'s images + instances.json."""
    folder.mkdir(parents=True, exist_ok=True)
    split = {"images": "images", "annotations": "instances.json", **split}
    body = text if text is not None else (
        f"name: {name}\nkind: coco_instances\nroot: {root}\nsplits:\n  train:\n"
        + "".join(f"    {k}: {v}\n" for k, v in split.items()))
    path = folder / f"{name}.yaml"
    path.write_text(body)
    return path


def panoptic_dataset(root: Path, *, png_size=(H, W), undeclared: bool = False) -> Path:
    """One image, a stuff background and one thing; ``root/panoptic.json`` + PNG folder."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "panoptic").mkdir(parents=True, exist_ok=True)
    Image.fromarray(_picture()).save(root / "images" / "0.png")
    ids = np.full(png_size, 1, np.uint32)  # segment 1: stuff
    ids[10:30, 10:40] = 2                  # segment 2: the thing
    if undeclared:
        ids[0:5, 0:5] = 77                 # painted, but not in segments_info
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(root / "panoptic" / "0.png")
    segments = [{"id": 1, "category_id": 2, "iscrowd": 0, "area": int((ids == 1).sum())},
                {"id": 2, "category_id": 1, "iscrowd": 0, "area": int((ids == 2).sum())}]
    path = root / "panoptic.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "0.png", "height": H, "width": W}],
        "annotations": [{"image_id": 1, "file_name": "0.png", "segments_info": segments}],
        "categories": [{"id": 1, "name": "box", "isthing": 1},
                       {"id": 2, "name": "ground", "isthing": 0}]}))
    return path


# ------------------------------------------------------------------ a tiny model

def tiny_config(num_classes: int = 1):
    from d2seg.config import add_d2seg_config
    from d2seg.runners.diagnostics import tiny_mask_rcnn_cfg

    cfg = add_d2seg_config(tiny_mask_rcnn_cfg("cpu", H))
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 32
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 16
    cfg.INPUT.MASK_FORMAT = "polygon"
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = ()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.001
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.MAX_ITER = 6
    cfg.SOLVER.CHECKPOINT_PERIOD = 100000
    cfg.TEST.EVAL_PERIOD = 0
    cfg.D2SEG.PROGRESS_BAR = False
    return cfg


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """config.yaml of the tiny model and weights.pth for it (random weights)."""
    import torch
    from detectron2.modeling import build_model

    folder = tmp_path_factory.mktemp("model")
    cfg = tiny_config()
    (folder / "config.yaml").write_text(cfg.dump())
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg).state_dict()}, folder / "weights.pth")
    return folder / "config.yaml", folder / "weights.pth"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test sees only its own manifests and cache; run log handlers are removed after.
    One torch thread: these models are tiny, and on a shared 2-core machine it is 2x faster."""
    import torch

    from d2seg.engine.run import _remove_run_handlers

    (tmp_path / "manifests").mkdir()
    monkeypatch.setenv("D2SEG_DATASETS", str(tmp_path / "manifests"))
    monkeypatch.setenv("D2SEG_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    _remove_run_handlers()  # detectron2's console handler holds this test's captured stdout


# ------------------------------------------------------------------ the corpus

@dataclass
class Case:
    argv: list[str]
    file: str           # must be named on the error line
    reason: str         # regular expression the line must match
    where: str | None = None  # field or id the line must name


CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def _train(config: Path, out: Path, dataset: str, *opts: str) -> list[str]:
    return ["train", "--config-file", str(config), "--output", str(out),
            "DATASETS.TRAIN", f"('{dataset}',)", *opts]


def _train_on_json(t: Path, m, name: str, edit) -> Case:
    """``d2seg train`` on a manifest whose COCO JSON was changed by ``edit``."""
    path = edit_json(coco_dataset(t / "data"), edit)
    manifest(t / "manifests", name, t / "data")
    return _train(m[0], t / "out", f"{name}_train"), path


# -- COCO JSON
@case
def coco_not_json(t, m):
    coco_dataset(t)
    (t / "bad.json").write_text("images: [1, 2]\n")
    return Case(["data", "check", str(t / "bad.json"), "--images", str(t / "images")],
                str(t / "bad.json"), r"not valid JSON")


@case
def coco_truncated_json(t, m):
    path = coco_dataset(t)
    path.write_text(path.read_text()[:150])
    return Case(["data", "check", str(path), "--images", str(t / "images")], str(path),
                r"not valid JSON \(Unterminated")


@case
def coco_missing_images(t, m):
    path = edit_json(coco_dataset(t), lambda d: d.pop("images"))
    return Case(["data", "check", str(path), "--images", str(t / "images")], str(path),
                r"'images' is missing", where="images")


@case
def coco_missing_annotations_in_manifest(t, m):
    path = edit_json(coco_dataset(t / "data"), lambda d: d.pop("annotations"))
    manifest(t / "manifests", "noann", t / "data")
    return Case(_train(m[0], t / "out", "noann_train"), str(path), r"missing or not a list",
                where="annotations")


@case
def coco_annotation_of_missing_image(t, m):
    argv, path = _train_on_json(t, m, "orphan", lambda d: d["annotations"].append(
        dict(d["annotations"][0], id=99, image_id=42)))
    return Case(argv, str(path), r"image_id 42 is not in 'images'", where="annotation 99")


@case
def coco_unknown_category(t, m):
    argv, path = _train_on_json(t, m, "unkcat",
                                lambda d: d["annotations"][2].update(category_id=5))
    return Case(argv, str(path), r"category_id 5 is not declared", where="image_id 3")


@case
def coco_nan_bbox(t, m):
    argv, path = _train_on_json(t, m, "nanbox",
                                lambda d: d["annotations"][1].update(bbox=[float("nan"), 1, 5, 5]))
    return Case(argv, str(path), r"bbox \[nan, 1, 5, 5\] is not 4 finite numbers",
                where="annotation 2")


@case
def coco_negative_bbox(t, m):
    argv, path = _train_on_json(t, m, "negbox",
                                lambda d: d["annotations"][0].update(bbox=[10, 10, -5, 5]))
    return Case(argv, str(path), r"negative width or height", where="annotation 1")


@case
def coco_rle_of_wrong_size(t, m):
    def edit(d):
        d["annotations"][3]["segmentation"] = _rle(40, W)

    argv, path = _train_on_json(t, m, "rlesize", edit)
    return Case(argv + ["INPUT.MASK_FORMAT", "bitmask"], str(path),
                r"RLE size \[40, 64\] \(h, w\) differs from its image's \[48, 64\]",
                where="annotation 4, image_id 4")


# -- manifests
@case
def manifest_missing(t, m):
    return Case(["data", "check", str(t / "nope.yaml")], str(t / "nope.yaml"),
                r"manifest not found")


@case
def manifest_unknown_kind(t, m):
    coco_dataset(t / "data")
    path = manifest(t, "kinds", t / "data", text=f"name: kinds\nkind: coco_instance\nroot: "
                    f"{t / 'data'}\nsplits:\n  train:\n    images: images\n")
    return Case(["data", "check", str(path)], str(path), r"unknown kind 'coco_instance'",
                where="kind")


@case
def manifest_missing_split_folder(t, m):
    coco_dataset(t / "data")
    path = manifest(t, "nofolder", t / "data", images="imgs")
    return Case(["data", "check", str(path)], str(path), r"folder not found: .*imgs",
                where="splits.train.images")


@case
def manifest_bad_yaml(t, m):
    path = manifest(t / "manifests", "badyaml", t, text="name: badyaml\nkind: [coco_instances\n")
    return Case(_train(m[0], t / "out", "badyaml_train"), str(path), r"malformed YAML",
                where="line 3")


@case
def manifest_unregistered_dataset(t, m):
    return Case(_train(m[0], t / "out", "nothere_train"), "'nothere_train'",
                r"dataset 'nothere_train' is not registered")


# -- images: d2seg visualize reads them
def _visualize_bad_image(t, m, name):
    data, reason = BAD_IMAGES[name]
    path = coco_dataset(t, n=2)
    (t / "images" / name).write_bytes(data())
    edit_json(path, lambda d: d["images"][1].update(file_name=name))
    return Case(["visualize", "--images", str(t / "images"), "--gt", str(path),
                 "--out", str(t / "out")], str(t / "images" / name), reason)


for _name in BAD_IMAGES:
    def _make(t, m, _name=_name):
        return _visualize_bad_image(t, m, _name)
    CASES["image_" + _name.replace(".", "_")] = _make


@case
def image_missing(t, m):
    path = edit_json(coco_dataset(t, n=2), lambda d: d["images"][1].update(file_name="gone.png"))
    return Case(["visualize", "--images", str(t / "images"), "--gt", str(path), "--out",
                 str(t / "out")], str(t / "images" / "gone.png"), r"image file not found")


# -- images: d2seg predict reads them
@case
def predict_truncated_jpeg(t, m):
    (t / "in").mkdir()
    Image.fromarray(_picture()).save(t / "in" / "good.png")
    (t / "in" / "cut.jpg").write_bytes(BAD_IMAGES["truncated.jpg"][0]())
    return Case(["predict", str(t / "in"), "--config-file", str(m[0]), "--weights", str(m[1]),
                 "--out", str(t / "out")], str(t / "in" / "cut.jpg"), r"truncated image data")


@case
def predict_decompression_bomb(t, m):
    (t / "bomb.png").write_bytes(decompression_bomb())
    return Case(["predict", str(t / "bomb.png"), "--config-file", str(m[0]), "--weights",
                 str(m[1]), "--out", str(t / "out")], str(t / "bomb.png"),
                r"decompression-bomb limit")


@case
def eval_truncated_image_in_a_worker(t, m):
    coco_dataset(t / "data", bad={1: BAD_IMAGES["truncated.png"][0]()})
    manifest(t / "manifests", "evalbad", t / "data")
    return Case(["eval", "--config-file", str(m[0]), "--weights", str(m[1]), "--dataset",
                 "evalbad_train", "--out", str(t / "out"), "--no-plots",
                 "DATASETS.TRAIN", "('evalbad_train',)", "DATALOADER.NUM_WORKERS", "2"],
                str(t / "data" / "images" / "1.png"), r"truncated image data")


# -- panoptic PNGs
@case
def panoptic_png_missing(t, m):
    path = panoptic_dataset(t)
    (t / "panoptic" / "0.png").unlink()
    return Case(["visualize", "--images", str(t / "images"), "--panoptic-gt-json", str(path),
                 "--out", str(t / "out")], str(t / "panoptic" / "0.png"),
                r"panoptic PNG not found")


@case
def panoptic_png_wrong_size(t, m):
    path = panoptic_dataset(t, png_size=(H // 2, W))
    return Case(["visualize", "--images", str(t / "images"), "--panoptic-gt-json", str(path),
                 "--out", str(t / "out")], str(t / "panoptic" / "0.png"),
                r"panoptic PNG is 24x64 but the image is 48x64")


@case
def panoptic_prediction_missing_png(t, m):
    gt = panoptic_dataset(t / "gt")
    pred = panoptic_dataset(t / "pred")
    (t / "pred" / "panoptic" / "0.png").unlink()
    return Case(["panoptic", "pq", "--gt-json", str(gt), "--gt-dir", str(t / "gt" / "panoptic"),
                 "--pred-json", str(pred), "--pred-dir", str(t / "pred" / "panoptic"),
                 "--workers", "1", "--quiet"], str(t / "pred" / "panoptic" / "0.png"),
                r"panoptic PNG not found")


@case
def panoptic_prediction_truncated_png(t, m):
    gt = panoptic_dataset(t / "gt")
    pred = panoptic_dataset(t / "pred")
    png = t / "pred" / "panoptic" / "0.png"
    png.write_bytes(png.read_bytes()[:60])
    return Case(["panoptic", "pq", "--gt-json", str(gt), "--gt-dir", str(t / "gt" / "panoptic"),
                 "--pred-json", str(pred), "--pred-dir", str(t / "pred" / "panoptic"),
                 "--workers", "1", "--quiet"], str(png), r"panoptic PNG unreadable")


@case
def panoptic_prediction_undeclared_segment(t, m):
    gt = panoptic_dataset(t / "gt")
    pred = panoptic_dataset(t / "pred", undeclared=True)
    return Case(["panoptic", "pq", "--gt-json", str(gt), "--gt-dir", str(t / "gt" / "panoptic"),
                 "--pred-json", str(pred), "--pred-dir", str(t / "pred" / "panoptic"),
                 "--workers", "1", "--quiet"], str(t / "pred" / "panoptic" / "0.png"),
                r"segment id 77 is in the PNG but not in the JSON", where="image 1")


def _panoptic_manifest(t, name):
    manifest(t / "manifests", name, t / "data", text=(
        f"name: {name}\nkind: coco_panoptic\nroot: {t / 'data'}\nsplits:\n  train:\n"
        "    images: images\n    annotations: panoptic.json\n    panoptic_root: panoptic\n"))


@case
def panoptic_training_png_undeclared_segment(t, m):
    panoptic_dataset(t / "data", undeclared=True)
    _panoptic_manifest(t, "pundecl")
    return Case(_train(m[0], t / "out", "pundecl_train_separated"),
                str(t / "data" / "panoptic" / "0.png"),
                r"segment ids \[77\] are in the PNG but not in segments_info of image_id 1")


@case
def panoptic_training_png_wrong_size(t, m):
    panoptic_dataset(t / "data", png_size=(H, W + 8))
    _panoptic_manifest(t, "psize")
    return Case(_train(m[0], t / "out", "psize_train_separated"),
                str(t / "data" / "panoptic" / "0.png"),
                r"PNG is 72x48 but image_id 1 is 64x48")


# -- config files
def _config(t, m, text):
    (t / "c.yaml").write_text(text)
    return ["train", "--config-file", str(t / "c.yaml"), "--output", str(t / "out")]


@case
def config_unknown_key(t, m):
    return Case(_config(t, m, f"_BASE_: {m[0]}\nSOLVER:\n  BASE_LRR: 0.1\n"),
                str(t / "c.yaml"), r"unknown config key SOLVER\.BASE_LRR; did you mean "
                r"SOLVER\.BASE_LR\b")


@case
def config_wrong_type(t, m):
    return Case(_config(t, m, f"_BASE_: {m[0]}\nSOLVER:\n  BASE_LR: abc\n"),
                str(t / "c.yaml"), r"SOLVER\.BASE_LR has the wrong type: expected float, got str")


@case
def config_missing_base(t, m):
    return Case(_config(t, m, "_BASE_: ../Base-Missing.yaml\nSOLVER:\n  BASE_LR: 0.1\n"),
                str(t / "c.yaml"), r"_BASE_ file \.\./Base-Missing\.yaml not found",
                where="_BASE_")


@case
def config_yaml_syntax_error(t, m):
    return Case(_config(t, m, f"_BASE_: {m[0]}\nSOLVER:\n  BASE_LR: [0.1\n  MAX_ITER: 5\n"),
                str(t / "c.yaml"), r"not valid YAML", where="line 4")


# -- command-line arguments
@case
def cli_config_file_missing(t, m):
    return Case(["train", "--config-file", str(t / "nope.yaml")], str(t / "nope.yaml"),
                r"config file not found")


@case
def cli_odd_overrides(t, m):
    return Case(["train", "--config-file", str(m[0]), "SOLVER.MAX_ITER", "5", "SOLVER.BASE_LR"],
                "command line", r"KEY VALUE pairs; 'SOLVER.BASE_LR' has no value")


@case
def cli_unknown_override(t, m):
    return Case(["train", "--config-file", str(m[0]), "SOLVER.MAX_ITERS", "5"], "command line",
                r"unknown config key SOLVER\.MAX_ITERS; did you mean SOLVER\.MAX_ITER\b")


@case
def cli_override_of_wrong_type(t, m):
    return Case(["train", "--config-file", str(m[0]), "SOLVER.MAX_ITER", "many"],
                "command line", r"SOLVER\.MAX_ITER has the wrong type: expected int, got str")


@case
def cli_visualize_n_zero(t, m):
    path = coco_dataset(t)
    return Case(["visualize", "--images", str(t / "images"), "--gt", str(path), "--out",
                 str(t / "out"), "-n", "0"], "d2seg visualize", r"-n must be at least 1, got 0")


@case
def cli_predict_batch_size_zero(t, m):
    coco_dataset(t)
    return Case(["predict", str(t / "images"), "--config-file", str(m[0]), "--weights",
                 str(m[1]), "--out", str(t / "out"), "--batch-size", "0"], "--batch-size",
                r"must be at least 1, got 0")


@case
def cli_predict_weights_missing(t, m):
    coco_dataset(t)
    return Case(["predict", str(t / "images"), "--config-file", str(m[0]), "--weights",
                 str(t / "nope.pth"), "--out", str(t / "out")], str(t / "nope.pth"),
                r"not found")


@case
def cli_eval_results_missing(t, m):
    path = coco_dataset(t)
    return Case(["eval", "--results", str(t / "nope.json"), "--gt", str(path), "--out",
                 str(t / "out"), "--no-plots"], str(t / "nope.json"), r"not found")


def _run(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_ends_in_one_error_line(name, tmp_path, capsys, model_files):
    c = CASES[name](tmp_path, model_files)
    code, out, err = _run(c.argv, capsys)
    lines = err.splitlines()
    assert code == 2, (out[-2000:], err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    line = lines[0]
    assert c.file in line, line
    assert re.search(c.reason, line), line
    if c.where:
        assert f": {c.where}: " in line, line
    assert "Traceback" not in out + err


def test_debug_shows_the_traceback(tmp_path, capsys):
    path = edit_json(coco_dataset(tmp_path, n=1),
                     lambda d: d["images"][0].update(file_name="bomb.png"))
    (tmp_path / "images" / "bomb.png").write_bytes(decompression_bomb())
    argv = ["visualize", "--images", str(tmp_path / "images"), "--gt", str(path), "--out",
            str(tmp_path / "out")]
    code, _, err = _run(["--debug", *argv], capsys)
    assert code == 2 and "Traceback (most recent call last)" in err
    assert "DecompressionBombError" in err  # the cause is kept for --debug
    assert err.splitlines()[-1].startswith(f"error: {tmp_path / 'images' / 'bomb.png'}: ")


# ------------------------------------------------------------------ d2seg data check reports

REPORTED = {  # edit of the clean JSON -> (problem kind, image id, annotation id)
    "polygon_of_two_points": (lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 5]]),
                              "polygon_malformed", 1, 1),
    "nan_bbox": (lambda d: d["annotations"][1].update(bbox=[float("nan"), 1, 5, 5]),
                 "bbox_degenerate", 2, 2),
    "annotation_of_missing_image": (lambda d: d["annotations"].append(
        dict(d["annotations"][0], id=99, image_id=42)), "unknown_image", 42, 99),
    "rle_of_wrong_size": (lambda d: d["annotations"][3].update(segmentation=_rle(40, W)),
                          "rle_size_mismatch", 4, 4),
}


@pytest.mark.parametrize("name", sorted(REPORTED))
def test_data_check_reports_annotation_problems(name, tmp_path, capsys):
    """``d2seg data check`` lists each problem on one line with file, image and annotation id
    and exits 1 (its documented report, not an error)."""
    edit, kind, image_id, ann_id = REPORTED[name]
    path = edit_json(coco_dataset(tmp_path), edit)
    code, out, err = _run(["data", "check", str(path), "--images", str(tmp_path / "images")],
                          capsys)
    assert code == 1 and err == "" and "Traceback" not in out
    wanted = f"error: {path}: image {image_id}: annotation {ann_id}: {kind}: "
    assert any(line.startswith(wanted) for line in out.splitlines()), out


def test_short_polygons_and_flat_boxes_are_dropped_with_one_warning(tmp_path, caplog):
    """detectron2 silently drops them; d2seg names the file and the annotation ids once."""
    from detectron2.data import DatasetCatalog

    from d2seg.data.manifest import load_manifest
    from d2seg.data.register import register_manifest

    def edit(d):
        d["annotations"][0]["segmentation"].append([1, 1, 5, 5])
        d["annotations"][2]["bbox"] = [10, 10, 0, 20]

    path = edit_json(coco_dataset(tmp_path / "data"), edit)
    names = register_manifest(load_manifest(manifest(tmp_path, "dropped", tmp_path / "data")))
    with caplog.at_level("WARNING", logger="d2seg"):
        dicts = DatasetCatalog.get(names[0])
    assert len(dicts) == 4
    notes = [r.getMessage() for r in caplog.records if r.name == "d2seg"]
    assert len(notes) == 1, notes
    assert notes[0].startswith(f"{path}: 1 annotation(s) with polygons of fewer than 3 points "
                               "(ids 1) and 1 annotation(s) with a zero-size bbox (ids 3)")


# ------------------------------------------------------------------ unusual but valid images

def _valid_images(folder: Path) -> dict[str, np.ndarray]:
    """Unusual valid files -> what reading them must give (RGB), from PIL as the reference."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (H, W), dtype=np.uint8)
    Image.fromarray(grey).save(folder / "grey.png")
    rgba = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    wide = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    Image.fromarray(wide).save(folder / "grey16.png")
    wide_rgb = rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    cv2.imwrite(str(folder / "rgb16.png"), wide_rgb[..., ::-1])  # PIL cannot write 16-bit RGB
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: "rotate 90 degrees clockwise to view"
    Image.fromarray(_picture(3, (W, H))).save(folder / "rotated.jpg", exif=exif, quality=95)
    with Image.open(folder / "rotated.jpg") as im:
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert upright.shape == (H, W, 3)  # the reference really rotated it
    with Image.open(folder / "grey.png") as im:
        grey_rgb = np.asarray(im.convert("RGB"))
    return {
        "grey.png": grey_rgb,                                           # convert("RGB")
        "rgba.png": rgba[..., :3],                                      # alpha dropped
        "grey16.png": np.repeat((wide >> 8).astype(np.uint8)[..., None], 3, -1),  # high byte
        "rgb16.png": (wide_rgb >> 8).astype(np.uint8),                  # high byte
        "rotated.jpg": upright,                                         # EXIF applied
    }


def test_unusual_images_read_as_documented_everywhere(tmp_path):
    """Training mapper, d2seg predict's frames and d2seg visualize's reader agree with PIL."""
    from d2seg.data.mappers import D2SegDatasetMapper
    from d2seg.engine.predict import iter_frames
    from d2seg.visualize.files import read_image as visualize_read

    expected = _valid_images(tmp_path)
    cfg = tiny_config()
    cfg.INPUT.MIN_SIZE_TRAIN = (H,)  # a resize to the same size: the pixels pass unchanged
    mapper = D2SegDatasetMapper(cfg, is_train=True)
    names = sorted(expected)
    frames = {f.name: f.image for f in iter_frames([tmp_path / n for n in names])}
    for name in names:
        want_bgr = expected[name][..., ::-1]
        record = {"file_name": str(tmp_path / name), "image_id": 1, "height": H, "width": W,
                  "annotations": []}
        trained = mapper(record)["image"].numpy().transpose(1, 2, 0)
        np.testing.assert_array_equal(trained, want_bgr, err_msg=f"mapper: {name}")
        np.testing.assert_array_equal(frames[name], want_bgr, err_msg=f"predict: {name}")
        np.testing.assert_array_equal(visualize_read(tmp_path / name), want_bgr,
                                      err_msg=f"visualize: {name}")


def test_detectron2_alone_saturates_16_bit_png(tmp_path):
    """Why d2seg reads images itself: detectron2's reader turns a 16-bit grey PNG white."""
    from detectron2.data.detection_utils import read_image

    _valid_images(tmp_path)
    assert (read_image(str(tmp_path / "grey16.png"), "BGR") == 255).mean() > 0.9


# ------------------------------------------------------------------ training skips bad images

def _train_config(tmp_path: Path, workers: int) -> Path:
    cfg = tiny_config()
    cfg.DATALOADER.NUM_WORKERS = workers
    # 4 iterations of 2 images: the sampler's first shuffle of the 8 images, whole, so every
    # image is met (workers take alternate positions, and the loader interleaves them in order)
    cfg.SOLVER.MAX_ITER = 4
    path = tmp_path / "config.yaml"
    path.write_text(cfg.dump())
    return path


@pytest.mark.parametrize("workers", [0, 2])
def test_training_skips_unreadable_images_and_counts_them(tmp_path, capsys, workers):
    bad = {2: b"", 5: BAD_IMAGES["truncated.png"][0]()}
    coco_dataset(tmp_path / "data", n=8, bad=bad)
    manifest(tmp_path / "manifests", f"someunreadable{workers}", tmp_path / "data")
    out = tmp_path / "out"
    code, stdout, err = _run(_train(_train_config(tmp_path, workers), out,
                                    f"someunreadable{workers}_train"), capsys)
    assert code == 0, (stdout[-3000:], err[-3000:])
    assert "Traceback" not in stdout + err and (out / "model_final.pth").is_file()
    bad_files = [str(tmp_path / "data" / "images" / f"{i}.png") for i in sorted(bad)]
    for file in bad_files:  # met in the first shuffle, warned about once (main process)
        warned = [line for line in stdout.splitlines() if f"skipping unreadable image {file}:"
                  in line]
        assert len(warned) == 1, stdout[-3000:]
    summary = [line for line in stdout.splitlines() if "skipped 2 unreadable image(s): " in line]
    assert len(summary) == 1, stdout[-3000:]
    assert all(f in summary[0] for f in bad_files)
    listed = json.loads((out / "skipped_images.json").read_text())
    assert sorted(e["file"] for e in listed) == bad_files
    assert "empty file" in next(e["reason"] for e in listed if e["file"] == bad_files[0])


@pytest.mark.parametrize("workers", [0, 2])
def test_training_with_no_readable_image_ends_in_one_line(tmp_path, capsys, workers):
    coco_dataset(tmp_path / "data", n=3, bad={0: b"", 1: b"", 2: b"not a png"})
    name = f"allunreadable{workers}"
    manifest(tmp_path / "manifests", name, tmp_path / "data")
    code, stdout, err = _run(_train(_train_config(tmp_path, workers), tmp_path / "out",
                                    f"{name}_train"), capsys)
    assert code == 2 and "Traceback" not in stdout + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert re.match(rf"error: {re.escape(str(tmp_path / 'data' / 'images'))}/\d\.png: "
                    r"DATASETS\.TRAIN: none of the 3 training images can be read", lines[0])
