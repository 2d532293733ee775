"""Peak memory of ``d2seg eval`` on a small and a 10x larger generated COCO dataset.

Goal (issue 5): evaluation streams, so the peak resident memory of ``d2seg eval`` on 5,000
images stays within 2x of that on 500. Each run is its own subprocess, which reports two figures
from /proc/self/status: its peak RSS over the whole run (imports included), and the work's growth:
its peak after the heavy imports (high-water mark reset through /proc/self/clear_refs) minus the
resident size right after them. Side by side, the reference: plain pycocotools ``COCOeval`` (bbox
+ segm, evaluate/accumulate/summarize) on the same files, also in its own subprocess, so both
ratios are printed. Linux only.

Cases:

* ``results``: ``d2seg eval --results R.json --gt GT.json`` (bbox + segm, with the PR-curve and
  confusion-matrix plots) on generated data: 320x240 images, 3-11 instances each with RLE
  masks, 0-2 jittered detections per instance (the data of ``bench_coco_eval.py``). No pixels
  are needed: only the JSON files are written.
* ``checkpoint`` (``--checkpoint``): ``d2seg eval --config-file --weights --dataset``: a tiny
  random-init Mask R-CNN (``d2seg.runners.diagnostics.tiny_mask_rcnn_cfg``) runs over generated PNGs
  (small, written to a temporary folder) registered through a dataset manifest, then scores
  its detections. Slow on a CPU (about 0.1 s an image): use ``--sizes 100 1000`` to keep it short.
  The reference is pycocotools on the ground truth and the detections that run wrote.

    python bench/bench_eval_memory.py                       # results JSON, 500 vs 5000
    python bench/bench_eval_memory.py --checkpoint --sizes 100 1000 --cases checkpoint
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

REFERENCE = r"""
import contextlib, copy, io, json, sys
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
gt_path, res_path = sys.argv[1:3]
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(gt_path)
with open(res_path) as f:
    dets = json.load(f)
for iou_type in ("bbox", "segm"):
    d = copy.deepcopy(dets)
    if iou_type == "segm":
        d = [x for x in d if "segmentation" in x]
        for x in d:
            x.pop("bbox", None)
    if not d:
        continue
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(d), iou_type)
        ev.evaluate(); ev.accumulate(); ev.summarize()
    print(iou_type, round(float(ev.stats[0]), 4))
"""

# Runs in the measured child: import the heavy modules, note the resident size, reset the
# kernel's high-water mark (/proc/self/clear_refs "5") and run the work, so the growth the work
# itself causes is measured apart from the import-time peak (torch alone is ~650 MB here).
MEASURE = r"""
import sys
def _status():
    with open("/proc/self/status") as f:
        return {l.split(":")[0]: int(l.split()[1]) for l in f if l.startswith(("VmRSS", "VmHWM"))}
for _m in sys.argv[1].split(","):
    __import__(_m)
_import = _status()
with open("/proc/self/clear_refs", "w") as _f:
    _f.write("5")
_mode, sys.argv = sys.argv[2], sys.argv[2:]
if _mode == "d2seg":
    from d2seg.cli.main import main
    _rc = main(sys.argv[1:])
else:
    exec(compile(REFERENCE, "reference", "exec"))
    _rc = 0
