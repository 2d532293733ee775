"""Register manifests into detectron2's ``DatasetCatalog`` / ``MetadataCatalog``.

Why: detectron2's models and evaluators read a long list of metadata keys (class names, both
id-to-contiguous maps, colours, evaluator type, ignore label, JSON and PNG roots) and fail late
or silently when one is missing. Here every kind gets all of them, computed from the data.

Names registered for a manifest ``NAME`` and each split ``SPLIT``:

- ``coco_instances``: ``NAME_SPLIT`` (evaluator ``coco``).
- ``coco_panoptic``: ``NAME_SPLIT`` (detectron2's "standard" panoptic form: ``pan_seg_file_name``
  + ``segments_info``, as Mask2Former-style models read it), ``NAME_SPLIT_separated`` (what
  Panoptic FPN trains on: instances + semantic labels derived from the PNGs, see
  ``d2seg.data.panoptic_semantic``) and ``NAME_SPLIT_stuffonly`` (the stuff labels alone).
- ``sem_seg``: ``NAME_SPLIT`` (evaluator ``sem_seg``).

Besides detectron2's keys, metadata carries ``mask_format`` ("bitmask" when any mask is RLE,
else "polygon": the INPUT.MASK_FORMAT the config needs) and ``d2seg_form`` (the form above).
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections import Counter
from pathlib import Path

from d2seg.data import panoptic_semantic
from d2seg.data.manifest import Manifest, Split
from d2seg.errors import D2SegError

_REGISTERED: dict[str, Manifest] = {}  # manifest name -> the manifest registered under it
_OWNED: set[str] = set()                 # dataset names d2seg registered


def _read_coco(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_bytes())
    except ValueError as e:
        raise D2SegError(f"malformed JSON: {e}", file=str(path)) from None
    except OSError as e:
        raise D2SegError(f"cannot read: {e.strerror}", file=str(path)) from None
    if not isinstance(data, dict):
        raise D2SegError(f"a COCO JSON is an object, got {type(data).__name__}", file=str(path))
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise D2SegError("missing or not a list", file=str(path), where=key)
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
            raise D2SegError("each category needs an integer 'id' and a string 'name'",
                             file=str(path), where=f"categories[{i}]")
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise D2SegError("each image needs an 'id' and a string 'file_name'", file=str(path),
                             where=f"images[{i}]", hint="run d2seg data check")
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise D2SegError("each annotation needs an 'image_id'", file=str(path),
                             where=f"annotations[{i}]", hint="run d2seg data check")
        if "segments_info" in ann and not (isinstance(ann["segments_info"], list)
                                           and isinstance(ann.get("file_name"), str)):
            raise D2SegError("a panoptic annotation needs 'file_name' and a list 'segments_info'",
                             file=str(path), where=f"annotations[{i}]", hint="run d2seg data check")
    ids = Counter(c["id"] for c in data["categories"])
    dup = sorted(i for i, n in ids.items() if n > 1)
    if dup:
        raise D2SegError(f"duplicate category ids {dup}", file=str(path), where="categories")
    if not data["categories"]:
        raise D2SegError("no categories declared", file=str(path), where="categories")
    return data


def _palette(n: int) -> list[tuple[int, int, int]]:
    from detectron2.utils.colormap import colormap

    table = colormap(rgb=True, maximum=255).astype(int)
    return [tuple(int(v) for v in table[i % len(table)]) for i in range(n)]


def _names_and_colors(manifest: Manifest, cats: list[dict], source: Path):
    """Class names and colours for categories sorted by id: manifest overrides, else the JSON's."""
    names = [c["name"] for c in cats]
    if manifest.classes is not None:
        if len(manifest.classes) != len(cats):
            raise D2SegError(f"lists {len(manifest.classes)} classes but {source} declares "
                             f"{len(cats)} categories", file=str(manifest.path), where="classes")
        names = list(manifest.classes)
    if manifest.colors is not None:
        if len(manifest.colors) != len(cats):
            raise D2SegError(f"lists {len(manifest.colors)} colours for {len(cats)} categories",
                             file=str(manifest.path), where="colors")
        colors = [tuple(c) for c in manifest.colors]
    elif all(isinstance(c.get("color"), list) and len(c["color"]) == 3 for c in cats):
        colors = [tuple(int(v) for v in c["color"]) for c in cats]
    else:
        colors = _palette(len(cats))
    return names, [list(c) for c in colors]


