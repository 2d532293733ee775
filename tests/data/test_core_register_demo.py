"""The repository's demo manifests register and load in all three forms with complete metadata.

The manifests are copied into a temporary folder beside a small demo dataset (the generator's own
test covers ``generate: demo`` at full size). Loaded dataset dicts are compared with pycocotools,
PIL and detectron2's own loader.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from d2seg.data import manifest as mf
from d2seg.config.prepare import check_config_matches_dataset, num_classes
from d2seg.data.register import register_manifest
from d2seg.data.demo import generate_demo
from d2seg.data.register import unregister_manifest
from d2seg.errors import D2SegError

REPO = Path(__file__).resolve().parents[2]
SMALL = {"train": 12, "val": 5}


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """{kind: (manifest, registered names)} for the three demo manifests under unique names."""
    folder = tmp_path_factory.mktemp("demo_manifests")
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("D2SEG_CACHE", str(cache))
    suffix = uuid.uuid4().hex[:6]
    generate_demo(folder / "demo", seed=0, splits=SMALL)
    out = {}
    try:
        for stem in ("demo_instances", "demo_panoptic", "demo_semseg"):
            text = (mf.bundled_manifest_folder() / f"{stem}.yaml").read_text().replace("generate: demo\n", "")
            (folder / f"{stem}.yaml").write_text(text.replace(f"name: {stem}", f"name: {stem}{suffix}"))
            m = mf.load_manifest(folder / f"{stem}.yaml")
            out[m.kind] = (m, register_manifest(m))
        yield out
    finally:
        for m, _ in out.values():
            unregister_manifest(m.name)
        mp.undo()


def _get(name):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    return DatasetCatalog.get(name), MetadataCatalog.get(name)


def test_instances_form_matches_pycocotools(registered):
    m, names = registered["coco_instances"]
    assert names == [f"{m.name}_train", f"{m.name}_val"]
    for split, name in zip(("train", "val"), names):
        dicts, meta = _get(name)
        coco = COCO(str(m.splits[split].annotations))
        assert len(dicts) == len(coco.imgs) == SMALL[split]
        cat_ids = sorted(coco.getCatIds())
        assert meta.thing_classes == [coco.cats[i]["name"] for i in cat_ids]
        assert meta.thing_dataset_id_to_contiguous_id == {c: i for i, c in enumerate(cat_ids)}
        assert meta.evaluator_type == "coco" and meta.mask_format == "bitmask"
        assert meta.json_file == str(m.splits[split].annotations)
        assert len(meta.thing_colors) == 4 and meta.ignore_label == 255
        assert sum(len(d["annotations"]) for d in dicts) == len(coco.anns)
        for record in dicts[:5]:
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[record["image_id"]]))
            assert Path(record["file_name"]) == m.splits[split].images / coco.imgs[record["image_id"]]["file_name"]
            for ours, ref in zip(record["annotations"], anns):
                assert cat_ids[ours["category_id"]] == ref["category_id"]
                mask = mask_utils.decode(ours["segmentation"])
                assert np.array_equal(mask, coco.annToMask(ref))


def test_panoptic_standard_form_matches_detectron2s_loader(registered):
    from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json

    m, names = registered["coco_panoptic"]
    assert names == [f"{m.name}_{s}{v}" for s in ("train", "val") for v in ("", "_separated", "_stuffonly")]
    dicts, meta = _get(f"{m.name}_val")
    split = m.splits["val"]
    reference = load_coco_panoptic_json(str(split.annotations), str(split.images), str(split.panoptic_root),
                                        {"thing_dataset_id_to_contiguous_id": meta.thing_dataset_id_to_contiguous_id,
                                         "stuff_dataset_id_to_contiguous_id": meta.stuff_dataset_id_to_contiguous_id})
    assert len(dicts) == len(reference) == SMALL["val"]
    for ours, ref in zip(dicts, reference):
        for key in ("file_name", "image_id", "pan_seg_file_name", "segments_info"):
            assert ours[key] == ref[key]
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.panoptic_json == str(split.annotations)
    assert meta.thing_classes == meta.stuff_classes == ["square", "disc", "triangle", "star", "sky", "ground", "water"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 5: 2, 7: 3}
    assert meta.stuff_dataset_id_to_contiguous_id == {10: 4, 12: 5, 15: 6}


def test_panoptic_separated_form_has_instances_and_derived_semantic_labels(registered):
    m, _ = registered["coco_panoptic"]
    dicts, meta = _get(f"{m.name}_train_separated")
    split = m.splits["train"]
    assert meta.thing_classes == ["square", "disc", "triangle", "star"]
    assert meta.stuff_classes == ["things", "sky", "ground", "water"]
    assert meta.stuff_dataset_id_to_contiguous_id == {0: 0, 10: 1, 12: 2, 15: 3}
    assert meta.mask_format == "bitmask" and meta.evaluator_type == "coco_panoptic_seg"
    assert num_classes(f"{m.name}_train_separated") == {"thing": 4, "stuff": 3, "sem_seg_head": 4}
    coco = COCO(str(split.annotations.parent / "instances.json"))  # the generator's own instances
    assert len(dicts) == SMALL["train"]
    for record in dicts[:6]:
        assert Path(record["sem_seg_file_name"]).parent == Path(meta.sem_seg_root)
        sem = np.array(Image.open(record["sem_seg_file_name"]))
        ref = coco.loadAnns(coco.getAnnIds(imgIds=[record["image_id"]]))
        things = np.zeros(sem.shape, bool)
        for ann in ref:
            things |= coco.annToMask(ann).astype(bool)
        assert np.array_equal(sem == 0, things)  # every thing pixel, and only those, is label 0
        assert set(np.unique(sem[~things]).tolist()) <= {1, 2, 3}
        got = sorted((a["category_id"], int(mask_utils.area(a["segmentation"]))) for a in record["annotations"])
        want = sorted((meta.thing_dataset_id_to_contiguous_id[a["category_id"]], int(a["area"])) for a in ref)
        assert got == want
    stuff, stuff_meta = _get(f"{m.name}_train_stuffonly")
    assert [d["sem_seg_file_name"] for d in stuff] == [d["sem_seg_file_name"] for d in dicts]
    assert stuff_meta.evaluator_type == "sem_seg"


def test_semantic_form_matches_files_on_disk(registered):
    m, names = registered["sem_seg"]
    dicts, meta = _get(names[1])
    split = m.splits["val"]
    assert meta.stuff_classes == m.classes and meta.evaluator_type == "sem_seg"
    assert meta.ignore_label == 255 and meta.sem_seg_root == str(split.sem_seg_root)
    assert [Path(d["file_name"]).stem for d in dicts] == sorted(p.stem for p in split.images.iterdir())
    for d in dicts:
        assert Path(d["sem_seg_file_name"]).stem == Path(d["file_name"]).stem
    assert num_classes(names[0]) == {"thing": 0, "stuff": 7, "sem_seg_head": 7}


def test_config_mismatches_are_clear_errors(registered):
    from d2seg.runners.diagnostics import tiny_mask_rcnn_cfg

    inst = registered["coco_instances"][1]
    pan = registered["coco_panoptic"][0].name
    cfg = tiny_mask_rcnn_cfg()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 4
    check_config_matches_dataset(cfg, inst)  # matches: no error
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    with pytest.raises(D2SegError, match="is 3 but dataset .* has 4 thing classes") as info:
        check_config_matches_dataset(cfg, inst)
    assert info.value.where == "MODEL.ROI_HEADS.NUM_CLASSES" and info.value.hint == "set it to 4"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 4
    cfg.INPUT.MASK_FORMAT = "polygon"
    with pytest.raises(D2SegError, match="RLE masks") as info:
        check_config_matches_dataset(cfg, inst)
    assert info.value.where == "INPUT.MASK_FORMAT"
    cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.MODEL.META_ARCHITECTURE = "PanopticFPN"
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 4
    check_config_matches_dataset(cfg, [f"{pan}_train_separated", f"{pan}_val_separated"])
    with pytest.raises(D2SegError, match="separated panoptic form") as info:
        check_config_matches_dataset(cfg, [f"{pan}_train"])
    assert info.value.hint == f"use '{pan}_train_separated'"
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    with pytest.raises(D2SegError, match=r"needs 4 \(stuff classes \+ 1"):
        check_config_matches_dataset(cfg, [f"{pan}_train_separated"])
    with pytest.raises(D2SegError, match="have different classes"):
        check_config_matches_dataset(cfg, [f"{pan}_train_separated", registered["sem_seg"][1][0]])
    with pytest.raises(D2SegError, match="is not registered"):
        check_config_matches_dataset(cfg, ["no_such_dataset"])


def test_panoptic_with_given_instances_uses_them_and_checks_their_categories(registered, tmp_path):
    import json

    pan, _ = registered["coco_panoptic"]
    demo = pan.path.parent / "demo"
    name = f"given{uuid.uuid4().hex[:6]}"
    text = (f"name: {name}\nkind: coco_panoptic\nroot: {demo}\nsplits:\n  val:\n    images: val/images\n"
            "    annotations: val/panoptic.json\n    panoptic_root: val/panoptic\n"
            "    instances: {instances}\n")
    (tmp_path / "a.yaml").write_text(text.format(instances="val/instances.json"))
    try:
        names = register_manifest(mf.load_manifest(tmp_path / "a.yaml"))
        dicts, meta = _get(names[1])
        assert meta.json_file == str(demo / "val" / "instances.json") and meta.mask_format == "bitmask"
        coco = COCO(str(demo / "val" / "instances.json"))
        assert sum(len(d["annotations"]) for d in dicts) == len(coco.anns)
        assert all("sem_seg_file_name" in d for d in dicts)
    finally:
        unregister_manifest(name)
    bad = json.loads((demo / "val" / "instances.json").read_text())
    bad["categories"] = bad["categories"][:3]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    (tmp_path / "b.yaml").write_text(text.format(instances=tmp_path / "bad.json"))
    with pytest.raises(D2SegError, match="differ from the panoptic JSON's thing categories") as info:
        register_manifest(mf.load_manifest(tmp_path / "b.yaml"))
    assert info.value.file == str(tmp_path / "bad.json")
