"""``d2seg data check`` image pass vs a plain sequential PIL loop, in one run.

The reference is what one would write by hand: for each image, ``Image.open`` + ``load()``
(full decode) and the size. d2seg's ``check_coco`` does the same per image (plus the EXIF
orientation and all annotation checks) on a thread pool. "identical" means both agree with
every size in the JSON and found no unreadable image. Also shows the header-only mode
(``--no-decode``).

    python bench/bench_data_check.py [--copies 10] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from PIL import Image

from d2seg.data.check import check_coco

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CASES = {
    "fruits_nuts (800x600 jpg)": ("fruits_nuts/data/trainval.json", "fruits_nuts/data/images"),
    "tiny_coco16 (640x480 jpg)": ("tiny_coco16/small_coco/instances_train2017_small.json",
                                  "tiny_coco16/small_coco/train_2017_small"),
}


def replicate(json_path: Path, copies: int, out: Path) -> Path:
    """The same images listed ``copies`` times (new ids), annotations dropped."""
    data = json.loads(json_path.read_text())
    images = [dict(im, id=k * 10**7 + i) for k in range(copies)
              for i, im in enumerate(data["images"])]
    out.write_text(json.dumps({"images": images, "annotations": [],
                               "categories": data["categories"]}))
    return out


def reference(json_path: Path, root: Path) -> set:
    found = set()
    for im in json.loads(json_path.read_text())["images"]:
        with Image.open(root / im["file_name"]) as f:
            f.load()
            found.add((im["file_name"], f.size))
    return found


def best(fn, reps):
    times, value = [], None
    for _ in range(reps):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return min(times), value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    print(f"{'case':<42}{'reference s':>12}{'d2seg s':>10}{'ratio':>8}  identical")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (js, root) in CASES.items():
            root = SHARED / root
            rep = replicate(SHARED / js, args.copies, Path(tmp) / "rep.json")
            n = args.copies * len(json.loads((SHARED / js).read_text())["images"])
            t_ref, ref = best(lambda: reference(rep, root), args.reps)
            for mode, decode in (("full decode", True), ("header only", False)):
                t_d2, res = best(lambda: check_coco(rep, root, decode=decode,
                                                    progress=False), args.reps)
                # both agree with the JSON's sizes: the loop directly, d2seg by reporting
                # no missing/unreadable/size problem
                kinds = set(res.by_kind()) - {"image_without_annotations"}
                declared = {(im["file_name"], (im["width"], im["height"]))
                            for im in json.loads(rep.read_text())["images"]}
                same = not kinds and ref == declared
                print(f"{name + ', ' + str(n) + ' imgs, ' + mode:<42}{t_ref:>12.3f}"
                      f"{t_d2:>10.3f}{t_ref / t_d2:>8.2f}  {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
