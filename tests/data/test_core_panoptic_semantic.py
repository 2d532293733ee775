"""Semantic labels and instances derived from panoptic PNGs, and their content-keyed cache.

The reference is a per-pixel lookup written independently here: segment id -> category ->
0 for things, 1 + rank among sorted stuff ids for stuff, 255 for pixels of no listed segment.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from d2seg.data.demo import generate_demo
from d2seg.data.panoptic_semantic import derive
from d2seg.errors import D2SegError


def _reference_semantic(png: Path, segments: list[dict], isthing: dict[int, bool]) -> np.ndarray:
    rgb = np.array(Image.open(png).convert("RGB"), dtype=np.int64)
    stuff_rank = {cid: i + 1 for i, cid in enumerate(sorted(c for c, t in isthing.items() if not t))}
    by_segment = {s["id"]: (0 if isthing[s["category_id"]] else stuff_rank[s["category_id"]])
                  for s in segments}
    out = np.empty(rgb.shape[:2], np.uint8)
    for y in range(rgb.shape[0]):
        for x in range(rgb.shape[1]):
            r, g, b = rgb[y, x]
            out[y, x] = by_segment.get(int(r + 256 * g + 65536 * b), 255)
    return out


def test_panopticapi_sample_matches_per_pixel_reference(shared_data, tmp_path):
    root = shared_data / "panopticapi_sample" / "sample_data"
    json_file, png_root = root / "panoptic_examples.json", root / "panoptic_examples"
    data = json.loads(json_file.read_text())
    isthing = {c["id"]: bool(c["isthing"]) for c in data["categories"]}
    derived = derive(json_file, png_root, cache_root=tmp_path)
    instances = json.loads(derived.instances_json.read_text())
    assert {c["id"] for c in instances["categories"]} == {c for c, t in isthing.items() if t}
    for ann in data["annotations"]:
        ours = np.array(Image.open(derived.sem_seg_root / ann["file_name"]))
        assert np.array_equal(ours, _reference_semantic(png_root / ann["file_name"],
                                                        ann["segments_info"], isthing))
        things = [s for s in ann["segments_info"] if isthing[s["category_id"]]]
        mine = [a for a in instances["annotations"] if a["image_id"] == ann["image_id"]]
        # the panoptic JSON's own area, bbox and crowd flags are the independent reference
        assert sorted((a["category_id"], a["area"], [round(v) for v in a["bbox"]], a["iscrowd"]) for a in mine) \
            == sorted((s["category_id"], s["area"], s["bbox"], s["iscrowd"]) for s in things)


def test_cache_is_reused_and_rebuilt_when_a_png_or_the_json_changes(tmp_path):
    demo = generate_demo(tmp_path / "demo", splits={"train": 3})
    json_file, png_root = demo / "train" / "panoptic.json", demo / "train" / "panoptic"
    cache = tmp_path / "cache"
    first = derive(json_file, png_root, cache_root=cache)
    stamp = (first.sem_seg_root / "000001.png").stat().st_mtime_ns
    assert derive(json_file, png_root, cache_root=cache) == first
    assert (first.sem_seg_root / "000001.png").stat().st_mtime_ns == stamp

    data = json.loads(json_file.read_text())
    ann = data["annotations"][0]
    png = png_root / ann["file_name"]
    rgb = np.array(Image.open(png))
    thing = next(s for s in ann["segments_info"] if s["category_id"] in (1, 2, 5, 7))
    stuff = next(s for s in ann["segments_info"] if s["category_id"] == 10)  # sky
    ids = rgb[..., 0].astype(int) + 256 * rgb[..., 1].astype(int) + 65536 * rgb[..., 2].astype(int)
    rgb[ids == thing["id"]] = [stuff["id"] % 256, stuff["id"] // 256, 0]  # the thing becomes sky
    Image.fromarray(rgb).save(png)
    second = derive(json_file, png_root, cache_root=cache)
    assert second.folder != first.folder and first.folder.is_dir()
    new = np.array(Image.open(second.sem_seg_root / ann["file_name"]))
    old = np.array(Image.open(first.sem_seg_root / ann["file_name"]))
    changed = ids == thing["id"]
    assert (old[changed] == 0).all() and (new[changed] == 1).all()  # sky is stuff label 1
    assert np.array_equal(new[~changed], old[~changed])
    isthing = {c["id"]: bool(c["isthing"]) for c in data["categories"]}
    assert np.array_equal(new, _reference_semantic(png, ann["segments_info"], isthing))

    data["categories"] = [dict(c, isthing=1) if c["name"] == "water" else c for c in data["categories"]]
    json_file.write_text(json.dumps(data))
    third = derive(json_file, png_root, cache_root=cache)
    assert third.folder not in (first.folder, second.folder)
    assert sorted(p.name for p in third.folder.parent.iterdir()) == sorted(
        d.folder.name for d in (first, second, third))  # nothing half-written left behind


def test_things_override_and_missing_isthing(tmp_path):
    demo = generate_demo(tmp_path / "demo", splits={"train": 2})
    json_file, png_root = demo / "train" / "panoptic.json", demo / "train" / "panoptic"
    data = json.loads(json_file.read_text())
    for c in data["categories"]:
        del c["isthing"]
    json_file.write_text(json.dumps(data))
    with pytest.raises(D2SegError, match="without 'isthing'") as info:
        derive(json_file, png_root, cache_root=tmp_path / "c")
    assert info.value.where == "categories" and "things:" in info.value.hint
    derived = derive(json_file, png_root, things=("disc", "star"), cache_root=tmp_path / "c")
    instances = json.loads(derived.instances_json.read_text())
    assert {c["name"] for c in instances["categories"]} == {"disc", "star"}
    isthing = {c["id"]: c["name"] in ("disc", "star") for c in data["categories"]}
    ann = data["annotations"][1]
    assert np.array_equal(np.array(Image.open(derived.sem_seg_root / ann["file_name"])),
                          _reference_semantic(png_root / ann["file_name"], ann["segments_info"], isthing))
    with pytest.raises(D2SegError, match="not among the JSON's categories: dot"):
        derive(json_file, png_root, things=("dot",), cache_root=tmp_path / "c")


def test_missing_png_is_named(tmp_path):
    demo = generate_demo(tmp_path / "demo", splits={"train": 2})
    (demo / "train" / "panoptic" / "000002.png").unlink()
    with pytest.raises(D2SegError, match="panoptic PNG not found") as info:
        derive(demo / "train" / "panoptic.json", demo / "train" / "panoptic", cache_root=tmp_path / "c")
    assert info.value.where == "annotations[1] (image_id 2)"
    shutil.rmtree(demo)
