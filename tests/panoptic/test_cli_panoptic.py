"""`d2seg panoptic combine` against panopticapi's combine script; `d2seg panoptic pq` output."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from d2seg.cli.main import main
from d2seg.io.panoptic_png import read_panoptic_png

mask_util = pytest.importorskip("pycocotools.mask")
combine_script = pytest.importorskip("panopticapi.combine_semantic_and_instance_predictions")

CATEGORIES = [{"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
              {"id": 2, "name": "car", "isthing": 1, "color": [0, 0, 142]},
              {"id": 30, "name": "sky", "isthing": 0, "color": [70, 130, 180]},
              {"id": 31, "name": "road", "isthing": 0, "color": [128, 64, 128]}]


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _make_inputs(tmp_path, n_images=3):
    g = np.random.default_rng(7)
    images, results, sem_results = [], [], []
    (tmp_path / "sem").mkdir()
    for i in range(n_images):
        h, w = 40, 56
        images.append({"id": i + 1, "file_name": f"frame_{i}.jpg", "height": h, "width": w})
        sem = g.choice([0, 1, 2, 30, 31, 255], size=(h // 8, w // 8))
        sem = np.kron(sem, np.ones((8, 8), np.int64)).astype(np.uint8)
        Image.fromarray(sem).save(tmp_path / "sem" / f"frame_{i}.png")
        for label in (1, 2, 30, 31):  # panopticapi takes the semantic map as RLE per category
            if (sem == label).any():
                sem_results.append({"image_id": i + 1, "category_id": label,
                                    "segmentation": _rle(sem == label)})
        scores = g.permutation(np.linspace(0.1, 0.99, 8))  # distinct: same order in both tools
        for k in range(8):
            mask = np.zeros((h, w), bool)
            y0, x0 = g.integers(0, h - 5), g.integers(0, w - 5)
            mask[y0:y0 + g.integers(4, 25), x0:x0 + g.integers(4, 25)] = True
            results.append({"image_id": i + 1, "category_id": int(g.choice([1, 2])),
                            "score": float(scores[k]), "segmentation": _rle(mask)})
    dataset = {"images": images, "annotations": [], "categories": CATEGORIES}
    for name, data in (("dataset.json", dataset), ("instances.json", results),
                       ("sem.json", sem_results), ("categories.json", CATEGORIES)):
        (tmp_path / name).write_text(json.dumps(data))
    return images


def _same_partition(a, a_cat, b, b_cat):
    """Same segments (pixel sets) with the same categories, whatever the ids."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    assert len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]
    for x, y in pairs.T:
        assert (x == 0) == (y == 0)
        if x:
            assert a_cat[x] == b_cat[y]


def test_combine_matches_panopticapi_combine_script(tmp_path):
    images = _make_inputs(tmp_path)
    out = tmp_path / "out"
    code = main(["panoptic", "combine", "--instances", str(tmp_path / "instances.json"),
                 "--semantic", str(tmp_path / "sem"), "--dataset", str(tmp_path / "dataset.json"),
                 "--out", str(out), "--stuff-area", "64", "--score-threshold", "0.3",
                 "--overlap-threshold", "0.4", "--quiet"])
    assert code == 0
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    with contextlib.redirect_stdout(io.StringIO()):
        combine_script.combine_predictions(
            str(tmp_path / "sem.json"), str(tmp_path / "instances.json"),
            str(tmp_path / "dataset.json"), str(tmp_path / "categories.json"), str(ref_dir),
            str(tmp_path / "ref.json"), 0.3, 0.4, 64)
    ours = json.loads((out / "panoptic.json").read_text())
    ref = json.loads((tmp_path / "ref.json").read_text())
    for image, a_ann, b_ann in zip(images, ours["annotations"], ref["annotations"]):
        assert a_ann["image_id"] == b_ann["image_id"] == image["id"]
        a = read_panoptic_png(out / "panoptic" / a_ann["file_name"])
        b = read_panoptic_png(ref_dir / b_ann["file_name"])
        _same_partition(a, {s["id"]: s["category_id"] for s in a_ann["segments_info"]},
                        b, {s["id"]: s["category_id"] for s in b_ann["segments_info"]})


