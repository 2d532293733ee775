"""Benchmark (issue #13): what a COCO-size manifest costs d2seg's commands.

Generates, seeded, a synthetic COCO-size instances JSON (118,000 images, 883,000 polygon
annotations, ~300 MB; no pixels: every image entry points at hard links of one 640x480 JPEG so
that ``data check --no-decode`` reads real headers) and a manifest for it, then measures, each
command in a fresh process (wall time; peak RSS from GNU time):

1. ``d2seg data list`` without the manifest vs with it (cold: categories not cached yet; warm);
2. loading the 118k-image split into detectron2 dicts: d2seg's loader (catalog, with its
   checks) vs detectron2's ``load_coco_json``, same run, same file;
3. ``d2seg data check --no-decode`` and ``d2seg data stats`` on the JSON.

    OMP_NUM_THREADS=1 python bench/bench_registration.py [--work DIR] [--repeat 3] [--skip-tools]

Ratios are what to compare across machines (the machine is shared: absolute times vary).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_IMAGES, N_ANNOTATIONS, N_POINTS, N_CATEGORIES = 118_000, 883_000, 13, 80
W, H = 640, 480


def generate(folder: Path, seed: int = 0) -> Path:
    """The JSON (written once per folder and seed), the image links and the manifest."""
    import numpy as np

    json_file = folder / "instances.json"
    stamp = folder / f".complete-{seed}"
    if stamp.is_file():
        return json_file
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images_dir = folder / "images"
    if images_dir.exists():
        shutil.rmtree(images_dir)
    images_dir.mkdir()
    from PIL import Image

    one = folder / "one.jpg"
    Image.new("RGB", (W, H), (90, 120, 150)).save(one, quality=60)
    image_ids = np.arange(1, N_IMAGES + 1)
    per_image = rng.multinomial(N_ANNOTATIONS - N_IMAGES // 100, np.ones(N_IMAGES) / N_IMAGES)
    owners = np.repeat(image_ids, per_image)
    owners = np.concatenate([owners, rng.integers(1, N_IMAGES + 1, N_ANNOTATIONS - len(owners))])
    owners.sort()
    cx = rng.uniform(40, W - 40, N_ANNOTATIONS)
    cy = rng.uniform(40, H - 40, N_ANNOTATIONS)
    radius = rng.uniform(4, 38, (N_ANNOTATIONS, 1)) * rng.uniform(0.7, 1.0, (N_ANNOTATIONS, N_POINTS))
    angle = np.sort(rng.uniform(0, 2 * np.pi, (N_ANNOTATIONS, N_POINTS)), axis=1)
    xs = np.round(cx[:, None] + radius * np.cos(angle), 2)
    ys = np.round(cy[:, None] + radius * np.sin(angle), 2)
    poly = np.empty((N_ANNOTATIONS, 2 * N_POINTS))
    poly[:, 0::2], poly[:, 1::2] = xs, ys
    x0, y0 = xs.min(1), ys.min(1)
    bw, bh = xs.max(1) - x0, ys.max(1) - y0
    cats = rng.integers(1, N_CATEGORIES + 1, N_ANNOTATIONS)
    fmt = "[" + ",".join(["%.2f"] * (2 * N_POINTS)) + "]"
    tmp = json_file.with_suffix(".tmp")
    with open(tmp, "w", buffering=1 << 22) as f:
        f.write('{"info": {"description": "synthetic COCO-size benchmark (bench_registration.py)"},'
                ' "images": [')
        for i in image_ids.tolist():
            name = f"{i:012d}.jpg"
            source = folder / f"one_{i // 60000}.jpg"  # (a file takes at most 65,000 links)
            if not source.exists():
                shutil.copy(one, source)
            os.link(source, images_dir / name)
            f.write(("," if i > 1 else "") + json.dumps(
                {"id": i, "file_name": name, "width": W, "height": H}))
        f.write('], "annotations": [')
        for k in range(N_ANNOTATIONS):
            f.write(("," if k else "") + '{"id": %d, "image_id": %d, "category_id": %d, '
                    '"iscrowd": 0, "area": %.1f, "bbox": [%.2f, %.2f, %.2f, %.2f], '
                    '"segmentation": [%s]}' % (k + 1, owners[k], cats[k], bw[k] * bh[k] * 0.7,
                                               x0[k], y0[k], bw[k], bh[k],
                                               fmt % tuple(poly[k].tolist())))
        f.write('], "categories": ' + json.dumps(
            [{"id": c, "name": f"class_{c:02d}", "supercategory": "thing"}
             for c in range(1, N_CATEGORIES + 1)]) + "}")
    os.replace(tmp, json_file)
    manifests = folder / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / "cocosize.yaml").write_text(
        f"name: cocosize\nkind: coco_instances\nroot: {folder}\nsplits:\n  train:\n"
        f"    images: images\n    annotations: instances.json\n")
    stamp.write_text("ok")
    return json_file


def run_measured(argv, env) -> tuple[float, float, str, int]:
    """(wall s, peak RSS MB, output, exit code) of one fresh process. The peak comes from GNU
    time's %M: wait4 on a child of this (large) process would count the pages the fork copied."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-q", "-f", "%M", "-o", rss_file.name, *argv],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - start
        text = rss_file.read().strip().splitlines()
    rss = int(text[-1]) / 1024 if text and text[-1].isdigit() else float("nan")
    return wall, rss, proc.stdout.decode(errors="replace"), proc.returncode


