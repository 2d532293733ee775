"""``d2seg classical``: each method end to end on tiny files; user mistakes exit 2."""

from __future__ import annotations

import json

import cv2
import numpy as np
from pycocotools import mask as mask_util

from d2seg.cli.main import main
import contextlib
import io

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _scene(tmp_path):
    """Two bright touching discs on a dark noisy ground, image 000003.png, and its COCO file."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:120, :200]
    discs = [(yy - 60) ** 2 + (xx - c) ** 2 <= 35 ** 2 for c in (70, 130)]
    image = np.clip(np.where(discs[0] | discs[1], 190, 50) + rng.normal(0, 8, (120, 200)),
                    0, 255).astype(np.uint8)
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "000003.png"), np.dstack([image] * 3))
    anns = []
    for i, m in enumerate(discs):
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        anns.append({"id": i + 1, "image_id": 3, "category_id": 1, "iscrowd": 0, "area":
                     float(m.sum()), "segmentation": rle,
                     "bbox": [float(v) for v in mask_util.toBbox(rle)]})
    gt = {"images": [{"id": 3, "file_name": "000003.png", "height": 120, "width": 200}],
          "annotations": anns, "categories": [{"id": 1, "name": "disc"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    return image, discs


def test_grabcut_and_watershed_write_results_eval_reads(tmp_path, capsys):
    _scene(tmp_path)
    for argv in (["grabcut", "--boxes", str(tmp_path / "gt.json"), "--iters", "3"],
                 ["watershed", "--coco", str(tmp_path / "gt.json")]):
        out = tmp_path / f"{argv[0]}.json"
        assert main(["classical", *argv, "--images", str(tmp_path / "images"),
                     "--out", str(out)]) == 0
        results = json.loads(out.read_text())
        assert len(results) == 2
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools itself as the reference
            gt = COCO(str(tmp_path / "gt.json"))
            ev = COCOeval(gt, gt.loadRes(results), "segm")
            ev.evaluate(), ev.accumulate(), ev.summarize()
        assert ev.stats[1] == 1.0  # AP50


def test_superpixels_writes_label_pngs(tmp_path):
    image, discs = _scene(tmp_path)
    (tmp_path / "labels").mkdir()
    coarse = cv2.resize(cv2.resize(discs[0].astype(np.uint8), (25, 15),
                                   interpolation=cv2.INTER_NEAREST), (200, 120),
                        interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(tmp_path / "labels" / "000003.png"), coarse)
    for method in ("slic", "felzenszwalb"):
        assert main(["classical", "superpixels", "--images", str(tmp_path / "images"),
                     "--labels", str(tmp_path / "labels"), "--method", method,
                     "--out", str(tmp_path / method)]) == 0
        out = cv2.imread(str(tmp_path / method / "000003.png"), cv2.IMREAD_UNCHANGED)
        assert out.dtype == np.uint8 and out.shape == image.shape


def test_user_mistakes_are_one_line_errors(tmp_path, capsys):
    assert main(["classical", "grabcut", "--images", str(tmp_path), "--boxes",
                 str(tmp_path / "missing.json"), "--out", str(tmp_path / "r.json")]) == 2
    assert "boxes file not found" in capsys.readouterr().err
    _scene(tmp_path)
    (tmp_path / "images" / "cat.png").write_bytes(b"")
    assert main(["classical", "watershed", "--images", str(tmp_path / "images"),
                 "--out", str(tmp_path / "r.json")]) == 2
    assert "does not end with its numeric id" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
