"""COCO panoptic export: round trip through panopticapi's reader and PQ against itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from d2seg.evaluation.panoptic_quality import pq_compute_folders
from d2seg.io.files import TEMP_SUFFIX
from d2seg.panoptic.combine import InstancePredictions, combine_panoptic
from d2seg.io.panoptic import id_to_rgb
from d2seg.panoptic.export import export_coco_panoptic

rgb2id = pytest.importorskip("panopticapi.utils").rgb2id

CATEGORIES = [{"id": 11, "name": "cat", "isthing": 1}, {"id": 12, "name": "dog", "isthing": 1},
              {"id": 40, "name": "sky", "isthing": 0}, {"id": 41, "name": "grass", "isthing": 0}]
THING_TO_CAT = {0: 11, 1: 12}
STUFF_TO_CAT = {1: 40, 2: 41}  # detectron2 convention: stuff label 0 = things


def _predictions(n_images=3):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n_images):
        h, w = 48 + 8 * i, 64
        masks = torch.rand(5, h, w, generator=g) > 0.7
        inst = InstancePredictions(torch.rand(5, generator=g),
                                   torch.randint(0, 2, (5,), generator=g), masks)
        sem = torch.randint(0, 3, (h, w), generator=g)
        pan = combine_panoptic(inst, sem, score_threshold=0.2, stuff_area_threshold=30)
        image = {"id": 100 + i, "file_name": f"dir/img_{i}.jpg", "height": h, "width": w}
        out.append((image, pan.panoptic_seg, pan.segments_info))
    return out


def test_id_to_rgb_inverts_panopticapi_rgb2id():
    ids = np.random.default_rng(0).integers(0, 1 << 24, size=(30, 40))
    assert np.array_equal(rgb2id(id_to_rgb(ids).astype(np.uint32)), ids)


def test_round_trip_through_panopticapi(tmp_path, panoptic_helpers):
    predictions = _predictions()
    out_json = tmp_path / "pred" / "panoptic.json"
    data = export_coco_panoptic(predictions, out_json, CATEGORIES,
                                thing_label_to_category=THING_TO_CAT,
                                stuff_label_to_category=STUFF_TO_CAT)
    assert json.loads(out_json.read_text()) == data
    png_dir = out_json.with_suffix("")
    for (image, pan, infos), ann in zip(predictions, data["annotations"]):
        # read back the way panopticapi does (PIL + rgb2id)
        ids = rgb2id(np.array(Image.open(png_dir / ann["file_name"]), dtype=np.uint32))
        assert np.array_equal(ids, pan.numpy())
        assert ann["image_id"] == image["id"] and ann["file_name"] == f"img_{image['id'] - 100}.png"
        by_id = {s["id"]: s for s in infos}
        assert {s["id"] for s in ann["segments_info"]} == set(np.unique(ids)) - {0}
        for seg in ann["segments_info"]:
            ys, xs = np.nonzero(ids == seg["id"])
            assert seg["area"] == ys.size
            assert seg["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                   ys.max() - ys.min() + 1]
            src = by_id[seg["id"]]
            table = THING_TO_CAT if src["isthing"] else STUFF_TO_CAT
            assert seg["category_id"] == table[src["category_id"]]
            assert seg["isthing"] == int(src["isthing"]) and seg["iscrowd"] == 0
    ref = panoptic_helpers.reference_pq(out_json, png_dir, out_json, png_dir)
    ours = pq_compute_folders(out_json, png_dir, out_json, png_dir)
    assert ref["All"]["pq"] == 1.0 and ours["All"] == ref["All"]
    assert ours["per_class"] == ref["per_class"]
    assert not list(png_dir.glob(f".*{TEMP_SUFFIX}"))
    assert not list(out_json.parent.glob(f".*{TEMP_SUFFIX}"))


def test_detectron2_panoptic_loader_reads_the_export(tmp_path):
    """detectron2's own COCO panoptic loader accepts the files."""
    from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json

    out_json = tmp_path / "panoptic.json"
    predictions = _predictions(2)
    export_coco_panoptic(predictions, out_json, CATEGORIES, thing_label_to_category=THING_TO_CAT,
                         stuff_label_to_category=STUFF_TO_CAT)
    meta = {"thing_dataset_id_to_contiguous_id": {11: 0, 12: 1},
            "stuff_dataset_id_to_contiguous_id": {40: 0, 41: 1, 11: 2, 12: 3}}
    (tmp_path / "images").mkdir()
    for i in range(2):
        (tmp_path / "images" / f"img_{i}.jpg").write_bytes(b"")
    records = load_coco_panoptic_json(str(out_json), str(tmp_path / "images"),
                                      str(out_json.with_suffix("")), meta)
    assert len(records) == 2
    assert records[0]["pan_seg_file_name"].endswith("img_0.png")
    contiguous = {0: 11, 1: 12}
    for record, (_, _, infos) in zip(records, predictions):
        things = sorted((s["id"], contiguous[s["category_id"]]) for s in record["segments_info"]
                        if s["isthing"])
        expected = sorted((s["id"], THING_TO_CAT[s["category_id"]]) for s in infos if s["isthing"])
        assert things == expected


def test_same_file_name_in_two_folders_gives_two_pngs(tmp_path):
    """Images ``a/x.jpg`` and ``b/x.jpg``: two PNGs, ``x.png`` and ``x_2.png`` in input order,
    each read back by panopticapi's rgb2id as its own map, and each annotation names its PNG."""
    first, second = _predictions(2)
    first[0].update(file_name="a/x.jpg")
    second[0].update(file_name="b/x.jpg")
    out_json = tmp_path / "panoptic.json"
    data = export_coco_panoptic([first, second], out_json, CATEGORIES,
                                thing_label_to_category=THING_TO_CAT,
                                stuff_label_to_category=STUFF_TO_CAT)
    png_dir = out_json.with_suffix("")
    assert sorted(p.name for p in png_dir.iterdir()) == ["x.png", "x_2.png"]
    assert [a["file_name"] for a in data["annotations"]] == ["x.png", "x_2.png"]
    assert [i["file_name"] for i in data["images"]] == ["a/x.jpg", "b/x.jpg"]
    for (_, pan, _), ann in zip((first, second), data["annotations"]):
        ids = rgb2id(np.array(Image.open(png_dir / ann["file_name"]), dtype=np.uint32))
        assert np.array_equal(ids, pan.numpy())
