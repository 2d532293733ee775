"""The config made ready for a dataset: everything in d2seg that reads MODEL.*, D2SEG.* and TEST.*
keys against the data lives here, so the data layer below knows no config keys.

:func:`prepare_config` resolves ``MODEL.DEVICE auto`` and ``D2SEG.AMP auto``, fills class counts
and the mask format from the training data (``D2SEG.CLASSES_FROM_DATA``), and refuses with one
line naming the key a config that contradicts the data or sets an unknown value.
"""

from __future__ import annotations

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2seg.data.register import registered_metadata
from d2seg.errors import D2SegError

ON_DIVERGENCE = ("stop", "recover")
LOSS_PREFIX = "val_"  # validation losses in metrics.json: val_total_loss, val_loss_cls, ...


def _load_class_metadata(names) -> None:
    """detectron2's own COCO registration fills thing_classes only when the data is first
    loaded; load such datasets now so their classes can be checked before training."""
    for name in names:
        meta = MetadataCatalog.get(name)
        if (name in DatasetCatalog.list() and meta.get("thing_classes", None) is None
                and meta.get("stuff_classes", None) is None):
            DatasetCatalog.get(name)


def prepare_config(cfg: CfgNode) -> CfgNode:
    """Resolve the device, fill class counts and the mask format from the training data, and
    refuse a config that contradicts the data (d2seg.data.register does the comparison)."""
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
    # classes come from the training data, else (evaluation only) from the test data
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if not names:
        raise D2SegError("no dataset", where="DATASETS.TRAIN",
                         hint="set DATASETS.TRAIN (and DATASETS.TEST) to registered datasets, "
                              "e.g. demo_instances_train")
    _load_class_metadata(names)
    if cfg.D2SEG.CLASSES_FROM_DATA:
        need = num_classes(names[0])
        for key, value in (("ROI_HEADS", need["thing"]), ("RETINANET", need["thing"]),
                           ("SEM_SEG_HEAD", need["sem_seg_head"])):
            if value and cfg.MODEL[key].NUM_CLASSES == 0:
                cfg.MODEL[key].NUM_CLASSES = value
        mask_format = MetadataCatalog.get(names[0]).get("mask_format", None)
        if mask_format and cfg.MODEL.MASK_ON:
            cfg.INPUT.MASK_FORMAT = mask_format
    check_config_matches_dataset(cfg, names)
    _check_divergence_keys(cfg)
    _check_validation_keys(cfg)
    return cfg


def _check_divergence_keys(cfg: CfgNode) -> None:
    if cfg.D2SEG.ON_DIVERGENCE not in ON_DIVERGENCE:
        raise D2SegError(f"unknown value {cfg.D2SEG.ON_DIVERGENCE!r}", where="D2SEG.ON_DIVERGENCE",
                         hint="use stop (end training with an error) or recover (reload the "
                              "last good checkpoint with a lower learning rate)")
    if not 0 < cfg.D2SEG.RECOVER_LR_FACTOR < 1:
        raise D2SegError(f"{cfg.D2SEG.RECOVER_LR_FACTOR} is not between 0 and 1 (exclusive)",
                         where="D2SEG.RECOVER_LR_FACTOR",
                         hint="the learning rate is multiplied by it on each recovery, e.g. 0.5")
    if cfg.D2SEG.RECOVER_MAX_TIMES < 0:
        raise D2SegError(f"{cfg.D2SEG.RECOVER_MAX_TIMES} is negative",
                         where="D2SEG.RECOVER_MAX_TIMES", hint="use 0 or more, e.g. 3")


def _metric_tasks(cfg: CfgNode) -> tuple[str, ...]:
    """The prefixes of the metrics the evaluators of DATASETS.TEST[0] produce (bbox/AP, ...)."""
    meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
    kind = meta.get("evaluator_type", "coco")
    if kind == "coco":
        return ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
    if kind == "sem_seg":
        return ("sem_seg",)
    if kind == "coco_panoptic_seg":
        return ("panoptic_seg", "bbox", "segm") if meta.get("json_file", None) else ("panoptic_seg",)
    return ()


