"""The GPU paths in one prepared run: AMP training, NCCL, evaluation, prediction, export.

No GPU has been lent to this project yet, so none of d2seg's CUDA paths has run. When a session
is lent one (the ``device`` tool: one call, a few minutes), this script checks them in one go and
leaves a summary a person can read:

1. the demo (``d2seg demo``: MODEL.DEVICE auto, so CUDA, and D2SEG.AMP auto, so mixed
   precision), its COCO AP and PQ beside the README's CPU figures;
2. the demo's Mask R-CNN evaluated on the GPU and on the CPU (the same weights and images: the
   AP may differ by kernels' rounding only);
3. ``torchrun`` training on the GPU, so through NCCL (one process per GPU the machine has);
4. ``d2seg predict`` on the GPU and on the CPU, images/s each (same model, same images);
5. ``d2seg export`` (ONNX) of the GPU-trained weights, served by ``predict --model``, scored
   by pycocotools beside the checkpoint's own predictions.

Every step runs the CLI a user runs, in its own process, and records its exit status, time and
numbers in ``OUT/device_check.json`` (and the logs in ``OUT/logs.txt``). It goes on after a
failed step, so one run shows everything. On a machine without CUDA it runs the same steps on
the CPU (gloo instead of NCCL), which is how the script itself is tested here.

On the device machine (Python 3.12, its own torch; nothing can be downloaded there), first make
the wheels here with ``bash bench/device_kit.sh``, then run, carrying ``.whl``::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \\
      && PYTHONPATH=/tmp/site:. python3 bench/device_check.py --out $OUT

``--quick`` shortens every training (for the CPU run of the script).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
INSTANCE_CONFIG = REPO / "configs" / "instance" / "mask_rcnn_MNV2_FPN_cpu_quick.yaml"
VAL = "demo_instances_val"
# README's seed-42 CPU demo figures (make demo): the GPU run should land near them
README_CPU = {"segm_AP": 58.9, "bbox_AP": 67.2, "PQ": 82.4}


class Steps:
    """Runs the CLI steps, one process each, and keeps what each one did."""

    def __init__(self, out: Path):
        self.out = out
        self.summary: dict = {"steps": {}}
        self.log = open(out / "logs.txt", "a", encoding="utf-8")

    def run(self, name: str, argv: list[str], env=None, timeout: int = 900) -> bool:
        start = time.perf_counter()
        print(f"[{name}] {' '.join(argv)}", flush=True)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, **(env or {})}, cwd=REPO)
            code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as e:
            code, stdout, stderr = "timeout", str(e.stdout or ""), str(e.stderr or "")
        seconds = round(time.perf_counter() - start, 1)
        self.summary["steps"][name] = {"exit": code, "seconds": seconds}
        self.log.write(f"\n===== {name} (exit {code}, {seconds} s)\n$ {' '.join(argv)}\n"
                       f"{stdout[-20000:]}\n--- stderr\n{stderr[-20000:]}\n")
        self.log.flush()
        print(f"[{name}] exit {code} in {seconds} s", flush=True)
        if code != 0:
            print(stderr[-3000:], flush=True)
        return code == 0

    def note(self, name: str, **values) -> None:
        self.summary["steps"].setdefault(name, {}).update(values)
        print(f"[{name}] {values}", flush=True)

    def save(self) -> Path:
        path = self.out / "device_check.json"
        path.write_text(json.dumps(self.summary, indent=1, default=str))
        return path


def d2seg(*args) -> list[str]:
    return [sys.executable, "-m", "d2seg.cli.main", *args]


def environment() -> dict:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "cuda_version": torch.version.cuda}
    if info["cuda"]:
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    return info


def coco_numbers(results: Path) -> dict:
    """bbox/segm AP (percent) of ``d2seg predict``'s results.json against the demo val ground
    truth (pycocotools' numbers, through d2seg's evaluate_coco). predict numbers the images it
    reads itself (images.json beside results.json): its ids are mapped to the ground truth's by
    file name."""
    from detectron2.data import MetadataCatalog

    from d2seg.data.register import register_datasets
    from d2seg.evaluation.coco import evaluate_coco

    register_datasets()
    gt_json = MetadataCatalog.get(VAL).json_file
    gt_ids = {im["file_name"]: im["id"] for im in json.loads(Path(gt_json).read_text())["images"]}
    listing = json.loads((results.parent / "images.json").read_text())
    ours = {im["id"]: gt_ids[im["file_name"]] for im in listing}
    detections = [{**d, "image_id": ours[d["image_id"]]} for d in json.loads(results.read_text())]
    return ap_percent(evaluate_coco(gt_json, detections))


def ap_percent(report: dict) -> dict:
    """bbox/segm AP in percent of a COCO report (evaluate_coco's, d2seg eval's metrics.json)."""
    return {f"{t}_AP": round(100 * r["stats"]["AP"], 3) for t, r in report.items()}


def count_images(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/device_check", help="summary and logs go here")
    parser.add_argument("--work", default=None, help="training folders (default OUT/work)")
    parser.add_argument("--quick", action="store_true", help="short trainings (CPU test run)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    steps = Steps(out)
    env = environment()
    steps.summary["environment"] = env
    device = "cuda" if env["cuda"] else "cpu"
    steps.summary["device"] = device
    iters = ["--max-iter", "30"] if args.quick else []

    steps.run("doctor", d2seg("doctor", "--no-self-check"))

    # 1. the demo, on the GPU with AMP when there is one (both resolved by the config's "auto")
    demo = work / "demo"
    if steps.run("demo", d2seg("demo", "--out", str(demo), *iters), timeout=1800):
        inst = json.loads((demo / "instance" / "summary.json").read_text())
        pan = json.loads((demo / "panoptic" / "summary.json").read_text())
        config = yaml.safe_load((demo / "instance" / "config.yaml").read_text())
        steps.note("demo", **{f"{t}_AP": round(100 * v["AP"], 2) for t, v in inst.items()},
                   PQ=round(100 * pan["All"]["pq"], 2),
                   amp_enabled=config["SOLVER"]["AMP"]["ENABLED"],
                   device=config["MODEL"]["DEVICE"], readme_cpu=README_CPU)
    weights = demo / "instance" / "model_final.pth"

    # 2. the same weights evaluated on the GPU and on the CPU
    numbers = {}
    for where in dict.fromkeys([device, "cpu"]):
        folder = work / f"eval_{where}"
        if weights.is_file() and steps.run(f"eval_{where}", d2seg(
                "eval", "--config-file", str(INSTANCE_CONFIG), "--weights", str(weights),
                "--dataset", VAL, "--out", str(folder), "--no-plots", "MODEL.DEVICE", where)):
            numbers[where] = ap_percent(json.loads((folder / "metrics.json").read_text()))
    if numbers:
        steps.note("eval", **numbers)

    # 3. torchrun: NCCL on the GPU (one process per GPU), gloo on the CPU (2 processes)
    nproc = str(max(1, len(env.get("gpus", []))) if env["cuda"] else 2)
    folder = work / "torchrun"
    if steps.run("torchrun_train", [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", nproc,
            str(REPO / "tools" / "train.py"), "--config-file", str(INSTANCE_CONFIG), "--output",
            str(folder), "MODEL.DEVICE", device, "SOLVER.MAX_ITER", "20",
            "SOLVER.IMS_PER_BATCH", str(2 * int(nproc)), "TEST.EVAL_PERIOD", "0"]):
        log = (folder / "log.txt").read_text()
        backend = "nccl" if "nccl backend" in log else "gloo" if "gloo backend" in log else "none"
        steps.note("torchrun_train", processes=int(nproc), backend_in_log=backend)

    # 4. prediction speed on the GPU and on the CPU, same model and images
    from d2seg.data.demo import ensure_demo

    images = ensure_demo() / "val" / "images"
    for where in dict.fromkeys([device, "cpu"]):
        folder = work / f"predict_{where}"
        name = f"predict_{where}"
        if weights.is_file() and steps.run(name, d2seg(
                "predict", str(images), "--config-file", str(INSTANCE_CONFIG), "--weights",
                str(weights), "--dataset", VAL, "--out", str(folder), "--no-render",
                "--batch-size", "4", "--opts", "MODEL.DEVICE", where)):
            seconds = steps.summary["steps"][name]["seconds"]
            steps.note(name, images_per_s_with_start_up=round(count_images(images) / seconds, 2),
                       **coco_numbers(folder / "results.json"))

    # 5. ONNX export of the GPU-trained weights, served by predict --model (onnxruntime, CPU)
    export = work / "export"
    if weights.is_file() and steps.run("export", d2seg(
            "export", "--config-file", str(INSTANCE_CONFIG), "--weights", str(weights),
            "--dataset", VAL, "--format", "onnx", "--out", str(export))):
        folder = work / "predict_onnx"
        if steps.run("predict_onnx", d2seg("predict", str(images), "--model", str(export),
                                           "--out", str(folder), "--no-render")):
            steps.note("predict_onnx", **coco_numbers(folder / "results.json"))

    failed = [n for n, s in steps.summary["steps"].items() if s.get("exit", 0) != 0]
    steps.summary["failed_steps"] = failed
    print(f"summary: {steps.save()}; failed steps: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