def _mask_format(data: dict) -> str:
    """"bitmask" when any annotation's mask is RLE (detectron2 cannot treat it as polygons)."""
    rle = any(isinstance(a, dict) and isinstance(a.get("segmentation"), dict)
              for a in data["annotations"])
    return "bitmask" if rle else "polygon"


def _finite(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in values)


def _first_ids(ids: list) -> str:
    return ", ".join(map(str, ids[:5])) + (", ..." if len(ids) > 5 else "")


def check_annotations(data: dict, json_file: Path) -> tuple[D2SegError | None, str | None]:
    """(error, warning) for annotations that would crash or corrupt training, or that
    detectron2 drops without saying which: one pass, no image read.

    Errors: an image_id not in ``images``; a bbox that is not 4 finite numbers or has a
    negative size (detectron2 would train on the flipped box); an RLE whose size is not its
    image's. Warning: polygons of fewer than 3 points and boxes of zero size, which detectron2
    drops. ``d2seg data check --fix`` repairs all of them.
    """
    images = {img["id"]: img for img in data["images"]}
    short_polygons, flat_boxes = [], []
    for i, ann in enumerate(data["annotations"]):
        where = f"annotation {ann['id']}" if "id" in ann else f"annotations[{i}]"
        image = images.get(ann["image_id"])
        if image is None:
            return D2SegError(f"image_id {ann['image_id']} is not in 'images'",
                              file=str(json_file), where=where,
                              hint="fix image_id or remove the annotation (d2seg data check "
                                   "--fix removes it)"), None
        box = ann.get("bbox")
        if box is not None:
            if not (isinstance(box, list) and len(box) == 4 and _finite(box)):
                return D2SegError(f"bbox {box!r:.60} is not 4 finite numbers [x, y, w, h]",
                                  file=str(json_file), where=where,
                                  hint="d2seg data check --fix recomputes it from the mask"), None
            if box[2] < 0 or box[3] < 0:
                return D2SegError(f"bbox {box} has a negative width or height",
                                  file=str(json_file), where=where,
                                  hint="d2seg data check --fix recomputes it from the mask"), None
            if box[2] == 0 or box[3] == 0:
                flat_boxes.append(ann.get("id", i))
        seg = ann.get("segmentation")
        size = [image.get("height"), image.get("width")]
        if isinstance(seg, dict) and isinstance(seg.get("size"), list) and seg["size"] != size:
            return D2SegError(f"RLE size {seg['size']} (h, w) differs from its image's {size}",
                              file=str(json_file), where=f"{where}, image_id {ann['image_id']}",
                              hint="re-export the mask at image size (d2seg data check --fix "
                                   "removes it)"), None
        if isinstance(seg, list) and any(isinstance(p, list) and len(p) < 6 for p in seg):
            short_polygons.append(ann.get("id", i))
    notes = []
    if short_polygons:
        notes.append(f"{len(short_polygons)} annotation(s) with polygons of fewer than 3 points "
                     f"(ids {_first_ids(short_polygons)})")
    if flat_boxes:
        notes.append(f"{len(flat_boxes)} annotation(s) with a zero-size bbox "
                     f"(ids {_first_ids(flat_boxes)})")
    warning = (f"{json_file}: {' and '.join(notes)}: detectron2 drops them; d2seg data check "
               "--fix repairs the file") if notes else None
    return None, warning


def _coco_dicts(json_file: Path, image_root: Path, id_map: dict[int, int],
                checked: tuple[D2SegError | None, str | None] = (None, None)) -> list[dict]:
    """detectron2's ``load_coco_json``, with category ids mapped by our (validated) map;
    ``checked`` is ``check_annotations``'s verdict, raised or logged when the data is loaded."""
    import logging

    from detectron2.data.datasets import load_coco_json

    error, warning = checked
    if error is not None:
        raise error
    if warning is not None:
        logging.getLogger("d2seg").warning(warning)
    dicts = load_coco_json(str(json_file), str(image_root), dataset_name=None)
    for record in dicts:
        for ann in record.get("annotations", []):
            if ann["category_id"] not in id_map:
                raise D2SegError(f"category_id {ann['category_id']} is not declared in categories",
                                 file=str(json_file), where=f"image_id {record['image_id']}",
                                 hint="run d2seg data check")
            ann["category_id"] = id_map[ann["category_id"]]
    return dicts


