"""Per-image panoptic quality and the worst images by PQ: each image's PQ/SQ/RQ equals
panopticapi's ``pq_compute`` run on a ground truth and prediction holding that image alone;
``d2seg eval`` lists the lowest first, draws them and shows them with a per-class PQ table in
report.html."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from d2seg.cli.main import main
from d2seg.evaluation.panoptic_quality import pq_compute_folders

pytest.importorskip("panopticapi.evaluation")


def _sample(shared_data):
    root = shared_data / "panopticapi_sample" / "sample_data"
    return root / "panoptic_examples.json", root / "panoptic_examples", root / "input_images"


def _one_image(json_path: Path, image_id, out: Path) -> Path:
    """A copy of the COCO panoptic JSON that keeps only ``image_id``."""
    data = json.loads(Path(json_path).read_text())
    data["images"] = [im for im in data["images"] if im["id"] == image_id]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] == image_id]
    out.write_text(json.dumps(data))
    return out


def _reference_all(h, gt_json, gt_dir, pred_json, pred_dir) -> dict:
    """panopticapi's "All" PQ: ``pq_compute`` itself; where it divides by zero (an image with
    no stuff or no thing segment leaves a group empty), the same "All" average from its own
    single-image path (``pq_compute_single_core`` + ``PQStat.pq_average(categories, None)``)."""
    import contextlib
    import io

    from panopticapi.evaluation import pq_compute_single_core

    try:
        return h.reference_pq(gt_json, gt_dir, pred_json, pred_dir)["All"]
    except ZeroDivisionError:
        gt, pred = json.loads(Path(gt_json).read_text()), json.loads(Path(pred_json).read_text())
        categories = {c["id"]: c for c in gt["categories"]}
        with contextlib.redirect_stdout(io.StringIO()):
            stat = pq_compute_single_core(0, list(zip(gt["annotations"], pred["annotations"])),
                                          str(gt_dir), str(pred_dir), categories)
        return stat.pq_average(categories, isthing=None)[0]


def _assert_per_image_equals_reference(h, ours, gt_json, gt_dir, pred_json, pred_dir, tmp):
    assert len(ours["per_image"]) == len(json.loads(Path(gt_json).read_text())["annotations"])
    for row in ours["per_image"]:
        i = row["image_id"]
        ref = _reference_all(h, _one_image(gt_json, i, tmp / f"gt_{i}.json"), gt_dir,
                             _one_image(pred_json, i, tmp / f"pred_{i}.json"), pred_dir)
        assert {k: row[k] for k in ("pq", "sq", "rq", "n")} == ref, i  # exact


@pytest.mark.parametrize("seed", range(3))
def test_sample_per_image_pq_equals_panopticapi_on_that_image(shared_data, panoptic_helpers,
                                                              tmp_path, seed):
    h = panoptic_helpers
    gt_json, gt_dir, _ = _sample(shared_data)
    images, categories = h.load_dataset(gt_json, gt_dir)
    pred_json, pred_dir = h.write_dataset(tmp_path, "pred", h.perturb(images, categories, seed),
                                          categories)
    ours = pq_compute_folders(gt_json, gt_dir, pred_json, pred_dir, workers=1)
    _assert_per_image_equals_reference(h, ours, gt_json, gt_dir, pred_json, pred_dir, tmp_path)


def test_synthetic_per_image_pq_equals_panopticapi_on_that_image(panoptic_helpers, tmp_path):
    h = panoptic_helpers
    images, categories = h.synthetic_panoptic(5, n_images=10)
    gt_json, gt_dir = h.write_dataset(tmp_path, "gt", images, categories)
    pred_json, pred_dir = h.write_dataset(tmp_path, "pred", h.perturb(images, categories, 2),
                                          categories)
    ours = pq_compute_folders(gt_json, gt_dir, pred_json, pred_dir, workers=2)
    assert len({r["pq"] for r in ours["per_image"]}) > 3  # images differ: the check is not trivial
    _assert_per_image_equals_reference(h, ours, gt_json, gt_dir, pred_json, pred_dir, tmp_path)


def test_eval_lists_draws_and_reports_the_worst_images(shared_data, panoptic_helpers, tmp_path):
    h = panoptic_helpers
    gt_json, gt_dir, images_dir = _sample(shared_data)
    images, categories = h.load_dataset(gt_json, gt_dir)
    pred_json, pred_dir = h.write_dataset(tmp_path, "pred", h.perturb(images, categories, 1),
                                          categories)
    out = tmp_path / "o"
    assert main(["eval", "--panoptic-gt-json", str(gt_json), "--panoptic-gt-dir", str(gt_dir),
                 "--panoptic-pred-json", str(pred_json), "--images", str(images_dir),
                 "--out", str(out), "--workers", "1"]) == 0
    pq = json.loads((out / "pq.json").read_text())
    # the lowest per-image PQ first, each the panopticapi value of that image alone
    refs = {}
    for image_id, _, _ in images:
        refs[image_id] = h.reference_pq(_one_image(gt_json, image_id, tmp_path / "g.json"), gt_dir,
                                        _one_image(pred_json, image_id, tmp_path / "p.json"),
                                        pred_dir)["All"]["pq"]
    assert refs[images[0][0]] != refs[images[1][0]]
    worst = pq["worst_images"]
    assert [w["image_id"] for w in worst] == sorted(refs, key=refs.get)
    assert [w["pq"] for w in worst] == sorted(refs.values())
    for w in worst:
        picture = cv2.imread(str(out / w["png"]))
        image = cv2.imread(str(images_dir / json.loads(gt_json.read_text())["images"][
            [im["id"] for im in json.loads(gt_json.read_text())["images"]].index(w["image_id"])][
            "file_name"]))
        assert picture.shape[1] > 2 * image.shape[1] and picture.shape[0] > image.shape[0]
    page = (out / "report.html").read_text()
    assert 'id="per-class-panoptic"' in page and 'id="worst-panoptic"' in page
    assert page.count('alt="000000') == len(worst)  # the drawings, inlined
    # per-class rows: the classes with a segment, with panopticapi's numbers
    ref = h.reference_pq(gt_json, gt_dir, pred_json, pred_dir)
    for cat, r in ref["per_class"].items():
        name = next(c["name"] for c in categories if c["id"] == cat)
        if sum(pq["counts"].get(str(cat), {}).values()):
            assert f"<td>{name}</td>" in page
            assert f'data-value="{100 * r["pq"]}"' in page, name
