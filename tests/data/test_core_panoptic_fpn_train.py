"""Panoptic FPN trains on the demo panoptic split straight from its manifest: no preprocessing.

Only the manifest and the panoptic JSON + PNGs exist when training starts; the semantic labels
and instances Panoptic FPN needs are derived on the fly. The class counts of the config come from
``num_classes`` and are checked by ``check_config_matches_dataset``.
"""

from __future__ import annotations

import math
import uuid

import pytest

from d2seg.data import manifest as mf
from d2seg.config.prepare import check_config_matches_dataset, num_classes
from d2seg.data.register import register_manifest
from d2seg.data.demo import generate_demo
from d2seg.data.register import unregister_manifest


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")  # inside detectron2
def test_panoptic_fpn_trains_a_few_iterations_on_the_demo(tmp_path, monkeypatch):
    import torch
    from detectron2.data import MetadataCatalog
    from detectron2.engine import DefaultTrainer

    from d2seg.runners.diagnostics import tiny_mask_rcnn_cfg

    monkeypatch.setenv("D2SEG_CACHE", str(tmp_path / "cache"))
    demo = generate_demo(tmp_path / "demo", splits={"train": 8})
    for sub in ("semantic", "instances.json"):  # prove nothing but panoptic data is used
        target = demo / "train" / sub
        if target.is_dir():
            for p in target.iterdir():
                p.unlink()
            target.rmdir()
        else:
            target.unlink()
    name = f"pan{uuid.uuid4().hex[:6]}"
    (tmp_path / "m.yaml").write_text(
        f"name: {name}\nkind: coco_panoptic\nsplits:\n  train:\n    images: demo/train/images\n"
        "    annotations: demo/train/panoptic.json\n    panoptic_root: demo/train/panoptic\n")
    try:
        names = register_manifest(mf.load_manifest(tmp_path / "m.yaml"))
        dataset = f"{name}_train_separated"
        assert dataset in names
        counts = num_classes(dataset)
        torch.manual_seed(0)
        cfg = tiny_mask_rcnn_cfg("cpu")
        cfg.MODEL.META_ARCHITECTURE = "PanopticFPN"
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = counts["thing"]
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = counts["sem_seg_head"]
        cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
        cfg.INPUT.MASK_FORMAT = MetadataCatalog.get(dataset).mask_format
        cfg.DATASETS.TRAIN = (dataset,)
        cfg.DATASETS.TEST = ()
        cfg.DATALOADER.NUM_WORKERS = 0
        cfg.SOLVER.IMS_PER_BATCH = 2
        cfg.SOLVER.BASE_LR = 0.001
        cfg.SOLVER.MAX_ITER = 3
        cfg.SOLVER.WARMUP_ITERS = 0
        cfg.SOLVER.CHECKPOINT_PERIOD = 1000
        cfg.OUTPUT_DIR = str(tmp_path / "run")
        check_config_matches_dataset(cfg, cfg.DATASETS.TRAIN)
        trainer = DefaultTrainer(cfg)
        trainer.train()
        history = trainer.storage.history("loss_sem_seg").values()
        assert len(history) == 3 and all(math.isfinite(v) for v, _ in history)
        assert trainer.storage.history("loss_mask").values()  # the instance branch trained too
        assert not (demo / "train" / "semantic").exists()  # inputs untouched
        assert list((tmp_path / "cache" / "panoptic_semantic").iterdir())
    finally:
        unregister_manifest(name)