def _panoptic_dicts(json_file: Path, image_root: Path, panoptic_root: Path,
                    thing_map: dict[int, int], stuff_map: dict[int, int]) -> list[dict]:
    """Standard panoptic dicts; image names come from the JSON's ``images`` (any extension)."""
    data = _read_coco(json_file)
    images = {img["id"]: img for img in data["images"]}
    dicts = []
    for ann in data["annotations"]:
        image = images.get(ann["image_id"])
        if image is None:
            raise D2SegError(f"image_id {ann['image_id']} not in images", file=str(json_file),
                             where="annotations")
        segments = []
        for seg in ann["segments_info"]:
            seg = dict(seg)
            cat = seg["category_id"]
            if cat in thing_map:
                seg.update(category_id=thing_map[cat], isthing=True)
            elif cat in stuff_map:
                seg.update(category_id=stuff_map[cat], isthing=False)
            else:
                raise D2SegError(f"category_id {cat} is not declared in categories",
                                 file=str(json_file), where=f"image_id {ann['image_id']}")
            segments.append(seg)
        record = {"file_name": os.path.join(str(image_root), image["file_name"]),
                  "image_id": ann["image_id"],
                  "pan_seg_file_name": os.path.join(str(panoptic_root), ann["file_name"]),
                  "segments_info": segments}
        record.update({k: image[k] for k in ("height", "width") if k in image})
        dicts.append(record)
    return dicts


def _separated_dicts(manifest: Manifest, split: Split, thing_map: dict[int, int]) -> list[dict]:
    """Instances (given JSON, or derived from the PNGs) merged with derived semantic labels."""
    from detectron2.data.datasets.coco_panoptic import merge_to_panoptic

    derived = panoptic_semantic.derive(split.annotations, split.panoptic_root, manifest.things,
                                       manifest.ignore_label)
    data = _read_coco(split.annotations)
    sem = [{"file_name": os.path.join(str(split.images), img["file_name"]),
            "sem_seg_file_name": str(derived.sem_seg_root / Path(ann["file_name"]).with_suffix(".png"))}
           for img, ann in _pair_images(data, split.annotations)]
    instances = _coco_dicts(split.instances or derived.instances_json, split.images, thing_map)
    have = {s["file_name"] for s in sem}
    for record in instances:
        if record["file_name"] not in have:
            raise D2SegError(f"image {record['file_name']} has no panoptic annotation",
                             file=str(split.instances), where=f"image_id {record['image_id']}")
    return merge_to_panoptic(instances, sem)


def _pair_images(data: dict, json_file: Path):
    images = {img["id"]: img for img in data["images"]}
    for ann in data["annotations"]:
        if ann.get("image_id") not in images:
            raise D2SegError(f"image_id {ann.get('image_id')} not in images", file=str(json_file),
                             where="annotations")
        yield images[ann["image_id"]], ann


def _image_ext(image_root: Path) -> str:
    exts = Counter(p.suffix.lstrip(".") for p in image_root.iterdir() if p.is_file())
    if not exts:
        raise D2SegError("no images found", file=str(image_root))
    return exts.most_common(1)[0][0]


def _register(name: str, loader, **metadata) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**{k: v for k, v in metadata.items() if v is not None})
    _OWNED.add(name)


def _register_instances(m: Manifest, split: Split, name: str) -> list[str]:
    data = _read_coco(split.annotations)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    names, colors = _names_and_colors(m, cats, split.annotations)
    id_map = {c["id"]: i for i, c in enumerate(cats)}
    checked = check_annotations(data, split.annotations)  # raised/logged only when loaded
    _register(name, lambda: _coco_dicts(split.annotations, split.images, id_map, checked),
              thing_classes=names, thing_colors=colors, thing_dataset_id_to_contiguous_id=id_map,
              evaluator_type="coco", json_file=str(split.annotations), image_root=str(split.images),
              ignore_label=m.ignore_label, mask_format=_mask_format(data), d2seg_form="instances",
              d2seg_manifest=str(m.path))
    return [name]


