"""Run models and classical methods on one dataset: one table of metrics and time per image,
one montage with a row per method, and every method's predictions kept for ``d2seg eval``.

A comparison is a small YAML file (see configs/compare/), so the table in BENCHMARKS.md can be
reproduced with one command::

    dataset: demo_semseg_val
    images: 50                       # optional: the first N images
    methods:
      - name: Semantic FPN
        model: configs/semantic/semantic_fpn_MNV2_cpu_quick.yaml
        weights: runs/semfpn/model_final.pth
      - name: Semantic FPN + SLIC
        superpixels: slic            # vote the named method's labels over superpixels
        refine: Semantic FPN
      - name: SLIC from 1% of the labels
        superpixels: slic
        sparse: 0.01                 # prompted by ground truth, like GrabCut from boxes

On an instance dataset the methods are models, ``grabcut`` (from ``boxes: ground_truth`` or a
named method's boxes) and ``watershed``; the metric is mask AP. On a semantic dataset they are
models (their ``sem_seg`` output) and superpixel voting; the metrics are mIoU, fwIoU and pixel
accuracy.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from d2seg.errors import D2SegError
from d2seg.io.labels import read_label_png

KINDS = ("model", "superpixels", "grabcut", "watershed")
_SEMANTIC_KINDS = {"model", "superpixels"}
_INSTANCE_KINDS = {"model", "grabcut", "watershed"}


@dataclass
class Method:
    """One row of the comparison: a name, what runs, and that method's parameters."""

    name: str
    kind: str
    params: dict = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "_", self.name).strip("_").lower() or "method"


@dataclass
class Comparison:
    dataset: str
    methods: list[Method]
    images: int | None = None
    montage_images: int = 4
    class_agnostic: bool = False  # instance data: score masks as one class ("object")


def load_comparison(path) -> Comparison:
    """Read and check a comparison YAML (errors name the file and the method)."""
    import yaml

    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise D2SegError("no such file", file=str(path)) from None
    except yaml.YAMLError as e:
        raise D2SegError(f"not valid YAML ({str(e).splitlines()[0]})", file=str(path)) from None
    if not isinstance(spec, dict) or "dataset" not in spec or not spec.get("methods"):
        raise D2SegError("needs 'dataset' and a non-empty 'methods' list", file=str(path))
    methods = []
    for i, entry in enumerate(spec["methods"]):
        where = f"methods[{i}]"
        if not isinstance(entry, dict) or "name" not in entry:
            raise D2SegError("each method needs a 'name'", file=str(path), where=where)
        kinds = [k for k in KINDS if k in entry]
        if len(kinds) != 1:
            raise D2SegError(f"give exactly one of {', '.join(KINDS)}", file=str(path),
                             where=f"{where} ({entry['name']})")
        params = {k: v for k, v in entry.items() if k != "name"}
        methods.append(Method(str(entry["name"]), kinds[0], params))
    names = [m.name for m in methods]
    for m in methods:
        if names.count(m.name) > 1:
            raise D2SegError(f"method name {m.name!r} is used twice", file=str(path))
        source = m.params.get("refine") or m.params.get("boxes")
        if source and source != "ground_truth" and source not in names[:names.index(m.name)]:
            raise D2SegError(f"{m.name!r} takes the output of {source!r}, which is not a method "
                             "listed before it", file=str(path))
    return Comparison(str(spec["dataset"]), methods, spec.get("images"),
                      int(spec.get("montage_images", 4)), bool(spec.get("class_agnostic", False)))


# ------------------------------------------------------------------ the dataset side

@dataclass
class _Data:
    name: str
    task: str  # "semantic" or "instance"
    records: list[dict]
    meta: object


def _load_dataset(name: str, limit: int | None) -> _Data:
    from detectron2.data import DatasetCatalog

    from d2seg.data.register import register_datasets
    from d2seg.data.register import registered_metadata

    register_datasets()
    meta = registered_metadata(name)
    kind = meta.get("evaluator_type", "coco")
    if kind not in ("sem_seg", "coco"):
        raise D2SegError(f"comparisons run on semantic or instance datasets, {name} is {kind}",
                         where="dataset", hint="use the dataset's semantic or instance form")
    records = sorted(DatasetCatalog.get(name), key=lambda r: r.get("image_id", r["file_name"]))
    if limit:
        records = records[:int(limit)]
    if not records:
        raise D2SegError("the dataset has no images", where=name)
    return _Data(name, "semantic" if kind == "sem_seg" else "instance", records, meta)


