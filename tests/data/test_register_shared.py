"""The real datasets in ../shared/data register through manifests written by the tests.

Expected values come from the files themselves via pycocotools, PIL and plain numpy, never from
d2seg. Manifests use each way of giving paths: an absolute ``root``, relative paths through a
symlink inside the manifest's folder, and absolute split paths.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from d2seg.data import manifest as mf
from d2seg.config.prepare import num_classes
from d2seg.data.register import register_manifest
from d2seg.data.register import unregister_manifest

pytestmark = pytest.mark.shared


@pytest.fixture
def register(tmp_path, monkeypatch):
    """Write a manifest into tmp_path, register it under a unique name, clean up afterwards."""
    monkeypatch.setenv("D2SEG_CACHE", str(tmp_path / "cache"))
    done = []

    def _register(text: str):
        name = f"shared{uuid.uuid4().hex[:8]}"
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"name: {name}\n" + text)
        m = mf.load_manifest(path)
        done.append(name)
        return m, register_manifest(m)

    yield _register
    for name in done:
        unregister_manifest(name)


def _catalog(name):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    return DatasetCatalog.get(name), MetadataCatalog.get(name)


def _poly_mask(segmentation, h, w) -> np.ndarray:
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w)))


def test_fruits_nuts_polygons_through_a_symlink(shared_data, tmp_path, register):
    (tmp_path / "fruits").symlink_to(shared_data / "fruits_nuts" / "data")
    m, names = register("kind: coco_instances\nsplits:\n  all:\n    images: fruits/images\n"
                        "    annotations: fruits/trainval.json\n")
    dicts, meta = _catalog(names[0])
    coco = COCO(str(shared_data / "fruits_nuts" / "data" / "trainval.json"))
    assert len(dicts) == len(coco.imgs) == 18
    assert sum(len(d["annotations"]) for d in dicts) == len(coco.anns) == 165
    assert meta.thing_classes == ["date", "fig", "hazelnut"] and meta.mask_format == "polygon"
    assert num_classes(names[0]) == {"thing": 3, "stuff": 0, "sem_seg_head": None}
    for record in dicts[:3]:
        with Image.open(record["file_name"]) as im:
            assert im.size == (record["width"], record["height"]) == (800, 600)
        refs = coco.loadAnns(coco.getAnnIds(imgIds=[record["image_id"]]))
        for ours, ref in zip(record["annotations"], refs):
            assert ours["category_id"] == ref["category_id"] - 1
            assert np.array_equal(_poly_mask(ours["segmentation"], 600, 800), coco.annToMask(ref))


def test_tiny_coco16_noncontiguous_ids_and_crowd_rle(shared_data, register):
    root = shared_data / "tiny_coco16" / "small_coco"
    m, names = register(f"kind: coco_instances\nroot: {root}\nsplits:\n  train:\n"
                        "    images: train_2017_small\n    annotations: instances_train2017_small.json\n")
    dicts, meta = _catalog(names[0])
    coco = COCO(str(root / "instances_train2017_small.json"))
    cat_ids = sorted(coco.getCatIds())
    assert len(cat_ids) == 80 and max(cat_ids) == 90  # COCO's ids have gaps
    assert meta.thing_dataset_id_to_contiguous_id == {c: i for i, c in enumerate(cat_ids)}
    assert meta.thing_classes[cat_ids.index(90)] == coco.cats[90]["name"]
    assert meta.mask_format == "bitmask"  # the crowd annotation is RLE
    assert len(dicts) == 16 and sum(len(d["annotations"]) for d in dicts) == len(coco.anns) == 197
    crowd = [a for a in coco.anns.values() if a["iscrowd"]]
    assert len(crowd) == 1
    record = next(d for d in dicts if d["image_id"] == crowd[0]["image_id"])
    ours = [a for a in record["annotations"] if a["iscrowd"] == 1]
    assert len(ours) == 1 and cat_ids[ours[0]["category_id"]] == crowd[0]["category_id"]
    assert np.array_equal(mask_utils.decode(ours[0]["segmentation"]), coco.annToMask(crowd[0]))


def test_panopticapi_sample_both_forms(shared_data, register):
    from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json

    root = shared_data / "panopticapi_sample" / "sample_data"
    m, names = register(f"kind: coco_panoptic\nroot: {root}\nsplits:\n  val:\n    images: input_images\n"
                        "    annotations: panoptic_examples.json\n    panoptic_root: panoptic_examples\n")
    data = json.loads((root / "panoptic_examples.json").read_text())
    isthing = {c["id"]: c["isthing"] for c in data["categories"]}
    n_thing, n_stuff = sum(isthing.values()), len(isthing) - sum(isthing.values())
    assert (n_thing, n_stuff) == (80, 53)
    standard, meta = _catalog(names[0])
    reference = load_coco_panoptic_json(str(root / "panoptic_examples.json"), str(root / "input_images"),
                                        str(root / "panoptic_examples"), meta.as_dict())
    assert [(d["file_name"], d["pan_seg_file_name"], d["segments_info"]) for d in standard] == \
        [(d["file_name"], d["pan_seg_file_name"], d["segments_info"]) for d in reference]
    assert num_classes(names[0]) == {"thing": 80, "stuff": 53, "sem_seg_head": 133}

    separated, smeta = _catalog(f"{names[0]}_separated")
    assert num_classes(smeta.name) == {"thing": 80, "stuff": 53, "sem_seg_head": 54}
    assert len(smeta.stuff_dataset_id_to_contiguous_id) == 54
    for record, ann in zip(separated, data["annotations"]):
        rgb = np.array(Image.open(root / "panoptic_examples" / ann["file_name"]), dtype=np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        things = [s for s in ann["segments_info"] if isthing[s["category_id"]]]
        assert len(record["annotations"]) == len(things)
        for ours, seg in zip(record["annotations"], things):
            assert np.array_equal(mask_utils.decode(ours["segmentation"]).astype(bool), ids == seg["id"])
            assert ours["category_id"] == smeta.thing_dataset_id_to_contiguous_id[seg["category_id"]]
        sem = np.array(Image.open(record["sem_seg_file_name"]))
        thing_pixels = np.isin(ids, [s["id"] for s in things])
        assert np.array_equal(sem == 0, thing_pixels)
        unlabeled = ~np.isin(ids, [s["id"] for s in ann["segments_info"]])
        assert (sem[unlabeled] == 255).all() and unlabeled.any()


def test_camvid_semantic_with_absolute_split_paths(shared_data, register):
    classes = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
               "Pedestrian", "Bicyclist"]
    camvid = shared_data / "camvid_val"
    m, names = register(f"kind: sem_seg\nsplits:\n  val:\n    images: {camvid / 'val'}\n"
                        f"    sem_seg_root: {camvid / 'valannot'}\nclasses: {json.dumps(classes)}\n"
                        "ignore_label: 11\n")
    dicts, meta = _catalog(names[0])
    assert len(dicts) == 101 == len(list((camvid / "val").glob("*.png")))
    assert meta.stuff_classes == classes and meta.ignore_label == 11
    assert num_classes(names[0]) == {"thing": 0, "stuff": 11, "sem_seg_head": 11}
    for record in dicts[::50]:
        assert Path(record["file_name"]).name == Path(record["sem_seg_file_name"]).name
        label = np.array(Image.open(record["sem_seg_file_name"]))
        assert label.shape == (360, 480) and label.max() <= 11