def _register_panoptic(m: Manifest, split: Split, name: str) -> list[str]:
    data = _read_coco(split.annotations)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    names, colors = _names_and_colors(m, cats, split.annotations)
    things = panoptic_semantic.thing_ids(data, split.annotations, m.things)
    common = dict(image_root=str(split.images), panoptic_root=str(split.panoptic_root),
                  panoptic_json=str(split.annotations), ignore_label=m.ignore_label,
                  d2seg_manifest=str(m.path))
    thing_idx = [i for i, c in enumerate(cats) if c["id"] in things]
    stuff_idx = [i for i, c in enumerate(cats) if c["id"] not in things]
    thing_map = {cats[i]["id"]: k for k, i in enumerate(thing_idx)}
    stuff_map = panoptic_semantic.stuff_label_map(data, things)
    key = panoptic_semantic.cache_key(split.annotations, split.panoptic_root, m.things, m.ignore_label)
    cache = panoptic_semantic.default_cache_root() / "panoptic_semantic" / key
    if split.instances is not None:
        given = _read_coco(split.instances)
        if sorted(c["id"] for c in given["categories"]) != sorted(thing_map):
            raise D2SegError("its categories differ from the panoptic JSON's thing categories "
                             f"{sorted(thing_map)}", file=str(split.instances), where="categories")
        mask_format, instances_json = _mask_format(given), split.instances
    else:  # derived from the PNGs as RLE masks when the dataset is first loaded
        mask_format, instances_json = "bitmask", cache / "instances.json"
    # standard form: one contiguous index over all categories (detectron2's convention)
    all_thing = {c["id"]: i for i, c in enumerate(cats) if c["id"] in things}
    all_stuff = {c["id"]: i for i, c in enumerate(cats) if c["id"] not in things}
    _register(name, lambda: _panoptic_dicts(split.annotations, split.images, split.panoptic_root,
                                            all_thing, all_stuff),
              thing_classes=names, thing_colors=colors, stuff_classes=names, stuff_colors=colors,
              thing_dataset_id_to_contiguous_id=all_thing, stuff_dataset_id_to_contiguous_id=all_stuff,
              evaluator_type="coco_panoptic_seg", label_divisor=1000,
              json_file=str(instances_json), d2seg_form="panoptic", **common)

    # separated form (Panoptic FPN): things 0..T-1; semantic 0 = "things", stuff 1..S
    stuff_classes = ["things"] + [names[i] for i in stuff_idx]
    stuff_colors = [[82, 18, 128]] + [colors[i] for i in stuff_idx]
    separated = dict(thing_classes=[names[i] for i in thing_idx],
                     thing_colors=[colors[i] for i in thing_idx],
                     thing_dataset_id_to_contiguous_id=thing_map,
                     stuff_classes=stuff_classes, stuff_colors=stuff_colors,
                     stuff_dataset_id_to_contiguous_id={0: 0, **stuff_map},
                     sem_seg_root=str(cache / "semantic"))
    _register(f"{name}_separated", lambda: _separated_dicts(m, split, thing_map),
              evaluator_type="coco_panoptic_seg", mask_format=mask_format,
              json_file=str(instances_json),
              d2seg_form="panoptic_separated", **separated, **common)

    def stuffonly():
        return [{k: v for k, v in d.items() if k in ("file_name", "sem_seg_file_name", "image_id",
                                                    "height", "width")}
                for d in _separated_dicts(m, split, thing_map)]

    _register(f"{name}_stuffonly", stuffonly, evaluator_type="sem_seg", d2seg_form="stuffonly",
              **{k: v for k, v in separated.items() if not k.startswith("thing")}, **common)
    return [name, f"{name}_separated", f"{name}_stuffonly"]