_work = _status()
print(f"@@MEM {_import['VmRSS']} {_import['VmHWM']} {_work['VmHWM']}")
sys.exit(_rc)
""".replace("REFERENCE", repr(REFERENCE))

D2SEG_IMPORTS = "d2seg.cli.main,detectron2.evaluation.fast_eval_api,d2seg.evaluation.coco,d2seg.evaluation.plots"
CKPT_IMPORTS = D2SEG_IMPORTS + ",d2seg.engine.run"
REF_IMPORTS = "pycocotools.coco,pycocotools.cocoeval"


def measure(imports: str, mode: str, args: list[str], env=None) -> dict:
    """Run one child; its peak RSS (MB) over the whole run, and the work's growth over imports."""
    cmd = [sys.executable, "-c", MEASURE, imports, mode, *map(str, args)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    wall = time.perf_counter() - t
    line = [x for x in proc.stdout.splitlines() if x.startswith("@@MEM ")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"{mode} {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    after_import, import_peak, work_peak = (int(v) / 1024 for v in line[0].split()[1:])
    return {"peak": max(import_peak, work_peak), "growth": work_peak - after_import, "s": wall}


def write_results_case(folder: Path, n: int) -> tuple[Path, Path, str]:
    from bench_coco_eval import make_data

    gt, dets = make_data(n, seed=0)
    gt_path, res_path = folder / f"gt_{n}.json", folder / f"results_{n}.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(dets))
    mb = (gt_path.stat().st_size + res_path.stat().st_size) / 2**20
    return gt_path, res_path, f"{len(gt['annotations'])} gt, {len(dets)} dets, {mb:.0f} MB JSON"


def run_results_case(folder: Path, n: int) -> dict:
    gt_path, res_path, what = write_results_case(folder, n)
    ours = measure(D2SEG_IMPORTS, "d2seg", ["eval", "--results", res_path, "--gt", gt_path,
                                            "--out", folder / f"eval_{n}"])
    ref = measure(REF_IMPORTS, "reference", [gt_path, res_path])
    return {"n": n, "what": what, "d2seg": ours, "ref": ref}


# ---------------------------------------------------------------------------------------------
# checkpoint case


def write_checkpoint(folder: Path) -> tuple[Path, Path]:
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from d2seg.runners.diagnostics import tiny_mask_rcnn_cfg

    torch.manual_seed(0)
    cfg = tiny_mask_rcnn_cfg("cpu", 96)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # untrained: keep its low-score output
    cfg.TEST.DETECTIONS_PER_IMAGE = 20
    cfg.DATALOADER.NUM_WORKERS = 0
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(folder)).save("model")
    yaml_path = folder / "config.yaml"
    yaml_path.write_text(cfg.dump())
    return yaml_path, folder / "model.pth"


def write_image_dataset(root: Path, name: str, n: int, seed: int = 0) -> Path:
    """n generated 128x96 PNGs with 1-3 rectangles (2 classes) as COCO instances, plus a manifest."""
    import cv2
    import numpy as np
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(seed)
    images_dir = root / name / "images"
    images_dir.mkdir(parents=True)
    h, w = 96, 128
    images, anns = [], []
    for i in range(1, n + 1):
        img = np.full((h, w, 3), 40, np.uint8)
        for _ in range(rng.integers(1, 4)):
            x, y = (int(v) for v in rng.integers(0, 90, 2))
            bw, bh = (int(v) for v in rng.integers(12, 36, 2))
            bw, bh = min(bw, w - x), min(bh, h - y)
            cat = int(rng.integers(1, 3))
            cv2.rectangle(img, (x, y), (x + bw - 1, y + bh - 1), (0, 200, 0) if cat == 1 else (0, 0, 200), -1)
            m = np.zeros((h, w), np.uint8)
            m[y:y + bh, x:x + bw] = 1
            rle = mask_util.encode(np.asfortranarray(m))
            rle["counts"] = rle["counts"].decode()
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": [x, y, bw, bh],
                         "area": float(bw * bh), "iscrowd": 0, "segmentation": rle})
        cv2.imwrite(str(images_dir / f"{i:05d}.png"), img)
        images.append({"id": i, "width": w, "height": h, "file_name": f"{i:05d}.png"})
    cats = [{"id": 1, "name": "green"}, {"id": 2, "name": "red"}]
    ann_path = root / name / "instances.json"
    ann_path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    (root / f"{name}.yaml").write_text(
        f"name: {name}\nkind: coco_instances\nsplits:\n"
        f"  val: {{images: {name}/images, annotations: {name}/instances.json}}\n")
    return ann_path


