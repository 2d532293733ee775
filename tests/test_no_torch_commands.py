"""Commands where no model runs start without torch or detectron2 (issue #13): each runs in a
fresh interpreter, which then reports whether torch/detectron2 were ever imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
from d2seg.cli.main import main
code = main(sys.argv[1:])
print("PROBE " + json.dumps([code, "torch" in sys.modules, "detectron2" in sys.modules]))
"""


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """Three demo images in COCO instances and panoptic form, results and semantic maps."""
    from d2seg.data.demo import ensure_demo

    demo = ensure_demo() / "val"
    root = tmp_path_factory.mktemp("mini")
    (root / "images").mkdir()
    (root / "panoptic").mkdir()
    (root / "semantic").mkdir()
    inst = json.loads((demo / "instances.json").read_text())
    pan = json.loads((demo / "panoptic.json").read_text())
    images = inst["images"][:3]
    keep = {img["id"] for img in images}
    for img in images:
        shutil.copy(demo / "images" / img["file_name"], root / "images" / img["file_name"])
    inst = dict(inst, images=images, annotations=[a for a in inst["annotations"] if a["image_id"] in keep])
    (root / "instances.json").write_text(json.dumps(inst))
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "segmentation": a["segmentation"], "score": 0.9} for a in inst["annotations"]]
    (root / "results.json").write_text(json.dumps(results))
    pan_anns = [a for a in pan["annotations"] if a["image_id"] in keep]
    for a in pan_anns:
        shutil.copy(demo / "panoptic" / a["file_name"], root / "panoptic" / a["file_name"])
        shutil.copy(demo / "semantic" / a["file_name"], root / "semantic" / a["file_name"])
    (root / "panoptic.json").write_text(json.dumps(dict(pan, images=images, annotations=pan_anns)))
    return root


def _demo_val() -> Path:
    from d2seg.data.demo import ensure_demo

    return ensure_demo() / "val"


def _probe(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
    assert lines, (proc.stdout[-2000:], proc.stderr[-2000:])
    return json.loads(lines[-1][len("PROBE "):]), proc


COMMANDS = {
    "data list": lambda m: ["data", "list"],
    "data check": lambda m: ["data", "check", str(m / "instances.json"), "--images", str(m / "images")],
    "data check --no-decode": lambda m: ["data", "check", str(m / "instances.json"), "--images",
                                         str(m / "images"), "--no-decode"],
    "data check (manifest name)": lambda m: ["data", "check", "demo_instances", "--split", "val",
                                             "--no-decode"],
    "data stats": lambda m: ["data", "stats", str(m / "instances.json")],
    "data convert": lambda m: ["data", "convert", "semantic", str(m / "semantic"),
                               str(m / "out" / "converted.json"), "--images", str(m / "images"),
                               "--classes", "a,b,c,d,e,f,g"],
    "data merge": lambda m: ["data", "merge", str(m / "instances.json"), str(m / "instances.json"),
                             "--out", str(m / "out" / "merged.json"), "--prefer", "first"],
    "eval --results --gt": lambda m: ["eval", "--results", str(m / "results.json"), "--gt",
                                      str(m / "instances.json"), "--out", str(m / "out" / "eval"),
                                      "--no-plots"],
    "eval --results --dataset": lambda m: ["eval", "--results", str(m / "results.json"),
                                           "--dataset", "demo_instances_val", "--out",
                                           str(m / "out" / "eval_ds"), "--no-plots"],
    "eval panoptic folders": lambda m: ["eval", "--panoptic-pred-json", str(m / "panoptic.json"),
                                        "--panoptic-pred-dir", str(m / "panoptic"),
                                        "--panoptic-gt-json", str(m / "panoptic.json"),
                                        "--panoptic-gt-dir", str(m / "panoptic"), "--workers", "1",
                                        "--out", str(m / "out" / "pq")],
    "eval semantic label folder": lambda m: [
        "eval", "--sem-seg-pred-dir", str(_demo_val() / "semantic"), "--dataset",
        "demo_semseg_val", "--out", str(m / "out" / "sem")],
    "panoptic pq": lambda m: ["panoptic", "pq", "--gt-json", str(m / "panoptic.json"), "--gt-dir",
                              str(m / "panoptic"), "--pred-json", str(m / "panoptic.json"),
                              "--pred-dir", str(m / "panoptic"), "--workers", "1", "--quiet"],
    "panoptic combine": lambda m: ["panoptic", "combine", "--instances", str(m / "results.json"),
                                   "--semantic", str(m / "semantic"), "--dataset",
                                   str(m / "panoptic.json"), "--out", str(m / "out" / "combined"),
                                   "--quiet"],
    "classical watershed": lambda m: ["classical", "watershed", "--images", str(m / "images"),
                                      "--coco", str(m / "instances.json"),
                                      "--out", str(m / "out" / "ws.json")],
    "classical grabcut": lambda m: ["classical", "grabcut", "--images", str(m / "images"),
                                    "--boxes", str(m / "instances.json"), "--iters", "1",
                                    "--out", str(m / "out" / "gc.json")],
    "classical superpixels": lambda m: ["classical", "superpixels", "--images", str(m / "images"),
                                        "--labels", str(m / "semantic"),
                                        "--out", str(m / "out" / "sp")],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_runs_without_torch(name, mini):
    (code, torch_loaded, d2_loaded), proc = _probe(COMMANDS[name](mini), mini)
    assert code in (0, 1), (proc.stdout[-2000:], proc.stderr[-2000:])  # 1: data check findings
    assert not torch_loaded and not d2_loaded, f"{name} imported torch/detectron2"


def test_metric_only_eval_on_a_dataset_name_needs_no_torch_from_the_catalog():
    """What ``d2seg eval --results ... --dataset NAME`` needs (the ground truth files) comes from
    the torch-free catalog."""
    code = ("import sys; from d2seg.data.catalog import dataset_metadata; "
            "m = dataset_metadata('demo_panoptic_val'); "
            "print(m.get('panoptic_json'), m.get('panoptic_root'), len(m.thing_classes)); "
            "m = dataset_metadata('demo_instances_val'); print(m.json_file); "
            "print('torch' in sys.modules, 'detectron2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    assert out[-1] == "False False"
    assert out[-2].endswith("instances.json") and out[0].split()[-1] == "7"
