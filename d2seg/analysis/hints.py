"""From error to cause: what the run's own data and config say about its largest errors.

Each hint is computed from the analysis (TIDE dAP per error type, per-class recall), the
training split (images without objects, instances per class) and the config of the run; a hint
appears only when its cause is present in those numbers, and says what to change.

* background false positives cost the most, and the training split has images without objects
  that detectron2 drops (``DATALOADER.FILTER_EMPTY_ANNOTATIONS``): keep them as negatives;
* localisation costs the most and small objects score far below large ones (COCO APs vs APl):
  the input size (``INPUT.MIN_SIZE_TRAIN/TEST``);
* a class's recall is far below the others': its share of the training instances.
"""

from __future__ import annotations

import math
import statistics

from d2seg.io.json import read_json

# a class is "far below" when its recall is under this and this much under the median class
LOW_RECALL, RECALL_GAP = 0.5, 0.25
SMALL_VS_LARGE = 0.5  # APs below half of APl


def training_facts(train_json) -> dict:
    """Counts of the training split that the hints use: images, images without (non-crowd)
    objects, instances per category name."""
    data = read_json(train_json, what="training annotations")
    names = {c["id"]: c.get("name", str(c["id"])) for c in data.get("categories", [])}
    with_objects, per_class = set(), {n: 0 for n in names.values()}
    for a in data.get("annotations", []):
        if a.get("iscrowd", 0):
            continue
        with_objects.add(a["image_id"])
        name = names.get(a["category_id"], str(a["category_id"]))
        per_class[name] = per_class.get(name, 0) + 1
    images = [im["id"] for im in data.get("images", [])]
    return {"images": len(images), "empty_images": sum(i not in with_objects for i in images),
            "instances_per_class": per_class}


def _valid(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v >= 0


def hints(analysis: dict, facts: dict | None = None, config: dict | None = None,
          coco_metrics: dict | None = None) -> list[dict]:
    """The hints that apply: ``[{"kind", "iou_type", "text", "evidence"}]``.

    ``analysis``: analysis.json's content; ``facts``: :func:`training_facts`; ``config``:
    ``FILTER_EMPTY_ANNOTATIONS``, ``MIN_SIZE_TRAIN``, ``MIN_SIZE_TEST`` of the run;
    ``coco_metrics``: report/metrics.json (for APs/APl). Without facts or config, the hints
    that need them are not given (never guessed)."""
    types = analysis.get("iou_types", {})
    if not types:
        return []
    iou_type = "segm" if "segm" in types else next(iter(types))
    section = types[iou_type]
    dap = section.get("dAP", {})
    top = max(dap, key=lambda k: dap[k]) if dap else None
    out = []
    config = config or {}

    if top == "background" and facts and facts.get("empty_images") and \
            config.get("FILTER_EMPTY_ANNOTATIONS", True):
        k, n = facts["empty_images"], facts["images"]
        out.append({"kind": "background_empty_images", "iou_type": iou_type, "evidence": {
            "dAP_background": dap[top], "empty_images": k, "images": n},
            "text": f"Background false positives cost the most ({dap[top]:.1f} AP50). {k} of {n} "
                    "training images have no objects and detectron2 dropped them "
                    "(DATALOADER.FILTER_EMPTY_ANNOTATIONS True): set it False so the model also "
                    "learns from images with nothing to find."})

    stats = ((coco_metrics or {}).get(iou_type) or {}).get("stats", {})
    aps, apl = stats.get("APs"), stats.get("APl")
    if top == "localization" and _valid(aps) and _valid(apl) and apl > 0 and \
            aps < SMALL_VS_LARGE * apl and "MIN_SIZE_TEST" in config:
        out.append({"kind": "localization_small_objects", "iou_type": iou_type, "evidence": {
            "dAP_localization": dap[top], "APs": aps, "APl": apl,
            "MIN_SIZE_TRAIN": config.get("MIN_SIZE_TRAIN"), "MIN_SIZE_TEST": config["MIN_SIZE_TEST"]},
            "text": f"Localisation errors cost the most ({dap[top]:.1f} AP50) and small objects "
                    f"score far below large ones (APs {100 * aps:.1f} vs APl {100 * apl:.1f}). "
                    f"Images are resized to a short side of {config['MIN_SIZE_TEST']} px at test "
                    f"time ({config.get('MIN_SIZE_TRAIN')} in training): raise "
                    "INPUT.MIN_SIZE_TRAIN / MIN_SIZE_TEST (and MAX_SIZE_*) to give small objects "
                    "more pixels."})

    if facts and facts.get("instances_per_class"):
        per_class = [c for c in section.get("per_class", []) if c.get("num_objects")]
        recalls = [c.get("recall_at_best") for c in per_class if _valid(c.get("recall_at_best"))]
        if len(recalls) >= 2:
            median = statistics.median(recalls)
            total = sum(facts["instances_per_class"].values()) or 1
            for c in per_class:
                r = c.get("recall_at_best")
                if not _valid(r) or r >= LOW_RECALL or median - r < RECALL_GAP:
                    continue
                count = facts["instances_per_class"].get(c["name"], 0)
                out.append({"kind": "class_low_recall", "iou_type": iou_type, "evidence": {
                    "class": c["name"], "recall": r, "median_recall": median,
                    "training_instances": count, "share": count / total},
                    "text": f"Class '{c['name']}' finds {100 * r:.0f}% of its objects (median class "
                            f"{100 * median:.0f}%); it has {count} of the {total} training instances "
                            f"({100 * count / total:.1f}%): label more of it, or oversample the "
                            "images that contain it (DATALOADER.SAMPLER_TRAIN "
                            "RepeatFactorTrainingSampler)."})
    return out
