"""``d2seg visualize --dataset NAME``: a registered dataset's ground truth, results JSONs, models.

References are independent of d2seg: masks decoded by pycocotools from the dataset's JSON,
panoptic ids decoded from the PNGs with PIL, label PNGs read with PIL, model outputs from
detectron2's DefaultPredictor.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from d2seg.cli.main import main
from d2seg.data.demo import default_demo_dir

REPO = Path(__file__).resolve().parents[2]
VAL = default_demo_dir() / "val"  # $D2SEG_CACHE/demo/val
GAP = 4


@pytest.fixture(scope="module")
def demo():
    """The demo datasets registered (generated into $D2SEG_CACHE/demo on first use)."""
    from d2seg.data.register import register_datasets

    register_datasets()
    return COCO(str(VAL / "instances.json"))


def panels(out: np.ndarray, h: int, w: int, count: int) -> list[np.ndarray]:
    """The panels of a side-by-side picture (below the title bar), each ``h`` x ``w``."""
    assert out.shape[1] == count * w + (count - 1) * GAP
    return [out[out.shape[0] - h:, i * (w + GAP):i * (w + GAP) + w] for i in range(count)]


def first_images(coco: COCO, n: int) -> list[dict]:
    return [coco.imgs[i] for i in sorted(coco.imgs)[:n]]


def raw(image_info: dict) -> np.ndarray:
    return cv2.imread(str(VAL / "images" / image_info["file_name"]))


def interior(mask: np.ndarray, px: int = 2) -> np.ndarray:
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


def far_from(boxes_xywh, h: int, w: int, my: int = 24, mx: int = 64) -> np.ndarray:
    """Pixels away from every box (labels, wider than small boxes, and contours stay near)."""
    near = np.zeros((h, w), bool)
    for x, y, bw, bh in boxes_xywh:
        near[max(0, int(y) - my):int(y + bh) + my, max(0, int(x) - mx):int(x + bw) + mx] = True
    return ~near


def test_ground_truth_of_a_registered_dataset(demo, tmp_path):
    out_dir = tmp_path / "vis"
    assert main(["visualize", "--dataset", "demo_instances_val", "--out", str(out_dir),
                 "-n", "4"]) == 0
    infos = first_images(demo, 4)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        Path(i["file_name"]).stem + ".png" for i in infos)
    checked = quiet_pixels = 0
    for info in infos:
        h, w = info["height"], info["width"]
        source = raw(info)
        (left,) = panels(cv2.imread(str(out_dir / (Path(info["file_name"]).stem + ".png"))),
                         h, w, 1)
        anns = demo.loadAnns(demo.getAnnIds(imgIds=[info["id"]]))
        changed = (left != source).any(axis=2)
        for ann in anns:
            inside = interior(demo.annToMask(ann))
            if inside.sum() < 20:
                continue
            assert changed[inside].mean() > 0.99, ann["id"]  # every mask is drawn
            checked += 1
        quiet = far_from([a["bbox"] for a in anns], h, w)
        assert not changed[quiet].any()  # nothing drawn away from the instances
        quiet_pixels += int(quiet.sum())
    assert checked >= 4 and quiet_pixels > 1000


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def test_predictions_from_a_results_json(demo, tmp_path):
    info = first_images(demo, 1)[0]
    h, w = info["height"], info["width"]
    anns = demo.loadAnns(demo.getAnnIds(imgIds=[info["id"]]))
    shown, hidden = anns[0], anns[-1]
    assert shown["id"] != hidden["id"]
    results = [  # dataset category ids, as COCOEvaluator writes them
        {"image_id": info["id"], "category_id": shown["category_id"], "score": 0.9,
         "segmentation": _rle(demo.annToMask(shown)), "bbox": shown["bbox"]},
        {"image_id": info["id"], "category_id": hidden["category_id"], "score": 0.2,
         "segmentation": _rle(demo.annToMask(hidden)), "bbox": hidden["bbox"]},
    ]
    (tmp_path / "results.json").write_text(json.dumps(results))
    out_dir = tmp_path / "vis"
    assert main(["visualize", "--dataset", "demo_instances_val", "--pred",
                 str(tmp_path / "results.json"), "--out", str(out_dir), "-n", "2"]) == 0
    assert len(list(out_dir.iterdir())) == 2  # the second image: ground truth | no predictions
    source = raw(info)
    left, right = panels(cv2.imread(str(out_dir / (Path(info["file_name"]).stem + ".png"))),
                         h, w, 2)
    mask_shown = interior(demo.annToMask(shown))
    mask_hidden = interior(demo.annToMask(hidden)) & ~(demo.annToMask(shown) > 0)
    assert (right != source).any(axis=2)[mask_shown].mean() > 0.99
    assert (right == source).all(axis=2)[mask_hidden].mean() > 0.99  # below --score-thresh
    # the same class in the same colour on both sides: the first instance of its class in both
    first_of_class = next(a for a in anns if a["category_id"] == shown["category_id"])
    if first_of_class["id"] == shown["id"]:
        assert (left == right).all(axis=2)[mask_shown].mean() > 0.8


def test_results_json_that_does_not_fit_the_dataset(demo, tmp_path, capsys):
    info = first_images(demo, 1)[0]
    bad_cat = [{"image_id": info["id"], "category_id": 99, "score": 0.9, "bbox": [1, 1, 5, 5]}]
    bad_img = [{"image_id": 123456789, "category_id": 1, "score": 0.9, "bbox": [1, 1, 5, 5]}]
    for results, reason in ((bad_cat, "category_id 99 is not a category of the dataset"),
                            (bad_img, "no prediction's image_id is in the dataset")):
        path = tmp_path / "r.json"
        path.write_text(json.dumps(results))
        rc = main(["visualize", "--dataset", "demo_instances_val", "--pred", str(path),
                   "--out", str(tmp_path / "v"), "-n", "1", "--score-thresh", "0"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and reason in err and "\n" not in err


def test_unknown_dataset_is_one_line_naming_the_nearest(demo, tmp_path, capsys):
    rc = main(["visualize", "--dataset", "demo_instance_val", "--out", str(tmp_path / "v")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "'demo_instance_val' is not registered" in err and "demo_instances_val" in err
    assert not (tmp_path / "v").exists()
    rc = main(["visualize", "--dataset", "demo_instances_val", "--images", str(tmp_path),
               "--out", str(tmp_path / "v")])
    assert rc == 2 and "drop --images" in capsys.readouterr().err
    rc = main(["visualize", "--images", str(tmp_path), "--config-file", "x.yaml",
               "--out", str(tmp_path / "v")])
    assert rc == 2 and "--dataset" in capsys.readouterr().err


def test_panoptic_ground_truth(demo, tmp_path):
    data = json.loads((VAL / "panoptic.json").read_text())
    ann = min(data["annotations"], key=lambda a: a["image_id"])
    info = next(i for i in data["images"] if i["id"] == ann["image_id"])
    out_dir = tmp_path / "vis"
    assert main(["visualize", "--dataset", "demo_panoptic_val", "--out", str(out_dir),
                 "-n", "1"]) == 0
    rgb = np.asarray(Image.open(VAL / "panoptic" / ann["file_name"]).convert("RGB"), np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    (left,) = panels(cv2.imread(str(out_dir / (Path(info["file_name"]).stem + ".png"))),
                     info["height"], info["width"], 1)
    changed = (left != raw(info)).any(axis=2)
    for seg in ann["segments_info"]:
        inside = interior(ids == seg["id"])
        if inside.sum() >= 20:
            # alpha 0.5 over a class colour close to the scene's own may leave a few pixels equal
            assert changed[inside].mean() > 0.9, seg


def test_semantic_ground_truth(demo, tmp_path):
    out_dir = tmp_path / "vis"
    assert main(["visualize", "--dataset", "demo_semseg_val", "--out", str(out_dir),
                 "-n", "1", "--alpha", "1"]) == 0
    info = first_images(demo, 1)[0]
    labels = np.asarray(Image.open(VAL / "semantic" / (Path(info["file_name"]).stem + ".png")))
    (left,) = panels(cv2.imread(str(out_dir / (Path(info["file_name"]).stem + ".png"))),
                     info["height"], info["width"], 1)
    # alpha 1: each class is one flat colour; pixels of one class away from edges and labels
    colours = {}
    for value in np.unique(labels):
        if value == 255:
            continue
        inside = interior(labels == value, 3)
        if inside.sum() < 50:
            continue
        found, counts = np.unique(left[inside].reshape(-1, 3), axis=0, return_counts=True)
        colours[int(value)] = tuple(found[counts.argmax()])
    assert len(colours) >= 3 and len(set(colours.values())) == len(colours)  # one per class


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, demo):
    """An untrained tiny Mask R-CNN for the demo's 4 classes, saved as a checkpoint + config."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from d2seg.runners.diagnostics import tiny_mask_rcnn_cfg

    torch.manual_seed(0)
    cfg = tiny_mask_rcnn_cfg("cpu", 96)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 4
    model = build_model(cfg)
    root = tmp_path_factory.mktemp("ckpt")
    DetectionCheckpointer(model, save_dir=str(root)).save("model")
    (root / "config.yaml").write_text(cfg.dump())
    return cfg, root / "model.pth", root / "config.yaml"