def _read_bgr(path: str) -> np.ndarray:
    """The BGR image as training reads it; a bad file is one D2SegError line naming it."""
    from d2seg.io.images import read_image

    return read_image(path, format="BGR")


# ------------------------------------------------------------------ running one method

class _Runner:
    """Runs methods image by image, keeping outputs that later methods refine."""

    def __init__(self, data: _Data):
        self.data = data
        self.outputs: dict[str, list] = {}  # method name -> per-image labels or results
        self.times: dict[str, float] = {}  # method name -> seconds per image, sources included
        self.class_agnostic = False
        self.rng_seed = 0

    def check(self, method: Method) -> None:
        allowed = _SEMANTIC_KINDS if self.data.task == "semantic" else _INSTANCE_KINDS
        if method.kind not in allowed:
            raise D2SegError(f"{method.kind!r} does not apply to a {self.data.task} dataset",
                             where=method.name, hint=f"use one of {', '.join(sorted(allowed))}")

    def run(self, method: Method) -> tuple[list, float]:
        step = getattr(self, f"_{method.kind}")(method)
        outputs, seconds = [], 0.0
        if method.kind == "model":  # first-call set-up (allocations, kernels) is not per image
            first = self.data.records[0]
            step(0, first, _read_bgr(first["file_name"]))
        source = method.params.get("refine") or method.params.get("boxes")
        source_time = self.times.get(source, 0.0) if source else 0.0
        for index, record in enumerate(self.data.records):
            image = _read_bgr(record["file_name"])
            start = time.perf_counter()
            outputs.append(step(index, record, image))
            seconds += time.perf_counter() - start
        self.outputs[method.name] = outputs
        per_image = seconds / len(self.data.records) + source_time
        self.times[method.name] = per_image
        return outputs, per_image

    # --- models
    def _model(self, method: Method):
        from d2seg.config import load_config
        from d2seg.engine.predict import BatchPredictor, instances_to_coco
        from d2seg.config.prepare import prepare_config

        p = method.params
        cfg = prepare_config(load_config(p["model"], [str(v) for v in p.get("overrides", [])]))
        predictor = BatchPredictor(cfg, p.get("weights") or cfg.MODEL.WEIGHTS)
        inverse = {v: k for k, v in
                   (self.data.meta.get("thing_dataset_id_to_contiguous_id", None) or {}).items()}

        def step(index, record, image):
            output = predictor([image])[0]
            if self.data.task == "semantic":
                if "sem_seg" not in output:
                    raise D2SegError("the model has no semantic output", where=method.name,
                                     hint="use a semantic or panoptic model here")
                return output["sem_seg"].argmax(0).to("cpu").numpy().astype(np.uint8)
            if "instances" not in output:
                raise D2SegError("the model has no instance output", where=method.name)
            return instances_to_coco(output["instances"], record["image_id"], inverse)
        return step

    # --- classical
    def _superpixels(self, method: Method):
        from d2seg.classical import refine_semantic

        p = dict(method.params)
        algorithm = p.pop("superpixels")
        source, sparse = p.pop("refine", None), p.pop("sparse", None)
        if (source is None) == (sparse is None):
            raise D2SegError("superpixels need either 'refine: <method>' or 'sparse: <fraction>'",
                             where=method.name)
        ignore = self.data.meta.get("ignore_label", 255)

        def step(index, record, image):
            rgb = image[:, :, ::-1]
            if source is not None:
                labels = self.outputs[source][index]
            else:
                gt = read_label_png(record["sem_seg_file_name"])
                rng = np.random.default_rng(self.rng_seed + index)
                labels = np.where(rng.random(gt.shape) < float(sparse), gt, ignore).astype(np.uint8)
            return refine_semantic(rgb, labels, algorithm, ignore=ignore, **p).astype(np.uint8)
        return step

    def _grabcut(self, method: Method):
        from d2seg.classical import grabcut_box, mask_to_result

        p = dict(method.params)
        p.update(p.pop("grabcut") or {})  # grabcut: {iters: 5, margin: 0.25, ...}
        source = p.pop("boxes", "ground_truth")
        score_thresh = float(p.pop("score_thresh", 0.0))
        inverse = {v: k for k, v in self.data.meta.thing_dataset_id_to_contiguous_id.items()}

        def step(index, record, image):
            rgb = image[:, :, ::-1].copy()
            if source == "ground_truth":
                from detectron2.structures import BoxMode

                prompts = [(BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYWH_ABS),
                            inverse[a["category_id"]], 1.0) for a in record.get("annotations", [])
                           if not a.get("iscrowd", 0)]
            else:
                prompts = [(r["bbox"], r["category_id"], r["score"])
                           for r in self.outputs[source][index] if r["score"] >= score_thresh]
            return [mask_to_result(grabcut_box(rgb, box, **p), record["image_id"], cat, score)
                    for box, cat, score in prompts]
        return step

    def _watershed(self, method: Method):
        from d2seg.classical import label_map_to_results, watershed_instances

        p = dict(method.params)
        p.update(p.pop("watershed") or {})  # watershed: {h: 2, min_area: 30, ...}
        category = p.pop("category_id", None)
        if category is None:
            ids = sorted(self.data.meta.thing_dataset_id_to_contiguous_id)
            if len(ids) != 1 and not self.class_agnostic:
                raise D2SegError("watershed finds objects, not classes: set 'category_id', or "
                                 "'class_agnostic: true' for the comparison", where=method.name)
            category = ids[0]

        def step(index, record, image):
            labels = watershed_instances(image[:, :, ::-1].copy(), **p)
            return label_map_to_results(labels, record["image_id"], int(category))
        return step