def _check_validation_keys(cfg: CfgNode) -> None:
    """TEST.VAL_LOSS_*, D2SEG.BEST_MODE and D2SEG.EARLY_STOP.*: one error line naming the key."""
    for key in ("VAL_LOSS_PERIOD", "VAL_LOSS_MAX_IMAGES"):
        if cfg.TEST[key] < 0:
            raise D2SegError(f"{cfg.TEST[key]} is negative", where=f"TEST.{key}",
                             hint="use 0 (off / all images) or more")
    if cfg.TEST.VAL_LOSS_PERIOD > 0 and not cfg.DATASETS.TEST:
        raise D2SegError("the validation loss is computed on DATASETS.TEST[0], which is empty",
                         where="TEST.VAL_LOSS_PERIOD",
                         hint="set DATASETS.TEST to a labelled split, or TEST.VAL_LOSS_PERIOD 0")
    if cfg.D2SEG.BEST_MODE not in ("max", "min"):
        raise D2SegError(f"unknown value {cfg.D2SEG.BEST_MODE!r}", where="D2SEG.BEST_MODE",
                         hint="use max (higher is better, e.g. segm/AP) or min (e.g. val_total_loss)")
    stop = cfg.D2SEG.EARLY_STOP
    if stop.PATIENCE < 0:
        raise D2SegError(f"{stop.PATIENCE} is negative", where="D2SEG.EARLY_STOP.PATIENCE",
                         hint="use 0 (off) or the number of evaluations without improvement "
                              "after which training stops, e.g. 5")
    if stop.MIN_DELTA < 0:
        raise D2SegError(f"{stop.MIN_DELTA} is negative", where="D2SEG.EARLY_STOP.MIN_DELTA",
                         hint="use 0 or the least change that counts as an improvement")
    metric = cfg.D2SEG.BEST_METRIC
    if metric.startswith(LOSS_PREFIX) and cfg.TEST.VAL_LOSS_PERIOD <= 0:
        raise D2SegError(f"{metric} is a validation loss, but TEST.VAL_LOSS_PERIOD is 0",
                         where="D2SEG.BEST_METRIC",
                         hint="set TEST.VAL_LOSS_PERIOD (and D2SEG.BEST_MODE min)")
    if stop.PATIENCE == 0:
        return
    if not metric:
        raise D2SegError("early stopping follows D2SEG.BEST_METRIC, which is empty",
                         where="D2SEG.EARLY_STOP.PATIENCE",
                         hint="set D2SEG.BEST_METRIC (e.g. segm/AP, or val_total_loss with "
                              "D2SEG.BEST_MODE min), or D2SEG.EARLY_STOP.PATIENCE 0")
    if not cfg.DATASETS.TEST or metric_period(cfg) <= 0:
        source = "TEST.VAL_LOSS_PERIOD" if metric.startswith(LOSS_PREFIX) else "TEST.EVAL_PERIOD"
        raise D2SegError(f"early stopping needs evaluations during training, but "
                         f"{'DATASETS.TEST is empty' if not cfg.DATASETS.TEST else source + ' is 0'}",
                         where="D2SEG.EARLY_STOP.PATIENCE",
                         hint=f"set DATASETS.TEST and {source}, or D2SEG.EARLY_STOP.PATIENCE 0")
    if not metric.startswith(LOSS_PREFIX):
        tasks = _metric_tasks(cfg)
        task = metric.split("/", 1)[0] if "/" in metric else ""
        if tasks and task not in tasks:
            example = {"sem_seg": "sem_seg/mIoU", "panoptic_seg": "panoptic_seg/PQ"}.get(
                tasks[0], tasks[-1] + "/AP")
            reports = ", ".join(t + "/..." for t in tasks)
            raise D2SegError(f"unknown metric {metric!r}: the evaluation of "
                             f"{cfg.DATASETS.TEST[0]} reports {reports}", where="D2SEG.BEST_METRIC",
                             hint=f"e.g. {example}, or val_total_loss (with "
                                  "TEST.VAL_LOSS_PERIOD and D2SEG.BEST_MODE min)")


def metric_period(cfg: CfgNode) -> int:
    """How often D2SEG.BEST_METRIC is produced: a validation loss by TEST.VAL_LOSS_PERIOD,
    other metrics by the evaluation (TEST.EVAL_PERIOD)."""
    if cfg.D2SEG.BEST_METRIC.startswith(LOSS_PREFIX):
        return cfg.TEST.VAL_LOSS_PERIOD
    return cfg.TEST.EVAL_PERIOD


