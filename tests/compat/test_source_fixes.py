"""Each install-time rewrite in d2seg.compat.source_fixes, exercised through detectron2 itself.

Every test here fails on the unmodified v0.6 sources with today's numpy / Pillow / setuptools.
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from d2seg.compat import source_fixes


def test_every_rewrite_is_applied_to_the_installed_sources():
    import detectron2

    root = os.path.dirname(os.path.dirname(detectron2.__file__))
    for path, old, new, count, why in source_fixes.REWRITES:
        text = open(os.path.join(root, path), encoding="utf-8").read()
        if new:
            assert text.count(new) >= count, f"{path}: rewrite missing ({why})"
        assert old not in text.replace(new, "") if new else old not in text, (
            f"{path} still has {old!r} ({why})")


def test_rewrite_refuses_a_changed_source():
    path = source_fixes.REWRITES[0][0]
    with pytest.raises(source_fixes.SourceChanged, match=path):
        source_fixes.apply({p: b"" for p, *_ in source_fixes.REWRITES})


def test_data_imports_and_extent_transform_uses_bilinear():
    # Image.LINEAR was removed in Pillow 10; the default argument broke `import detectron2.data`.
    from detectron2.data import transforms as T

    t = T.ExtentTransform(src_rect=(0, 0, 8, 8), output_size=(4, 4))
    assert t.interp == Image.BILINEAR
    img = np.arange(64, dtype=np.uint8).reshape(8, 8)
    out = t.apply_image(img)
    assert out.shape == (4, 4)
    # bilinear shrink of a ramp keeps it increasing along both axes
    assert (np.diff(out.astype(int), axis=1) > 0).all()


def _brute_force_miou(preds, gts, num_classes, ignore):
    ious = []
    for c in range(num_classes):
        inter = union = 0
        for p, g in zip(preds, gts):
            valid = g != ignore
            for pv, gv in zip(p[valid].ravel(), g[valid].ravel()):
                inter += int(pv == c and gv == c)
                union += int(pv == c or gv == c)
        if union:
            ious.append(inter / union)
    return 100 * sum(ious) / len(ious)


def test_sem_seg_evaluator_matches_hand_computed_miou(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import SemSegEvaluator

    rng = np.random.default_rng(0)
    num_classes, ignore = 3, 255
    records, preds, gts = [], [], []
    for i in range(2):
        gt = rng.integers(0, num_classes, (6, 7)).astype(np.uint8)
        gt[0, :3] = ignore
        pred = np.where(rng.random((6, 7)) < 0.7, gt % num_classes, rng.integers(0, num_classes, (6, 7)))
        Image.fromarray(gt).save(tmp_path / f"gt{i}.png")
        records.append({"file_name": f"img{i}.jpg", "sem_seg_file_name": str(tmp_path / f"gt{i}.png")})
        preds.append(pred)
        gts.append(gt)
    name = f"d2seg_test_semseg_{random.randrange(10**9)}"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c"], ignore_label=ignore)

    evaluator = SemSegEvaluator(name, distributed=False)
    evaluator.reset()
    for rec, pred in zip(records, preds):
        logits = torch.nn.functional.one_hot(torch.as_tensor(pred), num_classes).permute(2, 0, 1).float()
        evaluator.process([{"file_name": rec["file_name"]}], [{"sem_seg": logits}])
    result = evaluator.evaluate()["sem_seg"]
    assert result["mIoU"] == pytest.approx(_brute_force_miou(preds, gts, num_classes, ignore))


def test_class_histogram_is_printed_with_correct_counts(caplog):
    from detectron2.data.build import print_instances_class_histogram

    classes = ["cat", "dog", "bird"]
    dicts = [
        {"annotations": [{"category_id": 0}, {"category_id": 2}, {"category_id": 2}]},
        {"annotations": [{"category_id": 2}, {"category_id": 1, "iscrowd": 1}]},
    ]
    with caplog.at_level(logging.INFO):
        print_instances_class_histogram(dicts, classes)
    text = caplog.text
    assert "Distribution of instances among all 3 categories" in text
    # brute force: non-crowd counts per class
    counts = {c: 0 for c in classes}
    for d in dicts:
        for a in d["annotations"]:
            if not a.get("iscrowd"):
                counts[classes[a["category_id"]]] += 1
    for name, n in counts.items():
        row = [line for line in text.splitlines() if f" {name} " in line][0]
        cells = [c.strip() for c in row.split("|")]
        assert cells[cells.index(name) + 1] == str(n)


def test_model_zoo_config_file_resolves_without_pkg_resources():
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    path = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    assert os.path.isfile(path)
    cfg = get_cfg()
    cfg.merge_from_file(path)
    assert cfg.MODEL.MASK_ON is True
    with pytest.raises(RuntimeError, match="not available"):
        model_zoo.get_config_file("no/such.yaml")


def test_pascal_voc_loader_reads_split_file(tmp_path):
    from detectron2.data.datasets.pascal_voc import load_voc_instances

    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("000001\n000002\n")
    for fid, (cls, box) in {"000001": ("dog", (1, 2, 30, 40)), "000002": ("cat", (5, 6, 7, 8))}.items():
        (tmp_path / "Annotations" / f"{fid}.xml").write_text(
            f"<annotation><size><width>50</width><height>60</height></size><object><name>{cls}</name>"
            f"<bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax>"
            "</bndbox></object></annotation>"
        )
    dicts = load_voc_instances(str(tmp_path), "train", ["cat", "dog"])
    assert [d["image_id"] for d in dicts] == ["000001", "000002"]
    assert dicts[0]["annotations"][0]["category_id"] == 1
    assert dicts[0]["annotations"][0]["bbox"] == [0.0, 1.0, 30.0, 40.0]  # 1-based -> 0-based corner
    assert dicts[0]["height"] == 60


def test_export_and_flop_counting_import_without_caffe2():
    # detectron2.export imported caffe2 (gone from torch 2), taking utils.analysis down with it.
    from detectron2.export import TracingAdapter  # noqa: F401
    from detectron2.utils.analysis import FlopCountAnalysis

    model = torch.nn.Linear(4, 3)
    flops = FlopCountAnalysis(model, (torch.zeros(2, 4),))
    assert flops.total() == 2 * 4 * 3  # fvcore counts one flop per multiply-add


def test_all_gather_serializes_without_typed_storage(tmp_path):
    # detectron2's comm.all_gather pickled objects into a tensor through torch.ByteStorage,
    # which torch 2 deprecates: every multi-process evaluation warned on every rank
    import pickle
    import warnings

    import torch.distributed as dist
    from detectron2.utils import comm

    data = {"image_id": 7, "scores": np.arange(5, dtype=np.float32)}
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tensor = comm._serialize_to_tensor(data, dist.group.WORLD)
    finally:
        dist.destroy_process_group()
    assert tensor.dtype == torch.uint8 and tensor.numel() == len(pickle.dumps(data))
    back = pickle.loads(tensor.numpy().tobytes())
    assert back["image_id"] == 7 and np.array_equal(back["scores"], data["scores"])