LOADERS = {
    "d2seg (catalog loader, with checks)": """
from d2seg.data import catalog
from d2seg.data.manifest import load_manifest
info = catalog.infos_for(load_manifest(MANIFEST))[0]
dicts = info.load()
""",
    "detectron2 load_coco_json": """
from detectron2.data.datasets import load_coco_json
dicts = load_coco_json(JSON, IMAGES, dataset_name=None)
""",
}

LOAD_WRAPPER = """
import json, resource, sys, time
import torch, detectron2.data  # the same imports in every variant: measured apart
MANIFEST, JSON, IMAGES = sys.argv[1:4]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
{body}
seconds = time.perf_counter() - start
print("RESULT " + json.dumps({{"seconds": seconds, "records": len(dicts),
      "annotations": sum(len(d["annotations"]) for d in dicts), "rss_before_mb": before}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "d2seg-bench-registration"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-tools", action="store_true", help="no data check/stats")
    parser.add_argument("--skip-load", action="store_true")
    args = parser.parse_args()
    work = Path(args.work)
    t0 = time.perf_counter()
    json_file = generate(work)
    print(f"dataset: {json_file} ({json_file.stat().st_size / 1e6:.0f} MB; generated/reused in "
          f"{time.perf_counter() - t0:.0f} s)")
    empty = work / "no_manifests"
    empty.mkdir(exist_ok=True)
    cache = work / "cache"
    base_env = dict(os.environ, OMP_NUM_THREADS="1", D2SEG_CACHE=str(cache))
    without = dict(base_env, D2SEG_DATASETS=str(empty))
    with_m = dict(base_env, D2SEG_DATASETS=str(work / "manifests"))
    d2seg = [sys.executable, "-m", "d2seg.cli.main"]

    # 1. data list
    shutil.rmtree(cache / "catalog", ignore_errors=True)
    run_measured(d2seg + ["data", "list"], without)  # the demo's categories cached too
    wall, rss, out, code = run_measured(d2seg + ["data", "list"], with_m)
    assert code == 0 and "cocosize_train" in out, out
    cold = (wall, rss)
    samples = {"without": [], "with": []}
    for _ in range(args.repeat):
        for key, env in (("without", without), ("with", with_m)):
            wall, rss, out, code = run_measured(d2seg + ["data", "list"], env)
            assert code == 0, out
            samples[key].append((wall, rss))
    med = {k: (statistics.median(w for w, _ in v), max(r for _, r in v)) for k, v in samples.items()}
    print("\n| d2seg data list | wall s (median) | peak RSS MB |\n|---|---|---|")
    print(f"| without the COCO-size manifest | {med['without'][0]:.2f} | {med['without'][1]:.0f} |")
    print(f"| with it (categories cached) | {med['with'][0]:.2f} | {med['with'][1]:.0f} |")
    print(f"| with it, first run (categories scanned) | {cold[0]:.2f} | {cold[1]:.0f} |")
    print(f"| ratio with/without (cached) | {med['with'][0] / med['without'][0]:.2f}x | "
          f"{med['with'][1] / med['without'][1]:.2f}x |")
    print(f"| ratio with/without (first run) | {cold[0] / med['without'][0]:.2f}x | "
          f"{cold[1] / med['without'][1]:.2f}x |")

    # 2. loading the split
    if not args.skip_load:
        print("\n| loading the 118k-image split | load s | process peak RSS MB | RSS after imports MB "
              "| records / annotations |\n|---|---|---|---|---|")
        results = {}
        for name, body in LOADERS.items():
            script = LOAD_WRAPPER.format(body=body)
            wall, rss, out, code = run_measured(
                [sys.executable, "-c", script, str(work / "manifests" / "cocosize.yaml"),
                 str(json_file), str(work / "images")], with_m)
            line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
            assert code == 0 and line, out[-3000:]
            r = json.loads(line[-1][7:])
            results[name] = (r["seconds"], rss, r["rss_before_mb"])
            print(f"| {name} | {r['seconds']:.1f} | {rss:.0f} | {r['rss_before_mb']:.0f} | "
                  f"{r['records']} / {r['annotations']} |")
        ours = results["d2seg (catalog loader, with checks)"]
        d2 = results["detectron2 load_coco_json"]
        print(f"| ratio detectron2 / d2seg | {d2[0] / ours[0]:.2f}x | {d2[1] / ours[1]:.2f}x | | |")
        print(f"| ratio detectron2 / d2seg, RSS above imports | | "
              f"{(d2[1] - d2[2]) / (ours[1] - ours[2]):.2f}x | | |")

    # 3. data tools
    if not args.skip_tools:
        print("\n| data tool on the 118k-image JSON | wall s | peak RSS MB |\n|---|---|---|")
        for label, argv in (
                ("d2seg data check --no-decode", ["data", "check", str(json_file), "--images",
                                                  str(work / "images"), "--no-decode", "--max-lines", "3"]),
                ("d2seg data stats", ["data", "stats", str(json_file)])):
            wall, rss, out, code = run_measured(d2seg + argv, with_m)
            assert code in (0, 1), out[-3000:]
            print(f"| {label} | {wall:.1f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