def _register_sem_seg(m: Manifest, split: Split, name: str) -> list[str]:
    from detectron2.data.datasets import load_sem_seg

    ext = _image_ext(split.images)
    colors = [list(c) for c in m.colors] if m.colors else [list(c) for c in _palette(len(m.classes))]
    _register(name, lambda: load_sem_seg(str(split.sem_seg_root), str(split.images),
                                         gt_ext="png", image_ext=ext),
              stuff_classes=list(m.classes), stuff_colors=colors,
              stuff_dataset_id_to_contiguous_id={i: i for i in range(len(m.classes))},
              evaluator_type="sem_seg", ignore_label=m.ignore_label,
              sem_seg_root=str(split.sem_seg_root), image_root=str(split.images),
              d2seg_form="sem_seg", d2seg_manifest=str(m.path))
    return [name]


def dataset_names(manifest: Manifest) -> list[str]:
    """The names ``register_manifest`` registers for this manifest, without registering."""
    names = []
    for split in manifest.splits:
        base = f"{manifest.name}_{split}"
        names += [base] + ([f"{base}_separated", f"{base}_stuffonly"]
                           if manifest.kind == "coco_panoptic" else [])
    return names


def register_manifest(manifest: Manifest) -> list[str]:
    """Register every split; again with the same manifest is a no-op, a different one an error."""
    from detectron2.data import DatasetCatalog

    previous = _REGISTERED.get(manifest.name)
    if previous is not None:
        if previous == manifest:
            return dataset_names(manifest)
        raise D2SegError(f"dataset name '{manifest.name}' is already registered from "
                         f"{previous.path} with different contents", file=str(manifest.path),
                         where="name", hint="give each manifest its own name")
    taken = [n for n in dataset_names(manifest) if n in DatasetCatalog.list()]
    if taken:
        raise D2SegError(f"dataset '{taken[0]}' is already registered in detectron2",
                         file=str(manifest.path), where="name", hint="choose another name")
    registered = []
    try:
        for split_name, split in manifest.splits.items():
            fn = {"coco_instances": _register_instances, "coco_panoptic": _register_panoptic,
                  "sem_seg": _register_sem_seg}[manifest.kind]
            registered += fn(manifest, split, f"{manifest.name}_{split_name}")
    except Exception:
        _unregister(registered)
        raise
    _REGISTERED[manifest.name] = manifest
    return registered


def _unregister(names) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for n in names:
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)
        _OWNED.discard(n)


def unregister_manifest(name: str) -> None:
    """Forget a manifest's datasets (tests, or re-registering an edited manifest)."""
    manifest = _REGISTERED.pop(name, None)
    if manifest is not None:
        _unregister(n for n in dataset_names(manifest) if n in _OWNED)