def run_checkpoint_case(folder: Path, n: int, yaml_path: Path, weights: Path) -> dict:
    name = f"memb{n}"
    manifests = folder / "manifests"
    manifests.mkdir(exist_ok=True)
    for old in manifests.glob("*.yaml"):  # one dataset at a time: registration reads every manifest
        old.unlink()
    gt_path = write_image_dataset(manifests, name, n)
    env = dict(os.environ, D2SEG_DATASETS=str(manifests), OMP_NUM_THREADS="1")  # shared CPUs: no oversubscription
    out = folder / f"ckpt_eval_{n}"
    ours = measure(CKPT_IMPORTS, "d2seg", ["eval", "--config-file", yaml_path, "--weights", weights,
                                           "--dataset", f"{name}_val", "--out", out,
                                           "DATASETS.TRAIN", f"('{name}_val',)"], env=env)
    res_path = out / "eval" / f"{name}_val" / "coco_instances_results.json"
    dets = len(json.loads(res_path.read_text()))
    ref = measure(REF_IMPORTS, "reference", [gt_path, res_path])
    shutil.rmtree(manifests / name)
    return {"n": n, "what": f"{dets} dets", "d2seg": ours, "ref": ref}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[500, 5000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--cases", nargs="+", default=["results"], choices=["results", "checkpoint"])
    parser.add_argument("--checkpoint", action="store_true", help="also the checkpoint case")
    parser.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it")
    args = parser.parse_args()
    cases = list(dict.fromkeys(args.cases + (["checkpoint"] if args.checkpoint else [])))
    folder = Path(args.keep or tempfile.mkdtemp(prefix="d2seg_evalmem_"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for case in cases:
            if case == "checkpoint":
                yaml_path, weights = write_checkpoint(folder)
                runs = [run_checkpoint_case(folder, n, yaml_path, weights) for n in args.sizes]
            else:
                runs = [run_results_case(folder, n) for n in args.sizes]
            for r in runs:
                o, f = r["d2seg"], r["ref"]
                print(f"  {case} {r['n']}: {r['what']}; d2seg peak {o['peak']:.0f} MB (+{o['growth']:.0f} over "
                      f"imports) in {o['s']:.1f} s; pycocotools peak {f['peak']:.0f} MB (+{f['growth']:.0f}) "
                      f"in {f['s']:.1f} s", flush=True)
            rows.append((case, runs))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    small, large = args.sizes
    print(f"\npeak RSS: the whole process (imports included); growth: the work's peak over the resident "
          f"size after imports.\n\n| case | images | d2seg peak RSS MB | ratio {large}/{small} | d2seg growth MB | "
          f"ratio | pycocotools peak RSS MB | reference ratio | pycocotools growth MB | ratio |\n"
          + "|---|---:" + "|---:" * 8 + "|")
    for case, (a, b) in rows:
        def cells(x, y, key):
            return f"{y[key]:.0f}", f"{y[key] / x[key]:.2f}x"
        o_peak, o_growth = cells(a["d2seg"], b["d2seg"], "peak"), cells(a["d2seg"], b["d2seg"], "growth")
        f_peak, f_growth = cells(a["ref"], b["ref"], "peak"), cells(a["ref"], b["ref"], "growth")
        print(f"| {case} | {a['n']} | {a['d2seg']['peak']:.0f} | | {a['d2seg']['growth']:.0f} | | "
              f"{a['ref']['peak']:.0f} | | {a['ref']['growth']:.0f} | |")
        print(f"| {case} | {b['n']} | {o_peak[0]} | **{o_peak[1]}** | {o_growth[0]} | {o_growth[1]} | "
              f"{f_peak[0]} | {f_peak[1]} | {f_growth[0]} | {f_growth[1]} |")


if __name__ == "__main__":
    main()