def test_predictions_from_a_model_checkpoint(demo, tiny_checkpoint, tmp_path):
    from detectron2.engine import DefaultPredictor

    cfg, weights, yaml_path = tiny_checkpoint
    info = first_images(demo, 1)[0]
    image = raw(info)
    ref_cfg = cfg.clone()
    ref_cfg.MODEL.WEIGHTS = str(weights)
    ref = DefaultPredictor(ref_cfg)(image)["instances"].to("cpu")
    assert len(ref) >= 3
    scores = ref.scores.sort(descending=True).values
    thresh = float(scores[2] + scores[3]) / 2  # the three best are drawn
    out_dir = tmp_path / "vis"
    assert main(["visualize", "--dataset", "demo_instances_val", "--config-file", str(yaml_path),
                 "MODEL.WEIGHTS", str(weights), "--out", str(out_dir), "-n", "1",
                 "--score-thresh", f"{thresh:.6f}"]) == 0
    h, w = info["height"], info["width"]
    _, right = panels(cv2.imread(str(out_dir / (Path(info["file_name"]).stem + ".png"))),
                      h, w, 2)
    keep = ref.scores >= thresh
    masks = ref.pred_masks[keep].numpy()
    changed = (right != image).any(axis=2)
    union = interior(masks.any(axis=0), 1)
    assert union.sum() > 20 and changed[union].mean() > 0.98
    boxes = ref.pred_boxes.tensor[keep].numpy()
    quiet = far_from([(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes], h, w)
    if quiet.any():
        assert not changed[quiet].any()

    # --weights instead of MODEL.WEIGHTS: the same picture
    assert main(["visualize", "--dataset", "demo_instances_val", "--config-file", str(yaml_path),
                 "--weights", str(weights), "--out", str(tmp_path / "vis2"), "-n", "1",
                 "--score-thresh", f"{thresh:.6f}"]) == 0
    name = Path(info["file_name"]).stem + ".png"
    assert np.array_equal(cv2.imread(str(out_dir / name)),
                          cv2.imread(str(tmp_path / "vis2" / name)))


def test_panoptic_fpn_predictions_on_a_panoptic_dataset(demo, tmp_path):
    """A (random) Panoptic FPN's panoptic output drawn beside the panoptic ground truth."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from d2seg.config import load_config
    from d2seg.config.prepare import prepare_config

    cfg = load_config(REPO / "configs" / "panoptic" / "panoptic_fpn_MNV2_cpu_quick.yaml",
                      ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
                       "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", "0.0",
                       "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT", "16"])
    cfg = prepare_config(cfg)
    torch.manual_seed(0)
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("pfpn")
    (tmp_path / "pfpn.yaml").write_text(cfg.dump())
    out_dir = tmp_path / "vis"
    assert main(["visualize", "--dataset", "demo_panoptic_val", "--config-file",
                 str(tmp_path / "pfpn.yaml"), "--weights", str(tmp_path / "pfpn.pth"),
                 "--out", str(out_dir), "-n", "1"]) == 0
    info = first_images(demo, 1)[0]
    image = raw(info)
    left, right = panels(cv2.imread(str(out_dir / (Path(info["file_name"]).stem + ".png"))),
                         info["height"], info["width"], 2)
    assert (left != image).any(axis=2).mean() > 0.5
    assert (right != image).any(axis=2).any()  # stuff from the semantic head at least


def test_panoptic_and_semantic_prediction_files_equal_to_the_truth_draw_the_same(demo, tmp_path):
    """A COCO panoptic JSON (dataset category ids) and detectron2's sem_seg_predictions.json
    holding the ground truth itself must give a right panel identical to the left one."""
    info = first_images(demo, 1)[0]
    name = Path(info["file_name"]).stem + ".png"
    assert main(["visualize", "--dataset", "demo_panoptic_val", "--pred",
                 str(VAL / "panoptic.json"), "--pred-dir", str(VAL / "panoptic"),
                 "--out", str(tmp_path / "pan"), "-n", "1"]) == 0
    left, right = panels(cv2.imread(str(tmp_path / "pan" / name)), info["height"], info["width"], 2)
    assert np.array_equal(left, right)

    labels = np.asarray(Image.open(VAL / "semantic" / name))
    results = [{"file_name": str(VAL / "images" / info["file_name"]), "category_id": int(c),
                "segmentation": _rle(labels == c)} for c in np.unique(labels) if c != 255]
    (tmp_path / "sem_seg_predictions.json").write_text(json.dumps(results))
    assert main(["visualize", "--dataset", "demo_semseg_val", "--pred",
                 str(tmp_path / "sem_seg_predictions.json"), "--out", str(tmp_path / "sem"),
                 "-n", "1"]) == 0
    left, right = panels(cv2.imread(str(tmp_path / "sem" / name)), info["height"], info["width"], 2)
    assert np.array_equal(left, right)
