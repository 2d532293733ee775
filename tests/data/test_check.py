"""``d2seg data check``: a corpus of broken datasets, each found with the right kind; --fix."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from d2seg.cli.main import main
from d2seg.data.check import check_coco
from d2seg.data.check_semantic import check_sem_seg
from d2seg.data.fix import fix_coco
from d2seg.data.problems import KINDS
from d2seg.errors import D2SegError

SIZES = {"a.png": (64, 48), "b.png": (64, 48), "c.png": (80, 60)}


def _rect_rle(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def clean_instances() -> dict:
    """Three images, non-contiguous category ids, polygons and one crowd RLE; all valid."""
    return {
        "images": [{"id": i + 1, "file_name": f, "width": w, "height": h}
                   for i, (f, (w, h)) in enumerate(SIZES.items())],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 400.0,
             "bbox": [10, 10, 20, 20], "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]},
            {"id": 11, "image_id": 2, "category_id": 7, "iscrowd": 0, "area": 150.0,
             "bbox": [5, 5, 30, 10], "segmentation": [[5, 5, 35, 5, 20, 15]]},
            {"id": 12, "image_id": 3, "category_id": 7, "iscrowd": 1, "area": 200.0,
             "bbox": [40, 20, 20, 10], "segmentation": _rect_rle(60, 80, 40, 20, 60, 30)},
            {"id": 13, "image_id": 3, "category_id": 3, "iscrowd": 0, "area": 100.0,
             "bbox": [0, 0, 10, 10], "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]},
        ],
    }


def write_dataset(root: Path, data: dict) -> tuple[Path, Path]:
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (w, h) in SIZES.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / name)
    ann = root / "ann.json"
    ann.write_text(json.dumps(data))
    return ann, images


def _ann(d, aid):
    return next(a for a in d["annotations"] if a["id"] == aid)


# Each variant: (kind, image id, annotation id, mutate(data, image folder)) on clean_instances.
def _truncate(images, name):
    raw = (images / name).read_bytes()
    (images / name).write_bytes(raw[: len(raw) // 2])


VARIANTS = {
    "image_missing": (1, None, lambda d, im: (im / "a.png").unlink()),
    "image_unreadable": (2, None, lambda d, im: _truncate(im, "b.png")),
    "image_size_mismatch": (3, None, lambda d, im: d["images"][2].update(width=81)),
    "duplicate_image_id": (2, None, lambda d, im: d["images"].append(
        {"id": 2, "file_name": "c.png", "width": 80, "height": 60})),
    "duplicate_annotation_id": (3, 12, lambda d, im: _ann(d, 13).update(id=12)),
    "duplicate_category_id": (None, None, lambda d, im: d["categories"].append(
        {"id": 7, "name": "dog again"})),
    "unknown_category": (1, 10, lambda d, im: _ann(d, 10).update(category_id=5)),
    "unknown_image": (99, 11, lambda d, im: _ann(d, 11).update(image_id=99)),
    "segmentation_missing": (1, 10, lambda d, im: _ann(d, 10).pop("segmentation")),
    "bbox_missing": (2, 11, lambda d, im: _ann(d, 11).pop("bbox")),
    "bbox_degenerate": (1, 10, lambda d, im: _ann(d, 10).update(bbox=[10, 10, 0, 20])),
    "bbox_outside": (1, 10, lambda d, im: _ann(d, 10).update(bbox=[50, 10, 30, 20])),
    "polygon_malformed": (1, 10, lambda d, im: _ann(d, 10)["segmentation"].append([1, 1, 5, 5])),
    "polygon_outside": (2, 11, lambda d, im: _ann(d, 11).update(
        segmentation=[[5, 5, 90, 5, 20, 15]])),
    "rle_size_mismatch": (3, 12, lambda d, im: _ann(d, 12).update(
        segmentation=_rect_rle(50, 80, 40, 20, 60, 30))),
    "iscrowd_invalid": (1, 10, lambda d, im: _ann(d, 10).update(iscrowd=2)),
    "crowd_not_rle": (2, 11, lambda d, im: _ann(d, 11).update(iscrowd=1)),
    "noncrowd_rle": (None, None, lambda d, im: _ann(d, 12).update(iscrowd=0)),
    "area_missing": (1, 10, lambda d, im: _ann(d, 10).pop("area")),
    "image_without_annotations": (2, None, lambda d, im: d["annotations"].remove(_ann(d, 11))),
}
# odd number of coordinates is also a malformed polygon
ODD_POLYGON = (1, 10, lambda d, im: _ann(d, 10).update(segmentation=[[10, 10, 30, 10, 30, 30, 10]]))


def build_variant(tmp_path, kind):
    data = clean_instances()
    ann, images = write_dataset(tmp_path, data)
    image_id, ann_id, mutate = VARIANTS[kind] if kind in VARIANTS else ODD_POLYGON
    mutate(data, images)
    ann.write_text(json.dumps(data))
    return ann, images, image_id, ann_id


def test_clean_dataset_has_no_problem(tmp_path):
    ann, images = write_dataset(tmp_path, clean_instances())
    result = check_coco(ann, images)
    assert result.problems == [] and result.ok
    # independent counts: pycocotools reads the same file
    coco = COCO(str(ann))
    assert result.counts["images"] == len(coco.imgs)
    assert result.counts["annotations"] == len(coco.anns)
    assert main(["data", "check", str(ann), "--images", str(images)]) == 0


@pytest.mark.parametrize("kind", [*VARIANTS, "polygon_odd"])
def test_each_broken_variant_is_found(tmp_path, kind, capsys):
    ann, images, image_id, ann_id = build_variant(tmp_path, kind)
    expected = "polygon_malformed" if kind == "polygon_odd" else kind
    result = check_coco(ann, images)
    hits = [p for p in result.problems if p.kind == expected]
    assert hits, f"{expected} not found; got {Counter(p.kind for p in result.problems)}"
    assert any(p.image_id == image_id and p.annotation_id == ann_id for p in hits), hits
    # exit status: 1 when something would break or degrade training, 0 with warnings only
    code = main(["data", "check", str(ann), "--images", str(images)])
    assert code == (1 if KINDS[expected] == "error" else 0)
    out = capsys.readouterr().out
    assert expected in out and "image" in out


# Fixable variants: the fixed copy checks without errors and the report lists every change.
UNFIXABLE = {"noncrowd_rle", "image_without_annotations"}


@pytest.mark.parametrize("kind", [k for k in [*VARIANTS, "polygon_odd"] if k not in UNFIXABLE])
def test_fix_output_checks_clean(tmp_path, kind):
    """The fixed copy: input untouched; d2seg's checker finds no error in it; and, judged
    independently of d2seg, pycocotools decodes every annotation to a non-empty mask of its
    image's size with the box inside the image, and detectron2's COCO loader keeps every
    annotation (it drops unusable polygons silently)."""
    from detectron2.data.datasets import load_coco_json

    ann, images, image_id, ann_id = build_variant(tmp_path, kind)
    before = ann.read_bytes()
    out, report, changes = fix_coco(ann, tmp_path / "fixed" / "ann.json", images)
    assert ann.read_bytes() == before, "the input must not change"
    after = check_coco(out, images)
    assert after.ok, [p for p in after.errors]
    expected = "polygon_malformed" if kind == "polygon_odd" else kind
    assert expected not in after.by_kind()
    logged = json.loads(report.read_text())["changes"]
    assert len(logged) == len(changes) >= 1
    # pycocotools loads the fixed file and all annotation ids are unique
    coco = COCO(str(out))
    fixed = json.loads(out.read_text())
    assert len(coco.anns) == len(fixed["annotations"])
    assert len({a["id"] for a in fixed["annotations"]}) == len(fixed["annotations"])
    for a in coco.anns.values():
        img = coco.imgs[a["image_id"]]
        mask = coco.annToMask(a)
        assert mask.shape == (img["height"], img["width"]) and mask.any(), a["id"]
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0, a["id"]
        assert x + w <= img["width"] + 1e-6 and y + h <= img["height"] + 1e-6, a["id"]
    records = load_coco_json(str(out), str(images), dataset_name=None)
    kept = sum(len(r.get("annotations", [])) for r in records)
    assert kept == len(fixed["annotations"])


def test_fix_values_match_independent_computation(tmp_path):
    data = clean_instances()
    ann, images = write_dataset(tmp_path, data)
    _ann(data, 11).update(iscrowd=1)  # crowd polygon -> RLE
    _ann(data, 10).update(bbox=[50, 10, 30, 20])  # sticks out of the 64 px wide image
    _ann(data, 13).update(segmentation=[[-5, -5, 10, -5, 10, 10, -5, 10]])  # 5 px outside
    ann.write_text(json.dumps(data))
    out, _, _ = fix_coco(ann, tmp_path / "fixed.json", images)
    fixed = {a["id"]: a for a in json.loads(out.read_text())["annotations"]}
    # crowd polygon became an RLE with exactly the polygon's pixels
    rles = mask_utils.frPyObjects([[5, 5, 35, 5, 20, 15]], 48, 64)
    poly = mask_utils.decode(mask_utils.merge(rles))
    assert isinstance(fixed[11]["segmentation"], dict)
    assert np.array_equal(mask_utils.decode(fixed[11]["segmentation"]), poly)
    assert fixed[10]["bbox"] == [50.0, 10.0, 14.0, 20.0]  # clipped at x = 64
    assert fixed[13]["segmentation"] == [[0, 0, 10, 0, 10, 10, 0, 10]]


def test_fix_refuses_to_overwrite_input(tmp_path):
    ann, images = write_dataset(tmp_path, clean_instances())
    with pytest.raises(D2SegError, match="overwrite"):
        fix_coco(ann, ann, images)
    assert main(["data", "check", str(ann), "--images", str(images), "--fix", str(ann)]) == 2


def test_bad_json_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["data", "check", str(bad), "--images", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.json" in err and err.count("\n") == 1
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(D2SegError, match="annotations"):
        check_coco(bad, tmp_path)


def test_header_only_mode_misses_truncation_but_full_decode_finds_it(tmp_path):
    ann, images, image_id, _ = build_variant(tmp_path, "image_unreadable")
    assert "image_unreadable" not in check_coco(ann, images, decode=False).by_kind()
    assert "image_unreadable" in check_coco(ann, images, decode=True).by_kind()


# ----------------------------------------------------------------------------- panoptic

def write_panoptic(root: Path) -> tuple[Path, Path, Path, dict]:
    """Two 32x24 images; segment 5 (thing) on the left, segment 9 (stuff) elsewhere."""
    from panopticapi.utils import id2rgb

    (root / "img").mkdir(parents=True)
    (root / "pan").mkdir()
    data = {"images": [], "annotations": [],
            "categories": [{"id": 1, "name": "ball", "isthing": 1},
                           {"id": 40, "name": "grass", "isthing": 0}]}
    for i in (1, 2):
        Image.new("RGB", (32, 24), (i * 40, 0, 0)).save(root / "img" / f"{i}.jpg")
        ids = np.full((24, 32), 9, np.int64)
        ids[4:12, 2:10] = 5
        ids[0, 0] = 0  # one void pixel
        Image.fromarray(id2rgb(ids)).save(root / "pan" / f"{i}.png")
        data["images"].append({"id": i, "file_name": f"{i}.jpg", "width": 32, "height": 24})
        data["annotations"].append({"image_id": i, "file_name": f"{i}.png", "segments_info": [
            {"id": 5, "category_id": 1, "iscrowd": 0, "area": 64},
            {"id": 9, "category_id": 40, "iscrowd": 0, "area": 32 * 24 - 64 - 1}]})
    path = root / "pan.json"
    path.write_text(json.dumps(data))
    return path, root / "img", root / "pan", data


def _repaint(pan, name, value):
    from panopticapi.utils import id2rgb, rgb2id

    ids = rgb2id(np.asarray(Image.open(pan / name).convert("RGB")))
    ids[20:24, 28:32] = value
    Image.fromarray(id2rgb(ids)).save(pan / name)


PANOPTIC_VARIANTS = {
    "panoptic_png_missing": (2, None, lambda d, pan: (pan / "2.png").unlink()),
    "panoptic_png_size_mismatch": (1, None, lambda d, pan: Image.new("RGB", (30, 24)).save(
        pan / "1.png")),
    "panoptic_segment_not_in_png": (1, 77, lambda d, pan: d["annotations"][0]["segments_info"]
                                    .append({"id": 77, "category_id": 1, "iscrowd": 0,
                                             "area": 10})),
    "panoptic_png_segment_undeclared": (2, 123, lambda d, pan: _repaint(pan, "2.png", 123)),
    "panoptic_area_mismatch": (1, 5, lambda d, pan: d["annotations"][0]["segments_info"][0]
                               .update(area=65)),
    "panoptic_duplicate_segment_id": (2, 9, lambda d, pan: d["annotations"][1]["segments_info"]
                                      .append({"id": 9, "category_id": 40, "iscrowd": 0,
                                               "area": 32 * 24 - 65})),
}


def test_clean_panoptic_has_no_problem(tmp_path):
    path, img, pan, _ = write_panoptic(tmp_path)
    result = check_coco(path, img, panoptic_root=pan)
    assert result.kind == "coco_panoptic" and result.problems == []


@pytest.mark.parametrize("kind", PANOPTIC_VARIANTS)
def test_each_broken_panoptic_variant_is_found_and_fixed(tmp_path, kind):
    path, img, pan, data = write_panoptic(tmp_path)
    image_id, seg_id, mutate = PANOPTIC_VARIANTS[kind]
    mutate(data, pan)
    path.write_text(json.dumps(data))
    result = check_coco(path, img, panoptic_root=pan)
    hits = [p for p in result.problems if p.kind == kind]
    assert any(p.image_id == image_id and p.annotation_id == seg_id for p in hits), \
        result.problems
    assert not result.ok
    out, report, changes = fix_coco(path, tmp_path / "fixed.json", img, panoptic_root=pan)
    after = check_coco(out, img, panoptic_root=pan)
    if kind == "panoptic_png_segment_undeclared":  # needs a PNG edit, not a JSON one
        assert kind in after.by_kind()
    else:
        assert after.ok, after.problems
        assert changes and len(json.loads(report.read_text())["changes"]) == len(changes)


# ----------------------------------------------------------------------------- real data

REAL = {
    "fruits_nuts": ("fruits_nuts/data/trainval.json", "fruits_nuts/data/images"),
    "tiny_coco16": ("tiny_coco16/small_coco/instances_train2017_small.json",
                    "tiny_coco16/small_coco/train_2017_small"),
}


@pytest.mark.shared
@pytest.mark.parametrize("name", REAL)
def test_real_datasets_against_plain_json_facts(shared_data, name):
    js, imgs = (shared_data / p for p in REAL[name])
    raw = json.loads(js.read_text())
    result = check_coco(js, imgs)
    annotated = {a["image_id"] for a in raw["annotations"]}
    assert result.counts["images_without_annotations"] == sum(
        i["id"] not in annotated for i in raw["images"])
    assert result.counts["annotations"] == len(raw["annotations"])
    # sizes agree with PIL, ids are unique and declared: these files are sound
    for im in raw["images"]:
        assert Image.open(imgs / im["file_name"]).size == (im["width"], im["height"])
    assert result.ok, result.errors[:5]
    crowd = [a for a in raw["annotations"] if a["iscrowd"]]
    assert all(isinstance(a["segmentation"], dict) for a in crowd)
    assert "crowd_not_rle" not in result.by_kind()


@pytest.mark.shared
@pytest.mark.parametrize("name", REAL)
def test_fix_leaves_sound_real_data_unchanged(shared_data, name, tmp_path):
    js, imgs = (shared_data / p for p in REAL[name])
    out, _, changes = fix_coco(js, tmp_path / "fixed.json", imgs, decode=False)
    assert changes == []
    assert json.loads(out.read_text()) == json.loads(js.read_text())


@pytest.mark.shared
def test_tiny_coco_crowd_rle_of_wrong_size_is_found(shared_data, tmp_path):
    js, imgs = (shared_data / p for p in REAL["tiny_coco16"])
    raw = json.loads(js.read_text())
    crowd = next(a for a in raw["annotations"] if a["iscrowd"])
    broken = copy.deepcopy(raw)
    target = next(a for a in broken["annotations"] if a["id"] == crowd["id"])
    h, w = target["segmentation"]["size"]
    target["segmentation"]["size"] = [h + 1, w]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    result = check_coco(tmp_path / "broken.json", imgs, decode=False)
    assert [(p.kind, p.annotation_id) for p in result.errors] == [
        ("rle_size_mismatch", crowd["id"])]


# ----------------------------------------------------------------------------- semantic

def write_semseg(root: Path) -> tuple[Path, Path]:
    """Three 20x16 images with labels 0..2 and 255 (ignore)."""
    (root / "img").mkdir(parents=True)
    (root / "lab").mkdir()
    for k in range(3):
        Image.new("RGB", (20, 16), (k * 50, 0, 0)).save(root / "img" / f"f{k}.jpg")
        lab = np.zeros((16, 20), np.uint8)
        lab[:, 5:] = 1
        lab[8:, 10:] = 2
        lab[0, 0] = 255
        Image.fromarray(lab).save(root / "lab" / f"f{k}.png")
    return root / "img", root / "lab"


def _palette_png(lab):
    """The same class ids stored as palette indices (what VOC-style exports write)."""
    im = Image.fromarray(np.asarray(Image.open(lab / "f1.png")), mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] * 85 + [0, 0, 0])
    im.save(lab / "f1.png")


SEMSEG_VARIANTS = {
    "semseg_label_missing": ("f0.jpg", lambda img, lab: (lab / "f0.png").unlink()),
    "semseg_image_missing": ("f2.png", lambda img, lab: (img / "f2.jpg").unlink()),
    "semseg_label_unreadable": ("f1.png", lambda img, lab: (lab / "f1.png").write_bytes(b"x")),
    "semseg_label_palette": ("f1.png", lambda img, lab: _palette_png(lab)),
    "semseg_label_not_single_channel": ("f1.png", lambda img, lab: Image.open(
        lab / "f1.png").convert("RGB").save(lab / "f1.png")),
    "semseg_size_mismatch": ("f2.png", lambda img, lab: Image.new("L", (21, 16)).save(
        lab / "f2.png")),
    "semseg_label_out_of_range": ("f0.png", lambda img, lab: Image.new("L", (20, 16), 3).save(
        lab / "f0.png")),
}


def test_clean_semseg_has_no_problem(tmp_path):
    img, lab = write_semseg(tmp_path)
    result = check_sem_seg(img, lab, num_classes=3)
    assert result.problems == [] and result.counts["images"] == 3


@pytest.mark.parametrize("kind", SEMSEG_VARIANTS)
def test_each_broken_semseg_variant_is_found(tmp_path, kind):
    img, lab = write_semseg(tmp_path)
    name, mutate = SEMSEG_VARIANTS[kind]
    mutate(img, lab)
    result = check_sem_seg(img, lab, num_classes=3)
    assert [(p.kind, Path(p.file).name) for p in result.problems] == [(kind, name)]
    assert result.ok == (KINDS[kind] == "warning")


@pytest.mark.shared
def test_camvid_out_of_range_labels_match_numpy(shared_data):
    """With class 10 (Bicyclist) left out, exactly the frames that contain 10 are flagged."""
    root = shared_data / "camvid_val"
    files = sorted((root / "valannot").glob("*.png"))
    clean = check_sem_seg(root / "val", root / "valannot", num_classes=11, ignore_label=11,
                          decode=False)
    assert clean.ok and clean.counts["images"] == len(list((root / "val").glob("*.png")))
    with_10 = {f.name for f in files if (np.asarray(Image.open(f)) == 10).any()}
    assert with_10  # the check below means something
    short = check_sem_seg(root / "val", root / "valannot", num_classes=10, ignore_label=11,
                          decode=False)
    assert {Path(p.file).name for p in short.errors} == with_10
    assert {p.kind for p in short.errors} == {"semseg_label_out_of_range"}


# ----------------------------------------------------------------------------- by manifest name

def _manifest(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.yaml").write_text(f"name: {name}\n{body}")


def test_check_by_manifest_name(tmp_path, monkeypatch, capsys):
    data = clean_instances()
    _ann(data, 10).update(bbox=[10, 10, 0, 20])
    write_dataset(tmp_path / "ds", data)
    img, lab = write_semseg(tmp_path / "sem")
    (lab / "f0.png").unlink()
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    _manifest(manifests, "broken_boxes", f"kind: coco_instances\nroot: {tmp_path / 'ds'}\n"
              "splits:\n  train: {images: images, annotations: ann.json}\n")
    _manifest(manifests, "broken_sem", f"kind: sem_seg\nroot: {tmp_path / 'sem'}\n"
              "classes: [a, b, c]\nsplits:\n  train: {images: img, sem_seg_root: lab}\n")
    monkeypatch.setenv("D2SEG_DATASETS", str(manifests))
    assert main(["data", "check", "broken_boxes"]) == 1
    assert "broken_boxes/train" in capsys.readouterr().out
    out = tmp_path / "fixed.json"
    assert main(["data", "check", "broken_boxes", "--split", "train", "--fix", str(out)]) == 1
    assert check_coco(out, tmp_path / "ds" / "images").ok
    assert main(["data", "check", "broken_sem"]) == 1
    assert "semseg_label_missing" in capsys.readouterr().out
    assert main(["data", "check", "broken_boxes", "--split", "nope"]) == 2


@pytest.mark.slow
def test_demo_dataset_checks_clean():
    """The bundled demo data (all three forms) has no error; generated on first use."""
    from d2seg.data.demo import ensure_demo

    ensure_demo()
    for name in ("demo_instances", "demo_panoptic", "demo_semseg"):
        assert main(["data", "check", name, "--no-decode"]) == 0, name