def num_classes(dataset_name: str) -> dict:
    """Class counts a config needs: ``thing`` (ROI_HEADS.NUM_CLASSES), ``stuff`` (stuff
    categories), ``sem_seg_head`` (SEM_SEG_HEAD.NUM_CLASSES, None when there is no semantic task).
    """
    meta = registered_metadata(dataset_name)
    form = meta.get("d2seg_form")
    things = len(meta.get("thing_classes", []) or [])
    stuff_classes = meta.get("stuff_classes", []) or []
    if form == "panoptic":  # standard form: one index over all categories
        stuff = len(meta.stuff_dataset_id_to_contiguous_id)
        things = len(meta.thing_dataset_id_to_contiguous_id)
        return {"thing": things, "stuff": stuff, "sem_seg_head": len(stuff_classes)}
    if form in ("panoptic_separated", "stuffonly") or (
            form is None and meta.get("stuff_dataset_id_to_contiguous_id", {}).get(0) == 0
            and meta.get("evaluator_type") == "coco_panoptic_seg"):
        return {"thing": things if form != "stuffonly" else 0, "stuff": len(stuff_classes) - 1,
                "sem_seg_head": len(stuff_classes)}
    if form == "sem_seg" or (form is None and meta.get("evaluator_type") == "sem_seg"):
        return {"thing": 0, "stuff": len(stuff_classes), "sem_seg_head": len(stuff_classes)}
    return {"thing": things, "stuff": 0, "sem_seg_head": None}


def check_config_matches_dataset(cfg, dataset_names) -> None:
    """Raise D2SegError when the config's class counts, ignore value or mask format do not fit
    the datasets (all of which must agree with each other). Call before building the model.
    """
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    if not names:
        return
    counts = {n: num_classes(n) for n in names}
    first = names[0]
    for n in names[1:]:
        if counts[n] != counts[first] or registered_metadata(n).get("thing_classes") != registered_metadata(first).get("thing_classes"):
            raise D2SegError(f"datasets '{first}' and '{n}' have different classes "
                             f"({counts[first]} vs {counts[n]})", where="DATASETS",
                             hint="train and test on datasets with the same categories")
    need = counts[first]
    arch = cfg.MODEL.META_ARCHITECTURE
    uses_roi = arch in ("GeneralizedRCNN", "PanopticFPN")
    uses_sem = arch in ("SemanticSegmentor", "PanopticFPN")
    forms = {n: registered_metadata(n).get("d2seg_form") for n in names}
    if arch == "PanopticFPN":
        wrong = [n for n, f in forms.items() if f in ("panoptic", "instances", "sem_seg", "stuffonly")]
        if wrong:
            raise D2SegError(f"PanopticFPN trains on the separated panoptic form, not '{wrong[0]}'",
                             where="DATASETS", hint=f"use '{wrong[0]}_separated'"
                             if forms[wrong[0]] == "panoptic" else "use a coco_panoptic manifest")
    if uses_roi:
        if need["thing"] == 0:
            raise D2SegError(f"{arch} needs thing classes; dataset '{first}' has none",
                             where="MODEL.META_ARCHITECTURE", hint="use SemanticSegmentor")
        if cfg.MODEL.ROI_HEADS.NUM_CLASSES != need["thing"]:
            raise D2SegError(f"is {cfg.MODEL.ROI_HEADS.NUM_CLASSES} but dataset '{first}' has "
                             f"{need['thing']} thing classes", where="MODEL.ROI_HEADS.NUM_CLASSES",
                             hint=f"set it to {need['thing']}")
    if arch == "RetinaNet" and cfg.MODEL.RETINANET.NUM_CLASSES != need["thing"]:
        raise D2SegError(f"is {cfg.MODEL.RETINANET.NUM_CLASSES} but dataset '{first}' has "
                         f"{need['thing']} thing classes", where="MODEL.RETINANET.NUM_CLASSES",
                         hint=f"set it to {need['thing']}")
    if uses_sem:
        if need["sem_seg_head"] is None:
            raise D2SegError(f"{arch} needs semantic labels; dataset '{first}' has none",
                             where="MODEL.META_ARCHITECTURE")
        if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES != need["sem_seg_head"]:
            extra = " (stuff classes + 1 for 'things')" if arch == "PanopticFPN" else ""
            raise D2SegError(f"is {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES} but dataset '{first}' needs "
                             f"{need['sem_seg_head']}{extra}", where="MODEL.SEM_SEG_HEAD.NUM_CLASSES",
                             hint=f"set it to {need['sem_seg_head']}")
        ignore = registered_metadata(first).get("ignore_label", 255)
        if cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE != ignore:
            raise D2SegError(f"is {cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE} but dataset '{first}' "
                             f"ignores label {ignore}", where="MODEL.SEM_SEG_HEAD.IGNORE_VALUE",
                             hint=f"set it to {ignore}")
    if cfg.MODEL.MASK_ON and cfg.INPUT.MASK_FORMAT == "polygon":
        rle = [n for n in names if registered_metadata(n).get("mask_format") == "bitmask"]
        if rle:
            raise D2SegError(f"is 'polygon' but dataset '{rle[0]}' has RLE masks",
                             where="INPUT.MASK_FORMAT", hint="set it to 'bitmask'")
