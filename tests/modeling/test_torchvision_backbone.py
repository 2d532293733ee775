"""torchvision backbones: stages, strides and features checked against torchvision and detectron2."""

from __future__ import annotations

import pytest
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

import d2seg.modeling  # noqa: F401  (registers the backbones)
from d2seg.errors import D2SegError
from d2seg.modeling import TorchvisionBackbone, add_modeling_config


def _cfg(**torchvision_keys):
    cfg = get_cfg()
    add_modeling_config(cfg)
    for key, value in torchvision_keys.items():
        setattr(cfg.MODEL.TORCHVISION, key, value)
    cfg.MODEL.WEIGHTS = "imagenet:x"  # any non-empty value: silences the from-scratch warning
    return cfg


def _randomise_norm_stats(model):
    """Give every BatchNorm non-trivial statistics so a wrong layer order would show."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("arch, nodes", [
    ("resnet18", {"layer1": "res2", "layer2": "res3", "layer3": "res4", "layer4": "res5"}),
    ("mobilenet_v2", {"features.3": "res2", "features.6": "res3", "features.13": "res4",
                      "features.18": "res5"}),
])
def test_stage_outputs_equal_torchvision_feature_extractor(arch, nodes):
    """Same weights, same input: our stages are torchvision's own intermediate outputs."""
    torch.manual_seed(0)
    reference = torchvision.models.get_model(arch, weights=None).eval()
    with torch.no_grad():
        _randomise_norm_stats(reference)
    backbone = TorchvisionBackbone(arch, norm="BN").eval()
    incompatible = backbone.body.load_state_dict(reference.state_dict(), strict=False)
    assert not incompatible.missing_keys
    extractor = create_feature_extractor(reference, return_nodes=nodes)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        ours, theirs = backbone(x), extractor(x)
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name])
        assert ours[name].shape[-1] == 128 // backbone.output_shape()[name].stride
        assert ours[name].shape[1] == backbone.output_shape()[name].channels


def test_resnet_strides_and_channels_match_detectron2_resnet():
    """Same depth, same names, same strides and channels as detectron2's own ResNet-50."""
    cfg = get_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    d2 = BACKBONE_REGISTRY.get("build_resnet_backbone")(cfg, ShapeSpec(channels=3)).output_shape()
    ours = TorchvisionBackbone("resnet50").output_shape()
    assert {k: (v.stride, v.channels) for k, v in ours.items()} == \
        {k: (v.stride, v.channels) for k, v in d2.items()}


def test_fpn_outputs_match_detectron2_resnet_fpn():
    """The FPN over MobileNetV2 exposes what detectron2's ResNet-FPN does: p2..p6, strides 4..64."""
    cfg = _cfg(ARCH="mobilenet_v2")
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    ours = BACKBONE_REGISTRY.get("build_torchvision_fpn_backbone")(cfg, ShapeSpec(channels=3))
    d2 = BACKBONE_REGISTRY.get("build_resnet_fpn_backbone")(cfg, ShapeSpec(channels=3))
    assert {k: v.stride for k, v in ours.output_shape().items()} == \
        {k: v.stride for k, v in d2.output_shape().items()}
    with torch.no_grad():
        out = ours.eval()(torch.randn(1, 3, 128, 160))
    assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == \
        {k: (-(-128 // s.stride), -(-160 // s.stride)) for k, s in ours.output_shape().items()}


def test_norms_and_freezing():
    frozen = TorchvisionBackbone("mobilenet_v2", norm="GN", freeze_at=2)
    norms = [m for m in frozen.body.modules() if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert norms and all(isinstance(m, nn.GroupNorm) for m in norms)
    assert all(m.num_channels % m.num_groups == 0 and m.num_groups <= 32 for m in norms)
    # freeze_at=2: stem and res2 (features.0-3 of MobileNetV2) frozen, the rest trainable
    for name, p in frozen.body.named_parameters():
        index = int(name.split(".")[1])
        assert p.requires_grad == (index > 3), name

    bn = TorchvisionBackbone("resnet18", norm="BN", freeze_at=1)
    assert isinstance(bn.body.bn1, FrozenBatchNorm2d)  # the frozen stem's BN is frozen for real
    assert isinstance(bn.body.layer1[0].bn1, nn.BatchNorm2d)
    assert not any(p.requires_grad for p in bn.body.conv1.parameters())
    assert all(p.requires_grad for p in bn.body.layer1.parameters())

    sync = TorchvisionBackbone("resnet18", norm="SyncBN")
    assert isinstance(sync.body.layer2[0].bn1, nn.SyncBatchNorm)
    fbn = TorchvisionBackbone("resnet18", norm="FrozenBN")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fbn.modules())
    # MobileNetV3's BatchNorms use eps=1e-3; converting must keep it
    v3 = TorchvisionBackbone("mobilenet_v3_small", norm="FrozenBN")
    assert {m.eps for m in v3.modules() if isinstance(m, FrozenBatchNorm2d)} == {1e-3}
    trained = TorchvisionBackbone("resnet18", norm="BN").train()
    trained(torch.randn(2, 3, 64, 64))  # train mode with BN runs and updates statistics
    assert trained.body.bn1.num_batches_tracked.item() == 1


@pytest.mark.parametrize("key, value, message", [
    ("ARCH", "mobilenetv2", "mobilenet_v2"),
    ("NORM", "LN", "FrozenBN"),
    ("OUT_FEATURES", ["res6"], "res2"),
])
def test_bad_config_values_are_user_errors(key, value, message):
    cfg = _cfg(**{key: value})
    with pytest.raises(D2SegError, match=message) as err:
        BACKBONE_REGISTRY.get("build_torchvision_backbone")(cfg, ShapeSpec(channels=3))
    assert "MODEL.TORCHVISION" in str(err.value) and "\n" not in str(err.value)


def test_fpn_in_features_must_be_backbone_outputs():
    cfg = _cfg(OUT_FEATURES=["res3", "res4", "res5"])
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    with pytest.raises(D2SegError, match="res2"):
        BACKBONE_REGISTRY.get("build_torchvision_fpn_backbone")(cfg, ShapeSpec(channels=3))
