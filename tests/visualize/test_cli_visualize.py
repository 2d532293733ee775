"""``d2seg visualize`` on a tiny generated COCO set and a tiny COCO panoptic set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from d2seg.cli.main import main

H, W = 48, 64
REPO = Path(__file__).resolve().parents[2]


def make_coco_set(root: Path):
    """Three images; per image one polygon ground truth and two predictions (0.9 and 0.2)."""
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    images, anns, results = [], [], []
    for k in range(1, 4):
        cv2.imwrite(str(root / "images" / f"img_{k:06d}.png"),
                    rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        images.append({"id": k, "file_name": f"img_{k:06d}.png", "height": H, "width": W})
        anns.append({"id": k, "image_id": k, "category_id": 1, "iscrowd": 0, "area": 400,
                     "bbox": [4, 4, 20, 20], "segmentation": [[4, 4, 24, 4, 24, 24, 4, 24]]})
        for score, (y0, x0) in ((0.9, (8, 30)), (0.2, (30, 4))):
            m = np.zeros((H, W), np.uint8)
            m[y0:y0 + 12, x0:x0 + 16] = 1
            rle = mask_utils.encode(np.asfortranarray(m))
            rle["counts"] = rle["counts"].decode()
            results.append({"image_id": k, "category_id": 2, "score": score, "segmentation": rle,
                            "bbox": [x0, y0, 16, 12]})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "blob"}]}
    (root / "gt.json").write_text(json.dumps(gt))
    (root / "pred.json").write_text(json.dumps(results))


def panel(out, i, gap=4):
    """The i-th panel of a side-by-side picture (below its title bar)."""
    return out[out.shape[0] - H:, i * (W + gap):i * (W + gap) + W]


def test_ground_truth_beside_predictions_above_the_threshold(tmp_path):
    make_coco_set(tmp_path)
    out_dir = tmp_path / "vis"
    rc = main(["visualize", "--images", str(tmp_path / "images"), "--gt", str(tmp_path / "gt.json"),
               "--pred", str(tmp_path / "pred.json"), "--out", str(out_dir), "-n", "2",
               "--score-thresh", "0.5"])
    assert rc == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["img_000001.png", "img_000002.png"]
    source = cv2.imread(str(tmp_path / "images" / "img_000001.png"))
    out = cv2.imread(str(out_dir / "img_000001.png"))
    assert out.shape[1] == 2 * W + 4 and out.shape[0] > H
    truth, pred = panel(out, 0), panel(out, 1)
    assert (truth[10:18, 10:18] != source[10:18, 10:18]).any(axis=2).all()  # GT polygon drawn
    assert (pred[12:18, 34:42] != source[12:18, 34:42]).any(axis=2).all()  # 0.9 drawn
    assert (pred[34:40, 8:16] == source[34:40, 8:16]).all()  # 0.2 hidden
    assert (truth[34:40, 8:16] == source[34:40, 8:16]).all()


def test_predictions_alone_find_images_by_the_number_in_their_name(tmp_path):
    make_coco_set(tmp_path)
    rc = main(["visualize", "--images", str(tmp_path / "images"), "--pred",
               str(tmp_path / "pred.json"), "--out", str(tmp_path / "vis"), "--score-thresh", "0"])
    assert rc == 0
    written = sorted((tmp_path / "vis").iterdir())
    assert [p.name for p in written] == [f"img_{k:06d}.png" for k in (1, 2, 3)]
    out = cv2.imread(str(written[2]))
    source = cv2.imread(str(tmp_path / "images" / "img_000003.png"))
    assert out.shape[1] == W
    assert (out[-H:][34:40, 8:16] != source[34:40, 8:16]).any(axis=2).all()  # both drawn now
    assert not list((tmp_path / "vis").glob(".*"))  # no temporary files left behind


def test_user_mistakes_are_one_line_errors_with_exit_2(tmp_path, capsys):
    make_coco_set(tmp_path)
    (tmp_path / "images" / "img_000002.png").unlink()
    rc = main(["visualize", "--images", str(tmp_path / "images"), "--gt",
               str(tmp_path / "gt.json"), "--out", str(tmp_path / "vis")])
    err = capsys.readouterr().err
    assert rc == 2 and "img_000002.png" in err and len(err.strip().splitlines()) == 1
    rc = main(["visualize", "--images", str(tmp_path / "images"), "--out", str(tmp_path / "v")])
    assert rc == 2 and "nothing to draw" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    rc = main(["visualize", "--images", str(tmp_path / "images"), "--gt",
               str(tmp_path / "bad.json"), "--out", str(tmp_path / "v")])
    assert rc == 2 and "bad.json" in capsys.readouterr().err
    (tmp_path / "nokey.json").write_text(json.dumps([{"image_id": 1, "score": 0.5}]))
    rc = main(["visualize", "--images", str(tmp_path / "images"), "--pred",
               str(tmp_path / "nokey.json"), "--out", str(tmp_path / "v")])
    err = capsys.readouterr().err
    assert rc == 2 and "nokey.json: detection 0: no 'category_id'" in err


def make_panoptic_set(root: Path):
    """One image; sky and grass (stuff) and two people (things) in a COCO panoptic PNG."""
    (root / "images").mkdir()
    (root / "pan").mkdir()
    cv2.imwrite(str(root / "images" / "000000000042.jpg"), np.full((H, W, 3), 128, np.uint8))
    ids = np.zeros((H, W), np.int64)
    ids[:24] = 5000
    ids[24:] = 70000
    ids[10:40, 5:20] = 300
    ids[10:40, 30:45] = 301
    ids[:3, :6] = 0  # void
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=2).astype(np.uint8)
    cv2.imwrite(str(root / "pan" / "000000000042.png"), rgb[:, :, ::-1])
    data = {"images": [{"id": 42, "file_name": "000000000042.jpg", "height": H, "width": W}],
            "annotations": [{"image_id": 42, "file_name": "000000000042.png", "segments_info": [
                {"id": 5000, "category_id": 10, "iscrowd": 0},
                {"id": 70000, "category_id": 11, "iscrowd": 0},
                {"id": 300, "category_id": 1, "iscrowd": 0},
                {"id": 301, "category_id": 1, "iscrowd": 0}]}],
            "categories": [{"id": 1, "name": "person", "isthing": 1},
                           {"id": 10, "name": "sky", "isthing": 0},
                           {"id": 11, "name": "grass", "isthing": 0}]}
    (root / "pan.json").write_text(json.dumps(data))
    return ids


def test_panoptic_ground_truth_and_prediction_folders(tmp_path):
    ids = make_panoptic_set(tmp_path)
    rc = main(["visualize", "--images", str(tmp_path / "images"), "--out", str(tmp_path / "vis"),
               "--panoptic-gt-json", str(tmp_path / "pan.json"),
               "--panoptic-pred-json", str(tmp_path / "pan.json"), "--alpha", "1"])
    assert rc == 0
    out = cv2.imread(str(tmp_path / "vis" / "000000000042_panoptic.png"))
    assert out.shape[1] == 2 * W + 4
    left, right = panel(out, 0), panel(out, 1)
    sky, grass, p1, p2 = (tuple(left[y, x]) for y, x in ((3, 55), (45, 55), (30, 12), (30, 37)))
    assert len({sky, grass, p1, p2}) == 4  # stuff classes and two shades of person
    assert (left[ids == 0] == 128).all()  # void untouched
    assert tuple(right[3, 55]) == sky  # the same colours on both sides


def test_tools_script_runs_the_cli(tmp_path):
    make_panoptic_set(tmp_path)
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "visualize.py"), "--images",
                           str(tmp_path / "images"), "--out", str(tmp_path / "vis"),
                           "--panoptic-gt-json", str(tmp_path / "pan.json"),
                           "--panoptic-gt-dir", str(tmp_path / "pan")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "vis" / "000000000042_panoptic.png").exists()