# ------------------------------------------------------------------ scoring and writing

def _score_semantic(data: _Data, labels: list[np.ndarray]) -> dict:
    from d2seg.evaluation.semantic_metrics import semantic_metrics

    classes = data.meta.stuff_classes
    pairs = ((read_label_png(r["sem_seg_file_name"]), pred) for r, pred in zip(data.records, labels))
    ignore = data.meta.get("ignore_label", 255)
    # superpixel voting may leave pixels without a label (ignore): they count as misses
    m = semantic_metrics(pairs, len(classes), ignore, unlabeled_prediction=ignore)
    return {"mIoU": 100 * m["mIoU"], "fwIoU": 100 * m["fwIoU"],
            "pixel_accuracy": 100 * m["pixel_accuracy"],
            "per_class_iou": dict(zip(classes, (100 * v for v in m["per_class_iou"])))}


def _one_class(gt_file: str):
    """The ground truth with every category merged into one, id 1 ("object")."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    from d2seg.io.json import read_json

    data = read_json(gt_file, "ground-truth JSON file")
    data["categories"] = [{"id": 1, "name": "object"}]
    for a in data["annotations"]:
        a["category_id"] = 1
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _score_instances(data: _Data, results: list[list[dict]], class_agnostic: bool) -> dict:
    from d2seg.evaluation.coco import evaluate_coco

    flat = [r for per_image in results for r in per_image]
    ids = [r["image_id"] for r in data.records]
    if not flat:
        return {"segm_AP": 0.0, "segm_AP50": 0.0}
    gt = data.meta.json_file
    if class_agnostic:
        gt, flat = _one_class(gt), [{**r, "category_id": 1} for r in flat]
    stats = evaluate_coco(gt, flat, ("segm",), image_ids=ids)["segm"]["stats"]
    return {"segm_AP": 100 * stats["AP"], "segm_AP50": 100 * stats["AP50"]}


def _save_outputs(data: _Data, method: Method, outputs: list, folder: Path) -> str:
    from d2seg.io.files import write_json_atomic, write_png_atomic

    folder.mkdir(parents=True, exist_ok=True)
    if data.task == "semantic":
        for record, labels in zip(data.records, outputs):
            name = Path(record.get("sem_seg_file_name") or record["file_name"]).stem + ".png"
            write_png_atomic(folder / name, labels)
        return str(folder)
    path = folder / "results.json"
    write_json_atomic(path, [r for per_image in outputs for r in per_image])
    return str(path)


def _draw(data: _Data, image: np.ndarray, output) -> np.ndarray:
    from d2seg.visualize.render import draw_instances, draw_semantic

    meta = data.meta
    if data.task == "semantic":
        return draw_semantic(image, output, meta.stuff_classes, meta.get("stuff_colors", None),
                             ignore_label=meta.get("ignore_label", 255))
    names = {k: n for k, n in zip(sorted(meta.thing_dataset_id_to_contiguous_id), meta.thing_classes)}
    shown = [r for r in output if r.get("score", 1.0) >= 0.5]
    return draw_instances(image, masks=[r["segmentation"] for r in shown],
                          classes=[r["category_id"] for r in shown],
                          scores=[r["score"] for r in shown] if shown and "score" in shown[0] else None,
                          class_names=names)


def _ground_truth_output(data: _Data, record: dict):
    """The record's ground truth in the form a method's output has (labels or mask entries)."""
    if data.task == "semantic":
        return read_label_png(record["sem_seg_file_name"])
    from d2seg.io.rle import to_rle

    inverse = {v: k for k, v in data.meta.thing_dataset_id_to_contiguous_id.items()}
    return [{"segmentation": to_rle(a["segmentation"], record["height"], record["width"],
                                    where=record["file_name"]),
             "category_id": inverse[a["category_id"]]}
            for a in record.get("annotations", [])]


def markdown_table(rows: list[dict], task: str) -> str:
    cols = (["mIoU", "fwIoU", "pixel_accuracy"] if task == "semantic" else ["segm_AP", "segm_AP50"])
    head = "| method | " + " | ".join(c.replace("_", " ") for c in cols) + " | s / image |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for row in rows:
        values = " | ".join(f"{row[c]:.1f}" for c in cols)
        lines.append(f"| {row['method']} | {values} | {row['seconds_per_image']:.3f} |")
    return "\n".join(lines) + "\n"


def compare(comparison: Comparison, out_dir, progress: bool = True) -> list[dict]:
    """Run every method, score it, and write compare.md, compare.json, montage.png and each
    method's predictions (semantic PNGs or a COCO results JSON) under ``out_dir``."""
    from d2seg.io.files import write_png_atomic, write_text_atomic
    from d2seg.visualize.render import montage

    out = Path(out_dir)
    data = _load_dataset(comparison.dataset, comparison.images)
    runner = _Runner(data)
    runner.class_agnostic = comparison.class_agnostic
    for method in comparison.methods:  # refuse a misfit before spending minutes on the others
        runner.check(method)
    rows = []
    methods = comparison.methods
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        methods = tqdm(methods, desc="methods", unit="method")
    for method in methods:
        outputs, seconds = runner.run(method)
        score = (_score_semantic(data, outputs) if data.task == "semantic"
                 else _score_instances(data, outputs, comparison.class_agnostic))
        saved = _save_outputs(data, method, outputs, out / "predictions" / method.slug)
        rows.append({"method": method.name, "kind": method.kind, **score,
                     "seconds_per_image": seconds, "predictions": saved})

    shown = data.records[:comparison.montage_images]
    grid, titles = [], ["ground truth"] + [m.name for m in comparison.methods]
    images = [_read_bgr(r["file_name"]) for r in shown]
    grid.append([_draw(data, im, _ground_truth_output(data, r)) for im, r in zip(images, shown)])
    for method in comparison.methods:
        grid.append([_draw(data, im, runner.outputs[method.name][i]) for i, im in enumerate(images)])
    out.mkdir(parents=True, exist_ok=True)
    picture = montage(grid, row_titles=titles,
                      col_titles=[Path(r["file_name"]).name for r in shown])
    write_png_atomic(out / "montage.png", picture)

    summary = {"dataset": data.name, "task": data.task, "images": len(data.records),
               "class_agnostic": comparison.class_agnostic, "rows": rows}
    for name, text in (("compare.json", json.dumps(summary, indent=1)),
                       ("compare.md", f"# {data.name} ({len(data.records)} images)\n\n"
                                      + markdown_table(rows, data.task))):
        write_text_atomic(out / name, text)
    return rows
