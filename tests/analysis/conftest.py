"""The reference: ``tidecv`` 1.0.1 (test-only, installed ``--no-deps``).

tidecv imports seaborn and pandas only for its plots; where they are absent a stand-in plotting
module is put in their place, so its numbers (all that these tests use) come from its own code.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
import types

import pytest


def _import_tidecv():
    try:
        return importlib.import_module("tidecv")
    except ModuleNotFoundError as e:
        if e.name not in {"pandas", "seaborn"}:
            raise
    for name in [m for m in sys.modules if m == "tidecv" or m.startswith("tidecv.")]:
        del sys.modules[name]
    stub = types.ModuleType("tidecv.plotting")

    class Plotter:  # TIDE() builds one; only .plot() would use it
        MAX_MAIN_DELTA_AP = 10
        MAX_SPECIAL_DELTA_AP = 25

    stub.Plotter = Plotter
    stub.print_table = lambda *a, **k: None
    sys.modules["tidecv.plotting"] = stub
    return importlib.import_module("tidecv")


@pytest.fixture(scope="session")
def tidecv_reference():
    """``run(gt_path, results_path, iou_type) -> {"ap50", "dAP", "special_dAP", "counts"}``
    computed by tidecv (keys in d2seg's names); skips when tidecv is not installed."""
    try:
        tidecv = _import_tidecv()
    except ModuleNotFoundError as e:
        pytest.skip(f"needs the reference tidecv==1.0.1 (pip install --no-deps tidecv==1.0.1 "
                    f"appdirs): {e}")
    from d2seg.analysis.tide import ERROR_TYPES, SHORT_NAMES

    def run(gt_path, results_path, iou_type):
        mode = tidecv.TIDE.BOX if iou_type == "bbox" else tidecv.TIDE.MASK
        with contextlib.redirect_stdout(io.StringIO()):
            tide = tidecv.TIDE()
            r = tide.evaluate(tidecv.datasets.COCO(str(gt_path)),
                              tidecv.datasets.COCOResult(str(results_path)), mode=mode,
                              name="run")
            main = tide.get_main_errors()["run"]
            special = tide.get_special_errors()["run"]
        short = {v: k for k, v in SHORT_NAMES.items()}
        counts = {short[t.short_name]: n for t, n in r.count_errors().items()}
        return {"ap50": r.ap, "dAP": {short[k]: v for k, v in main.items()},
                "special_dAP": {short[k]: v for k, v in special.items()},
                "counts": {t: counts[t] for t in ERROR_TYPES}}

    return run


# ------------------------------------------------------------------ hand-built scenes

def box_mask_rle(box, height, width):
    """A compressed RLE (str counts, as detectron2 writes results) of an XYWH box."""
    import numpy as np
    from pycocotools import mask as mask_utils

    m = np.zeros((height, width), np.uint8, order="F")
    x, y, w, h = (int(round(v)) for v in box)
    m[y:y + h, x:x + w] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def polygon(box):
    x, y, w, h = box
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def make_gt(objects, size=(64, 96), num_images=None, categories=(1, 2, 3), crowds=()):
    """objects: (image_id, category_id, xywh). crowds: (image_id, category_id, xywh)."""
    h, w = size
    ids = sorted({o[0] for o in objects} | {c[0] for c in crowds}
                 | set(range(1, (num_images or 0) + 1)))
    anns = []
    for k, (img, cat, box) in enumerate(list(objects) + list(crowds)):
        anns.append({"id": k + 1, "image_id": img, "category_id": cat, "bbox": list(box),
                     "area": box[2] * box[3], "iscrowd": int(k >= len(objects)),
                     "segmentation": polygon(box)})
    return {"images": [{"id": i, "file_name": f"img{i}.png", "height": h, "width": w}
                       for i in ids],
            "annotations": anns,
            "categories": [{"id": c, "name": f"class{c}"} for c in categories]}


def make_results(dets, size=(64, 96)):
    """dets: (image_id, category_id, score, xywh)."""
    h, w = size
    return [{"image_id": img, "category_id": cat, "score": score, "bbox": list(box),
             "segmentation": box_mask_rle(box, h, w)} for img, cat, score, box in dets]


@pytest.fixture
def write_case(tmp_path):
    """Write (gt dict, results list) as files; return their paths."""
    import json

    counter = [0]

    def write(gt, results):
        counter[0] += 1
        g = tmp_path / f"gt{counter[0]}.json"
        r = tmp_path / f"res{counter[0]}.json"
        g.write_text(json.dumps(gt))
        r.write_text(json.dumps(results))
        return g, r

    return write


def assert_same_as_tidecv(ours: dict, ref: dict, tol: float = 0.01) -> None:
    assert abs(ours["ap50"] - ref["ap50"]) <= tol, (ours["ap50"], ref["ap50"])
    for kind in ("dAP", "special_dAP"):
        for k, v in ref[kind].items():
            assert abs(ours[kind][k] - v) <= tol, (kind, k, ours[kind][k], v)
    assert ours["counts"] == ref["counts"]


@pytest.fixture(scope="session")
def scenes():
    """The builders above (test modules cannot import conftest under --import-mode=importlib)."""
    return types.SimpleNamespace(make_gt=make_gt, make_results=make_results,
                                 box_mask_rle=box_mask_rle, polygon=polygon,
                                 assert_same_as_tidecv=assert_same_as_tidecv)
