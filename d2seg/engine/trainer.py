"""d2seg's Trainer: detectron2's DefaultTrainer, with evaluators and class counts from the data.

Everything data-dependent that detectron2 leaves to the user is decided here from the
registered datasets' metadata, before any work starts: NUM_CLASSES, INPUT.MASK_FORMAT, which
evaluators to run. A config that contradicts the data is a D2SegError, not a crash at iteration N.
"""

from __future__ import annotations

import os
import weakref

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import (
    COCOEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

import d2seg.modeling  # noqa: F401  (registers d2seg's backbones with detectron2)
from d2seg.engine.checkpoint import SafeCheckpointer, SaveOnInterrupt, preserved_rng_states
from d2seg.engine.hooks import ProgressBar
from d2seg.engine.sampler import ResumableTrainLoader
from d2seg.errors import D2SegError
from d2seg.evaluation.panoptic_evaluator import PanopticEvaluator


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

    from d2seg.data.register import check_config_matches_dataset, num_classes

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
    return cfg


class Trainer(DefaultTrainer):
    """DefaultTrainer plus: evaluators picked from the data, best checkpoint, a progress bar,
    crash-safe checkpoints and exact resume (d2seg.engine.checkpoint, d2seg.engine.sampler)."""

    @classmethod
    def build_train_loader(cls, cfg):
        # detectron2's data, mapper and sampler, but resumable part-way through the stream
        return ResumableTrainLoader.from_config(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        # images read as in training (d2seg.data.images); an unreadable one is one error line
        from d2seg.data.mappers import build_test_loader

        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        # DeepLab's poly schedule (SOLVER.LR_SCHEDULER_NAME WarmupPolyLR); others: detectron2's
        if cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR":
            from detectron2.projects.deeplab import build_lr_scheduler

            return build_lr_scheduler(cfg, optimizer)
        return super().build_lr_scheduler(cfg, optimizer)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        # evaluating during training must not shift the training's random streams
        with preserved_rng_states():
            return super().test(cfg, model, evaluators)

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        loader = self._trainer.data_loader
        if isinstance(loader, ResumableTrainLoader):
            loader.start_at(self.start_iter)

    # detectron2 v0.6's DefaultTrainer leaves its inner trainer out of checkpoints, so the
    # optimizer's momentum (and AMP's grad scaler) restarted from zero on every resume. Later
    # detectron2 saves it under "_trainer"; the same key keeps checkpoints interchangeable.
    def state_dict(self):
        state = super().state_dict()
        state["_trainer"] = self._trainer.state_dict()
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])

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
            evaluators.append(PanopticEvaluator(dataset_name, out))
            if meta.get("json_file", None):
                evaluators.append(COCOEvaluator(dataset_name, tasks=("bbox", "segm"),
                                                output_dir=out, use_fast_impl=True))
        else:
            raise D2SegError(f"no evaluator for evaluator_type {kind!r}", where=dataset_name)
        return DatasetEvaluators(evaluators)

    def build_hooks(self):
        # DefaultTrainer makes a DetectionCheckpointer just before it builds the hooks; swap in
        # d2seg's (safe loading, more weight formats, atomic writes, fallback on resume) so
        # every hook and resume_or_load use it.
        model = self._trainer.model
        self.checkpointer = SafeCheckpointer(getattr(model, "module", model), self.cfg.OUTPUT_DIR,
                                             trainer=weakref.proxy(self))
        result = super().build_hooks()
        cfg = self.cfg
        if cfg.D2SEG.BEST_METRIC and cfg.TEST.EVAL_PERIOD > 0 and cfg.DATASETS.TEST:
            # after EvalHook (which produced the metric), before the writers
            at = next(i for i, h in enumerate(result) if isinstance(h, hooks.EvalHook)) + 1
            result.insert(at, hooks.BestCheckpointer(cfg.TEST.EVAL_PERIOD, self.checkpointer,
                                                     cfg.D2SEG.BEST_METRIC, cfg.D2SEG.BEST_MODE))
        if cfg.D2SEG.PROGRESS_BAR:
            result.append(ProgressBar(cfg.SOLVER.MAX_ITER))
        result.append(SaveOnInterrupt(self.checkpointer))  # last: after the step's metrics
        return result
