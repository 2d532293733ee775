"""The demo generator: deterministic, small, and its three forms agree with each other.

The references are independent of the generator: pycocotools decodes the RLE masks and computes
areas and boxes, the panoptic PNG is decoded with plain numpy (R + 256 G + 256^2 B), PIL reads
the images.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from d2seg.data.demo import ensure_demo, generate_demo
from d2seg.data.manifest import bundled_manifest_folder, load_manifest

REPO = Path(__file__).resolve().parents[2]

SMALL = {"train": 10, "val": 4}


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("demo") / "d", seed=0, splits=SMALL)


def _segment_ids(png: Path) -> np.ndarray:
    rgb = np.array(Image.open(png), dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path, demo):
    again = generate_demo(tmp_path / "again", seed=0, splits=SMALL)
    other = generate_demo(tmp_path / "other", seed=1, splits=SMALL)
    first = _hashes(demo)
    assert len(first) > 3 * sum(SMALL.values())
    assert _hashes(again) == first
    other_hashes = _hashes(other)
    assert other_hashes.keys() == first.keys()
    changed = [k for k in first if other_hashes[k] != first[k] and k.endswith(".jpg")]
    assert len(changed) == sum(SMALL.values())


@pytest.mark.parametrize("split", ["train", "val"])
def test_instances_equal_panoptic_segments_and_areas_boxes_match_pycocotools(demo, split):
    coco = COCO(str(demo / split / "instances.json"))
    panoptic = json.loads((demo / split / "panoptic.json").read_text())
    pan_cats = {c["id"]: c for c in panoptic["categories"]}
    assert {c["id"] for c in coco.dataset["categories"]} == {k for k, c in pan_cats.items() if c["isthing"]}
    assert sorted(pan_cats) != list(range(1, len(pan_cats) + 1))  # ids deliberately non-contiguous
    assert len(coco.getImgIds()) == SMALL[split] == len(panoptic["annotations"])
    n_things = 0
    for ann in panoptic["annotations"]:
        ids = _segment_ids(demo / split / "panoptic" / ann["file_name"])
        img = coco.imgs[ann["image_id"]]
        assert ids.shape == (img["height"], img["width"])
        image = Image.open(demo / split / "images" / img["file_name"])
        assert image.size == (img["width"], img["height"]) and image.mode == "RGB"
        listed = {s["id"] for s in ann["segments_info"]}
        assert set(np.unique(ids).tolist()) == listed  # every pixel belongs to a listed segment
        thing_segments = [s for s in ann["segments_info"] if pan_cats[s["category_id"]]["isthing"]]
        instances = coco.loadAnns(coco.getAnnIds(imgIds=[ann["image_id"]]))
        assert len(instances) == len(thing_segments)
        for seg in ann["segments_info"]:
            mask = ids == seg["id"]
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            assert seg["area"] == int(mask_utils.area(rle)) == int(mask.sum())
            assert seg["bbox"] == [int(v) for v in mask_utils.toBbox(rle)]
        for inst in instances:  # each instance mask is exactly one thing segment
            decoded = coco.annToMask(inst).astype(bool)
            matching = [s for s in thing_segments if np.array_equal(ids == s["id"], decoded)]
            assert len(matching) == 1 and matching[0]["category_id"] == inst["category_id"]
            assert inst["area"] == int(mask_utils.area(coco.annToRLE(inst)))
            assert inst["bbox"] == [float(v) for v in mask_utils.toBbox(coco.annToRLE(inst))]
            assert inst["iscrowd"] == 0
        n_things += len(instances)
    assert n_things >= 2 * SMALL[split]


def test_semantic_png_equals_panoptic_mapped_to_classes(demo):
    panoptic = json.loads((demo / "train" / "panoptic.json").read_text())
    order = [c["id"] for c in panoptic["categories"]]  # semantic label i = categories[i]
    for ann in panoptic["annotations"]:
        ids = _segment_ids(demo / "train" / "panoptic" / ann["file_name"])
        expected = np.full(ids.shape, 255, np.uint8)
        for seg in ann["segments_info"]:
            expected[ids == seg["id"]] = order.index(seg["category_id"])
        semantic = np.array(Image.open(demo / "train" / "semantic" / ann["file_name"]))
        assert semantic.dtype == np.uint8 and np.array_equal(semantic, expected)


def test_scenes_have_stuff_occlusion_and_variety(demo):
    panoptic = json.loads((demo / "train" / "panoptic.json").read_text())
    cats = {c["id"]: c for c in panoptic["categories"]}
    seen, overlapping = set(), 0
    for ann in panoptic["annotations"]:
        things = [s for s in ann["segments_info"] if cats[s["category_id"]]["isthing"]]
        seen |= {s["category_id"] for s in ann["segments_info"]}
        boxes = [s["bbox"] for s in things]
        overlapping += any(a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3]
                           and b[1] < a[1] + a[3] for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert seen == set(cats)  # every class appears
    assert overlapping >= 2


@pytest.mark.slow  # generates all 250 images (about 4 s alone, more on a loaded machine)
def test_demo_manifest_generates_the_full_dataset_once_and_it_is_small(tmp_path):
    manifest = tmp_path / "demo_instances.yaml"
    manifest.write_text((bundled_manifest_folder() / "demo_instances.yaml").read_text())
    m = load_manifest(manifest)  # ``generate: demo``: the data appear beside the manifest
    folder = tmp_path / "demo"
    assert m.splits["train"].annotations == folder / "train" / "instances.json"
    stamp = (folder / ".complete").stat().st_mtime_ns
    before = _hashes(folder)
    assert ensure_demo(folder) == folder and load_manifest(manifest) == m
    assert (folder / ".complete").stat().st_mtime_ns == stamp  # not regenerated
    total = sum((folder / p).stat().st_size for p in before)
    assert total < 20 * 1024 * 1024
    assert len(list((folder / "train" / "images").iterdir())) == 200
    assert len(list((folder / "val" / "images").iterdir())) == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "demo_instances.yaml"]  # no temp dirs


def test_ensure_demo_regenerates_an_incomplete_or_different_copy(tmp_path):
    folder = ensure_demo(tmp_path / "d", splits=SMALL)
    reference = _hashes(folder)
    (folder / "train" / "instances.json").unlink()
    (folder / ".complete").unlink()  # as if interrupted
    assert ensure_demo(tmp_path / "d", splits=SMALL) == folder
    assert _hashes(folder) == reference
    ensure_demo(tmp_path / "d", seed=3, splits=SMALL)
    assert _hashes(folder) != reference
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