def registered_metadata(dataset_name: str, where: str = "dataset"):
    """The metadata of a registered dataset; else one error naming the nearest registered ones."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if dataset_name not in DatasetCatalog.list():
        from d2seg.data.manifest import broken_manifest_for

        broken = broken_manifest_for(dataset_name)
        if broken is not None:  # its manifest was set aside: that is the reason to give
            raise broken
        close = difflib.get_close_matches(dataset_name, DatasetCatalog.list(), n=3)
        raise D2SegError(f"dataset '{dataset_name}' is not registered", where=where,
                         hint=(f"did you mean {', '.join(close)}? " if close else "")
                         + "`d2seg data list` shows the registered datasets")
    return MetadataCatalog.get(dataset_name)


def num_classes(dataset_name: str) -> dict:
    """Class counts a config needs: ``thing`` (ROI_HEADS.NUM_CLASSES), ``stuff`` (stuff
    categories), ``sem_seg_head`` (SEM_SEG_HEAD.NUM_CLASSES, None when there is no semantic task).
    """
    meta = registered_metadata(dataset_name)
    form = meta.get("d2seg_form")
    things = len(meta.get("thing_classes", []) or [])
    stuff_classes = meta.get("stuff_classes", []) or []
    if form == "panoptic":  # standard form: one index over all categories
        stuff = len(meta.stuff_dataset_id_to_contiguous_id)
        things = len(meta.thing_dataset_id_to_contiguous_id)
        return {"thing": things, "stuff": stuff, "sem_seg_head": len(stuff_classes)}
    if form in ("panoptic_separated", "stuffonly") or (
            form is None and meta.get("stuff_dataset_id_to_contiguous_id", {}).get(0) == 0
            and meta.get("evaluator_type") == "coco_panoptic_seg"):
        return {"thing": things if form != "stuffonly" else 0, "stuff": len(stuff_classes) - 1,
                "sem_seg_head": len(stuff_classes)}
    if form == "sem_seg" or (form is None and meta.get("evaluator_type") == "sem_seg"):
        return {"thing": 0, "stuff": len(stuff_classes), "sem_seg_head": len(stuff_classes)}
    return {"thing": things, "stuff": 0, "sem_seg_head": None}


def check_config_matches_dataset(cfg, dataset_names) -> None:
    """Raise D2SegError when the config's class counts, ignore value or mask format do not fit
    the datasets (all of which must agree with each other). Call before building the model.
    """
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    if not names:
        return
    counts = {n: num_classes(n) for n in names}
    first = names[0]
    for n in names[1:]:
        if counts[n] != counts[first] or registered_metadata(n).get("thing_classes") != registered_metadata(first).get("thing_classes"):
            raise D2SegError(f"datasets '{first}' and '{n}' have different classes "
                             f"({counts[first]} vs {counts[n]})", where="DATASETS",
                             hint="train and test on datasets with the same categories")
    need = counts[first]
    arch = cfg.MODEL.META_ARCHITECTURE
    uses_roi = arch in ("GeneralizedRCNN", "PanopticFPN")
    uses_sem = arch in ("SemanticSegmentor", "PanopticFPN")
    forms = {n: registered_metadata(n).get("d2seg_form") for n in names}
    if arch == "PanopticFPN":
        wrong = [n for n, f in forms.items() if f in ("panoptic", "instances", "sem_seg", "stuffonly")]
        if wrong:
            raise D2SegError(f"PanopticFPN trains on the separated panoptic form, not '{wrong[0]}'",
                             where="DATASETS", hint=f"use '{wrong[0]}_separated'"
                             if forms[wrong[0]] == "panoptic" else "use a coco_panoptic manifest")
    if uses_roi:
        if need["thing"] == 0:
            raise D2SegError(f"{arch} needs thing classes; dataset '{first}' has none",
                             where="MODEL.META_ARCHITECTURE", hint="use SemanticSegmentor")
        if cfg.MODEL.ROI_HEADS.NUM_CLASSES != need["thing"]:
            raise D2SegError(f"is {cfg.MODEL.ROI_HEADS.NUM_CLASSES} but dataset '{first}' has "
                             f"{need['thing']} thing classes", where="MODEL.ROI_HEADS.NUM_CLASSES",
                             hint=f"set it to {need['thing']}")
    if arch == "RetinaNet" and cfg.MODEL.RETINANET.NUM_CLASSES != need["thing"]:
        raise D2SegError(f"is {cfg.MODEL.RETINANET.NUM_CLASSES} but dataset '{first}' has "
                         f"{need['thing']} thing classes", where="MODEL.RETINANET.NUM_CLASSES",
                         hint=f"set it to {need['thing']}")
    if uses_sem:
        if need["sem_seg_head"] is None:
            raise D2SegError(f"{arch} needs semantic labels; dataset '{first}' has none",
                             where="MODEL.META_ARCHITECTURE")
        if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES != need["sem_seg_head"]:
            extra = " (stuff classes + 1 for 'things')" if arch == "PanopticFPN" else ""
            raise D2SegError(f"is {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES} but dataset '{first}' needs "
                             f"{need['sem_seg_head']}{extra}", where="MODEL.SEM_SEG_HEAD.NUM_CLASSES",
                             hint=f"set it to {need['sem_seg_head']}")
        ignore = registered_metadata(first).get("ignore_label", 255)
        if cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE != ignore:
            raise D2SegError(f"is {cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE} but dataset '{first}' "
                             f"ignores label {ignore}", where="MODEL.SEM_SEG_HEAD.IGNORE_VALUE",
                             hint=f"set it to {ignore}")
    if cfg.MODEL.MASK_ON and cfg.INPUT.MASK_FORMAT == "polygon":
        rle = [n for n in names if registered_metadata(n).get("mask_format") == "bitmask"]
        if rle:
            raise D2SegError(f"is 'polygon' but dataset '{rle[0]}' has RLE masks",
                             where="INPUT.MASK_FORMAT", hint="set it to 'bitmask'")
