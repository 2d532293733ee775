"""Describe a COCO instances or panoptic dataset: class counts, masks per image, object sizes.

Numbers a user needs before training: which classes are rare (imbalance), how many objects
are small by COCO's definition (area < 32^2, medium < 96^2, large otherwise), and how many
masks an image carries (bounds ``TEST.DETECTIONS_PER_IMAGE``).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from d2seg.data.coco_files import is_panoptic, load_coco_json
from d2seg.io.files import save_figure_atomic, write_json_atomic
from d2seg.io.rle import to_rle

SMALL, MEDIUM = 32 ** 2, 96 ** 2  # COCO's area ranges


def size_bucket(area: float) -> str:
    """COCO's object size class for a mask area in pixels."""
    return "small" if area < SMALL else ("medium" if area < MEDIUM else "large")


def _area(ann: dict, sizes: dict) -> float:
    """The annotation's area field, or the area of its mask when the field is missing."""
    if isinstance(ann.get("area"), (int, float)) and ann["area"] > 0:
        return float(ann["area"])
    seg, size = ann.get("segmentation"), sizes.get(ann.get("image_id"))
    if not seg or size is None:
        return 0.0
    w, h = size
    return float(mask_utils.area(to_rle(seg, h, w, where=f"annotation {ann.get('id')}")))


def dataset_stats(json_path: str | os.PathLike, progress: bool | None = None) -> dict:
    """Counts for one COCO JSON (instances, or panoptic ``segments_info``), as a plain dict.
    ``progress``: a progress bar over the objects (default: when stderr is a terminal)."""
    from d2seg.data.problems import progress_bar

    data = load_coco_json(json_path)
    names = {c["id"]: c.get("name", str(c["id"])) for c in data["categories"]}
    sizes = {i["id"]: (i.get("width"), i.get("height")) for i in data["images"]}
    if is_panoptic(data):
        objects = [dict(s, image_id=a["image_id"]) for a in data["annotations"]
                   for s in a.get("segments_info") or []]
    else:
        objects = list(data["annotations"])
    per_class = Counter(names.get(o.get("category_id"), f"undeclared:{o.get('category_id')}")
                        for o in objects)
    per_image = Counter(o.get("image_id") for o in objects)
    counts_per_image = np.array([per_image.get(i, 0) for i in sizes], dtype=int)
    areas = np.fromiter((_area(o, sizes) for o in progress_bar(objects, "objects", progress,
                                                             len(objects))),
                        dtype=float, count=len(objects))
    buckets = Counter(size_bucket(a) for a in areas)
    instances_per_class = {n: per_class.get(n, 0) for n in names.values()}
    instances_per_class.update({n: c for n, c in per_class.items() if n.startswith("undeclared:")})
    present = [c for c in instances_per_class.values() if c > 0]
    return {
        "json": str(json_path),
        "kind": "coco_panoptic" if is_panoptic(data) else "coco_instances",
        "images": len(data["images"]),
        "instances": len(objects),
        "crowd": sum(1 for o in objects if o.get("iscrowd", 0) == 1),
        "categories": len(names),
        "instances_per_class": instances_per_class,
        "classes_without_instances": [n for n, c in instances_per_class.items() if c == 0],
        "class_imbalance": (max(present) / min(present)) if present else None,
        "masks_per_image": {
            "min": int(counts_per_image.min()) if len(counts_per_image) else 0,
            "mean": float(counts_per_image.mean()) if len(counts_per_image) else 0.0,
            "median": float(np.median(counts_per_image)) if len(counts_per_image) else 0.0,
            "max": int(counts_per_image.max()) if len(counts_per_image) else 0,
            "images_without_annotations": int((counts_per_image == 0).sum()),
        },
        "sizes": {k: buckets.get(k, 0) for k in ("small", "medium", "large")},
        "areas": areas.tolist(),
    }


def plot_stats(stats: dict, png_path: str | os.PathLike) -> Path:
    """A PNG with two panels: instances per class, and the histogram of sqrt(area)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_class = sorted(stats["instances_per_class"].items(), key=lambda kv: -kv[1])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(10, 0.25 * len(per_class) + 6), 4.5))
    ax1.bar(range(len(per_class)), [c for _, c in per_class], color="#4c72b0")
    ax1.set_xticks(range(len(per_class)), [n for n, _ in per_class], rotation=90,
                   fontsize=7 if len(per_class) > 20 else 9)
    ax1.set_ylabel("instances")
    ax1.set_title(f"instances per class (imbalance {stats['class_imbalance'] or 0:.1f}x)")
    side = np.sqrt(np.asarray(stats["areas"], dtype=float))
    if len(side):
        ax2.hist(side, bins=min(50, max(5, len(side) // 4)), color="#55a868")
    for edge, label in ((32, "32"), (96, "96")):
        ax2.axvline(edge, color="k", ls="--", lw=1)
        ax2.text(edge, ax2.get_ylim()[1] * 0.95, f" {label}", va="top")
    s = stats["sizes"]
    ax2.set_title(f"object size: {s['small']} small, {s['medium']} medium, {s['large']} large")
    ax2.set_xlabel("sqrt(area) in pixels")
    fig.tight_layout()
    return save_figure_atomic(fig, png_path, dpi=100)


def write_stats(stats: dict, out_dir: str | os.PathLike, stem: str = "stats") -> tuple[Path, Path]:
    """Write ``<stem>.json`` (without the raw area list) and ``<stem>.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    summary = {k: v for k, v in stats.items() if k != "areas"}
    return (write_json_atomic(out_dir / f"{stem}.json", summary),
            plot_stats(stats, out_dir / f"{stem}.png"))