def test_pq_command_prints_and_writes_the_reference_numbers(tmp_path, panoptic_helpers, capsys):
    h = panoptic_helpers
    images, categories = h.synthetic_panoptic(4, n_images=3)
    gt_json, gt_dir = h.write_dataset(tmp_path, "gt", images, categories)
    pred_json, pred_dir = h.write_dataset(tmp_path, "pred", h.perturb(images, categories, 1),
                                          categories)
    code = main(["panoptic", "pq", "--gt-json", str(gt_json), "--gt-dir", str(gt_dir),
                 "--pred-json", str(pred_json), "--pred-dir", str(pred_dir),
                 "--out", str(tmp_path / "report"), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    ref = h.reference_pq(gt_json, gt_dir, pred_json, pred_dir)
    assert f"{100 * ref['All']['pq']:.1f}" in printed.splitlines()[2]
    written = json.loads((tmp_path / "report" / "pq.json").read_text())
    assert written["All"] == ref["All"] and written["Things"] == ref["Things"]
    assert {int(k): v for k, v in written["per_class"].items()} == ref["per_class"]
    assert f"{100 * ref['Stuff']['pq']:.2f}" in (tmp_path / "report" / "pq.md").read_text()


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    code = main(["panoptic", "pq", "--gt-json", str(tmp_path / "nope.json"), "--gt-dir",
                 str(tmp_path), "--pred-json", str(tmp_path / "nope.json"), "--pred-dir",
                 str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nope.json" in err
    _make_inputs(tmp_path)
    (tmp_path / "sem" / "frame_1.png").unlink()
    code = main(["panoptic", "combine", "--instances", str(tmp_path / "instances.json"),
                 "--semantic", str(tmp_path / "sem"), "--dataset", str(tmp_path / "dataset.json"),
                 "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "no semantic prediction for image 2" in err


def test_npy_scores_give_the_same_result_as_png_labels(tmp_path):
    """Semantic scores (C, H, W) over the dataset's categories are read through their argmax."""
    images = _make_inputs(tmp_path)
    npy_dir = tmp_path / "npy"
    npy_dir.mkdir()
    ids = np.array([c["id"] for c in CATEGORIES])
    g = np.random.default_rng(0)
    for image in images:
        stem = image["file_name"][:-4]
        labels = np.array(Image.open(tmp_path / "sem" / f"{stem}.png")).astype(np.int64)
        scores = g.random((len(CATEGORIES),) + labels.shape) * 0.5
        for k, cat in enumerate(ids):
            scores[k][labels == cat] += 1.0
        np.save(npy_dir / f"{stem}.npy", scores)
        # pixels labelled VOID (0/255) become the best-scoring category: mirror that in the PNG
        best = ids[scores.argmax(0)].astype(np.uint8)
        Image.fromarray(best).save(tmp_path / "sem" / f"{stem}.png")
    args = ["--instances", str(tmp_path / "instances.json"), "--dataset",
            str(tmp_path / "dataset.json"), "--stuff-area", "64", "--quiet"]
    for semantic, out in ((npy_dir, "a"), (tmp_path / "sem", "b")):
        assert main(["panoptic", "combine", "--semantic", str(semantic),
                     "--out", str(tmp_path / out), *args]) == 0
    a = json.loads((tmp_path / "a" / "panoptic.json").read_text())
    b = json.loads((tmp_path / "b" / "panoptic.json").read_text())
    assert a["annotations"] == b["annotations"]
    for ann in a["annotations"]:
        assert np.array_equal(read_panoptic_png(tmp_path / "a" / "panoptic" / ann["file_name"]),
                              read_panoptic_png(tmp_path / "b" / "panoptic" / ann["file_name"]))
