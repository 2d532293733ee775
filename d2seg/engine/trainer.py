"""d2seg's Trainer: detectron2's DefaultTrainer, with evaluators and class counts from the data.

Everything data-dependent that detectron2 leaves to the user is decided here from the
registered datasets' metadata, before any work starts: NUM_CLASSES, INPUT.MASK_FORMAT, which
evaluators to run. A config that contradicts the data is a D2SegError, not a crash at iteration N.
"""

from __future__ import annotations

import os

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

from d2seg.engine.hooks import ProgressBar
from d2seg.errors import D2SegError


def _dataset_meta(name: str):
    """The dataset's metadata with its classes filled in (detectron2's COCO loader sets them
    only when the data is first loaded)."""
    if name not in DatasetCatalog.list():
        known = ", ".join(sorted(n for n in DatasetCatalog.list() if not n.startswith(("coco_", "lvis_", "cityscapes_", "voc_", "keypoints_", "ade20k")))) or "none"
        raise D2SegError(f"dataset {name!r} is not registered", where="DATASETS",
                         hint=f"registered d2seg datasets: {known}; add a manifest under datasets/")
    meta = MetadataCatalog.get(name)
    if meta.get("thing_classes", None) is None and meta.get("stuff_classes", None) is None:
        DatasetCatalog.get(name)
    return meta


def _set_or_check(cfg: CfgNode, key: str, value: int, source: str) -> None:
    node, leaf = cfg, key
    for part in key.split(".")[:-1]:
        node = node[part]
    leaf = key.split(".")[-1]
    if node[leaf] in (0, value):
        node[leaf] = value
    else:
        raise D2SegError(
            f"{key} is {node[leaf]} but dataset {source} has {value} classes",
            where=key, hint=f"set {key} {value}, or 0 to take it from the data",
        )


def prepare_config(cfg: CfgNode) -> CfgNode:
    """Fill class counts and the mask format from the training data; refuse contradictions."""
    import torch

    cfg = cfg.clone()
    cfg.defrost()
    if cfg.MODEL.DEVICE == "auto":
        cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    elif cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise D2SegError("MODEL.DEVICE is cuda but no CUDA device is available", where="MODEL.DEVICE",
                         hint="set MODEL.DEVICE cpu (or auto)")
    if cfg.D2SEG.AMP == "auto":
        cfg.SOLVER.AMP.ENABLED = cfg.MODEL.DEVICE.startswith("cuda")
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if not cfg.DATASETS.TRAIN:
        raise D2SegError("no training dataset", where="DATASETS.TRAIN",
                         hint="set DATASETS.TRAIN to a registered dataset, e.g. demo_instances_train")
    metas = [_dataset_meta(n) for n in names]
    first, meta = names[0], metas[0]
    if cfg.D2SEG.CLASSES_FROM_DATA:
        things = meta.get("thing_classes", None)
        stuff = meta.get("stuff_classes", None)
        arch = cfg.MODEL.META_ARCHITECTURE
        if things is not None and arch in ("GeneralizedRCNN", "PanopticFPN"):
            _set_or_check(cfg, "MODEL.ROI_HEADS.NUM_CLASSES", len(things), first)
        if things is not None and arch == "RetinaNet":
            _set_or_check(cfg, "MODEL.RETINANET.NUM_CLASSES", len(things), first)
        if stuff is not None and arch in ("SemanticSegmentor", "PanopticFPN"):
            _set_or_check(cfg, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", len(stuff), first)
        mask_format = meta.get("mask_format", None)
        if mask_format:
            cfg.INPUT.MASK_FORMAT = mask_format
        for other_name, other in zip(names[1:], metas[1:]):
            if other.get("thing_classes", None) != things or other.get("stuff_classes", None) != stuff:
                raise D2SegError(f"datasets {first} and {other_name} have different classes",
                                 where="DATASETS", hint="train and evaluate on splits of one dataset")
    for key in ("MODEL.ROI_HEADS.NUM_CLASSES", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "MODEL.RETINANET.NUM_CLASSES"):
        section, leaf = key.rsplit(".", 1)
        if _uses(cfg, key) and cfg[section.split(".")[0]][section.split(".")[1]][leaf] == 0:
            raise D2SegError(f"{key} is 0 and dataset {first} declares no classes", where=key,
                             hint="set it to the number of classes, or register the data with a manifest")
    return cfg


def _uses(cfg: CfgNode, key: str) -> bool:
    """Whether the configured meta-architecture reads this NUM_CLASSES key."""
    arch = cfg.MODEL.META_ARCHITECTURE
    if "ROI_HEADS" in key:
        return arch in ("GeneralizedRCNN", "PanopticFPN")
    if "SEM_SEG_HEAD" in key:
        return arch in ("SemanticSegmentor", "PanopticFPN")
    return arch == "RetinaNet"


class Trainer(DefaultTrainer):
    """DefaultTrainer plus: evaluators picked from the data, best checkpoint, a progress bar."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        meta = MetadataCatalog.get(dataset_name)
        kind = meta.get("evaluator_type", "coco")
        out = output_folder or os.path.join(cfg.OUTPUT_DIR, "eval", dataset_name)
        evaluators = []
        if kind == "coco":
            tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
            evaluators.append(COCOEvaluator(dataset_name, tasks=tasks, distributed=True,
                                            output_dir=out, use_fast_impl=True))
        elif kind == "sem_seg":
            evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=out))
        elif kind == "coco_panoptic_seg":
            evaluators.append(COCOPanopticEvaluator(dataset_name, out))
            if meta.get("json_file", None):
                evaluators.append(COCOEvaluator(dataset_name, tasks=("bbox", "segm"),
                                                output_dir=out, use_fast_impl=True))
        else:
            raise D2SegError(f"no evaluator for evaluator_type {kind!r}", where=dataset_name)
        return DatasetEvaluators(evaluators)

    def build_hooks(self):
        result = super().build_hooks()
        cfg = self.cfg
        if cfg.D2SEG.BEST_METRIC and cfg.TEST.EVAL_PERIOD > 0 and cfg.DATASETS.TEST:
            # after EvalHook (which produced the metric), before the writers
            at = next(i for i, h in enumerate(result) if isinstance(h, hooks.EvalHook)) + 1
            result.insert(at, hooks.BestCheckpointer(cfg.TEST.EVAL_PERIOD, self.checkpointer,
                                                     cfg.D2SEG.BEST_METRIC, cfg.D2SEG.BEST_MODE))
        if cfg.D2SEG.PROGRESS_BAR:
            result.append(ProgressBar(cfg.SOLVER.MAX_ITER))
        return result
