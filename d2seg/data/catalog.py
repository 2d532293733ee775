"""d2seg's own dataset catalog: name -> metadata + loader, without torch or detectron2.

Like detectron2's (and Mask2Former's) registration, a dataset here is a name, its metadata and
a loader function that runs only when the split is used. Registering a manifest reads the
manifest and, for class names, only each JSON's ``categories`` (a byte scan cached by
(path, size, mtime), see ``d2seg.data.coco_json``); nothing parses a whole annotation file,
hashes a PNG or generates the demo data until a split is used.

Metadata comes in two parts:

* the *base* (class names, colours, id maps, evaluator type, paths): computed at registration,
  so a bad category list is reported there, and by ``d2seg data list``;
* *deferred* keys, computed on first access: ``mask_format`` (a byte scan for RLE masks) and,
  for coco_panoptic without an instances JSON, the derived-label paths ``json_file`` and
  ``sem_seg_root`` (their cache key stats every PNG).

Commands that only read files (``d2seg data ...``, metric-only ``d2seg eval``) use this module;
commands that run models register the same :class:`DatasetInfo` objects into detectron2's
``DatasetCatalog``/``MetadataCatalog`` (``d2seg.data.register``).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from d2seg.data import coco_json
from d2seg.data.manifest import Manifest, Split
from d2seg.errors import D2SegError
from d2seg.io.json import read_json

# detectron2.utils.colormap's table (RGB, 0-255), copied so that no torch import is needed
_COLORMAP = [
    [0, 113, 188], [216, 82, 24], [236, 176, 31], [125, 46, 141], [118, 171, 47], [76, 189, 237],
    [161, 19, 46], [76, 76, 76], [153, 153, 153], [255, 0, 0], [255, 127, 0], [190, 190, 0],
    [0, 255, 0], [0, 0, 255], [170, 0, 255], [84, 84, 0], [84, 170, 0], [84, 255, 0],
    [170, 84, 0], [170, 170, 0], [170, 255, 0], [255, 84, 0], [255, 170, 0], [255, 255, 0],
    [0, 84, 127], [0, 170, 127], [0, 255, 127], [84, 0, 127], [84, 84, 127], [84, 170, 127],
    [84, 255, 127], [170, 0, 127], [170, 84, 127], [170, 170, 127], [170, 255, 127],
    [255, 0, 127], [255, 84, 127], [255, 170, 127], [255, 255, 127], [0, 84, 255],
    [0, 170, 255], [0, 255, 255], [84, 0, 255], [84, 84, 255], [84, 170, 255], [84, 255, 255],
    [170, 0, 255], [170, 84, 255], [170, 170, 255], [170, 255, 255], [255, 0, 255],
    [255, 84, 255], [255, 170, 255], [84, 0, 0], [127, 0, 0], [170, 0, 0], [212, 0, 0],
    [255, 0, 0], [0, 42, 0], [0, 84, 0], [0, 127, 0], [0, 170, 0], [0, 212, 0], [0, 255, 0],
    [0, 0, 42], [0, 0, 84], [0, 0, 127], [0, 0, 170], [0, 0, 212], [0, 0, 255], [0, 0, 0],
    [36, 36, 36], [218, 218, 218], [255, 255, 255],
]

FORMS = ("instances", "panoptic", "panoptic_separated", "stuffonly", "sem_seg")


def palette(n: int) -> list[tuple[int, int, int]]:
    """detectron2's default class colours (its colormap, cycled)."""
    return [tuple(_COLORMAP[i % len(_COLORMAP)]) for i in range(n)]


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
        colors = palette(len(cats))
    return names, [list(c) for c in colors]


def _ensure_generated(manifest: Manifest) -> None:
    """A ``generate: demo`` manifest's data, generated when a split is first used (never when
    the manifest is only registered or listed)."""
    if manifest.generate == "demo":
        from d2seg.data.demo import ensure_demo

        ensure_demo(manifest.root / "demo")


def _categories(manifest: Manifest, json_file: Path) -> list[dict]:
    """A JSON's categories, cheaply; for a not yet generated demo, the generator's own."""
    if manifest.generate == "demo" and not json_file.is_file():
        from d2seg.data.demo import generated_categories

        return generated_categories(json_file.name)
    return coco_json.read_categories(json_file)


class _SplitSource:
    """What the datasets of one split share: categories, class names, id maps (computed once)."""

    def __init__(self, manifest: Manifest, split: Split):
        self.manifest, self.split = manifest, split
        m = manifest
        if m.kind == "sem_seg":
            return
        cats = sorted(_categories(m, split.annotations), key=lambda c: c["id"])
        self.cats = cats
        self.names, self.colors = _names_and_colors(m, cats, split.annotations)
        if m.kind == "coco_instances":
            self.id_map = {c["id"]: i for i, c in enumerate(cats)}
            return
        from d2seg.data import panoptic_semantic

        things = panoptic_semantic.thing_ids({"categories": cats}, split.annotations, m.things)
        self.things = things
        self.thing_idx = [i for i, c in enumerate(cats) if c["id"] in things]
        self.stuff_idx = [i for i, c in enumerate(cats) if c["id"] not in things]
        self.thing_map = {cats[i]["id"]: k for k, i in enumerate(self.thing_idx)}
        self.stuff_map = panoptic_semantic.stuff_label_map({"categories": cats}, things)
        self.all_thing = {c["id"]: i for i, c in enumerate(cats) if c["id"] in things}
        self.all_stuff = {c["id"]: i for i, c in enumerate(cats) if c["id"] not in things}
        if split.instances is not None:
            given = _categories(m, split.instances)
            if sorted(c["id"] for c in given) != sorted(self.thing_map):
                raise D2SegError("its categories differ from the panoptic JSON's thing categories "
                                 f"{sorted(self.thing_map)}", file=str(split.instances),
                                 where="categories")
        self._derived_folder = None

    def derived_folder(self) -> Path:
        """The cache folder of this split's derived semantic labels (not built here)."""
        if self._derived_folder is None:
            from d2seg.data import panoptic_semantic

            _ensure_generated(self.manifest)
            key = panoptic_semantic.cache_key(self.split.annotations, self.split.panoptic_root,
                                              self.manifest.things, self.manifest.ignore_label)
            self._derived_folder = panoptic_semantic.default_cache_root() / "panoptic_semantic" / key
        return self._derived_folder

    def instances_json(self) -> Path:
        return self.split.instances or self.derived_folder() / "instances.json"


class DatasetInfo:
    """One registered dataset name: base metadata (now), deferred metadata and the loader."""

    def __init__(self, name: str, form: str, source: _SplitSource):
        self.name, self.form, self.source = name, form, source
        self.manifest, self.split = source.manifest, source.split
        self.base = self._base()
        self.deferred_keys = frozenset(self._deferred_keys())
        self._deferred: dict | None = None

    # -- metadata
    def _common(self) -> dict:
        m, s = self.manifest, self.split
        return dict(image_root=str(s.images), panoptic_root=str(s.panoptic_root),
                    panoptic_json=str(s.annotations), ignore_label=m.ignore_label,
                    d2seg_manifest=str(m.path))

    def _separated(self) -> dict:
        src = self.source
        return dict(thing_classes=[src.names[i] for i in src.thing_idx],
                    thing_colors=[src.colors[i] for i in src.thing_idx],
                    thing_dataset_id_to_contiguous_id=src.thing_map,
                    stuff_classes=["things"] + [src.names[i] for i in src.stuff_idx],
                    stuff_colors=[[82, 18, 128]] + [src.colors[i] for i in src.stuff_idx],
                    stuff_dataset_id_to_contiguous_id={0: 0, **src.stuff_map})

    def _base(self) -> dict:
        m, s, src = self.manifest, self.split, self.source
        if self.form == "instances":
            return dict(thing_classes=src.names, thing_colors=src.colors,
                        thing_dataset_id_to_contiguous_id=src.id_map, evaluator_type="coco",
                        json_file=str(s.annotations), image_root=str(s.images),
                        ignore_label=m.ignore_label, d2seg_form="instances",
                        d2seg_manifest=str(m.path))
        if self.form == "sem_seg":
            colors = ([list(c) for c in m.colors] if m.colors
                      else [list(c) for c in palette(len(m.classes))])
            return dict(stuff_classes=list(m.classes), stuff_colors=colors,
                        stuff_dataset_id_to_contiguous_id={i: i for i in range(len(m.classes))},
                        evaluator_type="sem_seg", ignore_label=m.ignore_label,
                        sem_seg_root=str(s.sem_seg_root), image_root=str(s.images),
                        d2seg_form="sem_seg", d2seg_manifest=str(m.path))
        given = {"json_file": str(s.instances)} if s.instances is not None else {}
        if self.form == "panoptic":
            return dict(thing_classes=src.names, thing_colors=src.colors, stuff_classes=src.names,
                        stuff_colors=src.colors,
                        thing_dataset_id_to_contiguous_id=src.all_thing,
                        stuff_dataset_id_to_contiguous_id=src.all_stuff,
                        evaluator_type="coco_panoptic_seg", label_divisor=1000,
                        d2seg_form="panoptic", **given, **self._common())
        if self.form == "panoptic_separated":
            extra = {} if s.instances is not None else {"mask_format": "bitmask"}
            return dict(evaluator_type="coco_panoptic_seg", d2seg_form="panoptic_separated",
                        **extra, **given, **self._separated(), **self._common())
        separated = {k: v for k, v in self._separated().items() if not k.startswith("thing")}
        return dict(evaluator_type="sem_seg", d2seg_form="stuffonly", **separated,
                    **self._common())

    def _deferred_keys(self) -> list[str]:
        derived = self.split.instances is None
        if self.form == "instances":
            return ["mask_format"]
        if self.form == "panoptic":
            return ["json_file"] if derived else []
        if self.form == "panoptic_separated":
            return ["sem_seg_root"] + (["json_file"] if derived else ["mask_format"])
        if self.form == "stuffonly":
            return ["sem_seg_root"]
        return []

    def deferred(self) -> dict:
        """The deferred keys' values (computed on first call; see the module docstring)."""
        if self._deferred is None:
            out = {}
            keys = self.deferred_keys
            if "mask_format" in keys:
                _ensure_generated(self.manifest)
                json_file = self.split.annotations if self.form == "instances" else self.split.instances
                out["mask_format"] = "bitmask" if coco_json.has_rle(json_file) else "polygon"
            if "json_file" in keys:
                out["json_file"] = str(self.source.instances_json())
            if "sem_seg_root" in keys:
                out["sem_seg_root"] = str(self.source.derived_folder() / "semantic")
            self._deferred = out
        return self._deferred

    def metadata(self) -> dict:
        """Every metadata key (computing the deferred ones)."""
        return {**self.base, **self.deferred()}

    # -- data
    def load(self) -> list[dict]:
        """detectron2 dataset dicts (parses the JSON; runs the annotation checks)."""
        _ensure_generated(self.manifest)
        if self.form == "instances":
            return self._instances(self.split.annotations, self.source.id_map)
        if self.form == "sem_seg":
            from detectron2.data.datasets import load_sem_seg

            ext = _image_ext(self.split.images)
            return load_sem_seg(str(self.split.sem_seg_root), str(self.split.images),
                                gt_ext="png", image_ext=ext)
        if self.form == "panoptic":
            return _panoptic_dicts(self.split.annotations, self.split.images,
                                   self.split.panoptic_root, self.source.all_thing,
                                   self.source.all_stuff)
        records = self._separated_dicts()
        if self.form == "stuffonly":
            keep = ("file_name", "sem_seg_file_name", "image_id", "height", "width")
            return [{k: v for k, v in d.items() if k in keep} for d in records]
        return records

    def _instances(self, json_file: Path, id_map: dict) -> list[dict]:
        """The dicts of a COCO instances file: its annotations parsed a chunk at a time (no
        parse tree of the whole file), else (a file that does not split) parsed whole."""
        from detectron2.structures import BoxMode

        from d2seg.data.coco_load import coco_instance_dicts

        def checked(data):
            coco_json.check_top(data, json_file)
            cats = coco_json.validate_categories(data["categories"], json_file)
            if sorted(c["id"] for c in cats) != sorted(id_map):
                raise D2SegError("its categories changed since the dataset was registered",
                                 file=str(json_file), where="categories",
                                 hint="run the command again")
            return data

        try:
            data, chunks = coco_json.read_coco_chunked(json_file)
            return coco_instance_dicts(json_file, self.split.images, id_map,
                                       box_mode=BoxMode.XYWH_ABS, data=checked(data),
                                       annotation_chunks=chunks)
        except coco_json.ChunkingFailed:
            pass
        data = checked(read_json(json_file, "annotation file"))
        return coco_instance_dicts(json_file, self.split.images, id_map,
                                   box_mode=BoxMode.XYWH_ABS, data=data)

    def _separated_dicts(self) -> list[dict]:
        """Instances (given JSON, or derived from the PNGs) merged with derived semantic labels."""
        from detectron2.data.datasets.coco_panoptic import merge_to_panoptic

        from d2seg.data import panoptic_semantic

        m, split = self.manifest, self.split
        derived = panoptic_semantic.derive(split.annotations, split.panoptic_root, m.things,
                                           m.ignore_label)
        data = coco_json.read_coco_top(split.annotations)
        images = {img["id"]: img for img in data["images"]}
        sem = []
        for ann in data["annotations"]:
            image = images.get(ann.get("image_id"))
            if image is None:
                raise D2SegError(f"image_id {ann.get('image_id')} not in images",
                                 file=str(split.annotations), where="annotations")
            sem.append({"file_name": os.path.join(str(split.images), image["file_name"]),
                        "sem_seg_file_name": str(derived.sem_seg_root
                                                 / Path(ann["file_name"]).with_suffix(".png"))})
        del data, images
        instances = self._instances(split.instances or derived.instances_json,
                                    self.source.thing_map)
        have = {s["file_name"] for s in sem}
        for record in instances:
            if record["file_name"] not in have:
                raise D2SegError(f"image {record['file_name']} has no panoptic annotation",
                                 file=str(split.instances), where=f"image_id {record['image_id']}")
        return merge_to_panoptic(instances, sem)


def _panoptic_dicts(json_file: Path, image_root: Path, panoptic_root: Path,
                    thing_map: dict[int, int], stuff_map: dict[int, int]) -> list[dict]:
    """Standard panoptic dicts; image names come from the JSON's ``images`` (any extension)."""
    data = coco_json.read_coco_top(json_file)
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise D2SegError("each annotation needs an 'image_id'", file=str(json_file),
                             where=f"annotations[{i}]", hint="run d2seg data check")
        if not (isinstance(ann.get("segments_info"), list) and isinstance(ann.get("file_name"), str)):
            raise D2SegError("a panoptic annotation needs 'file_name' and a list 'segments_info'",
                             file=str(json_file), where=f"annotations[{i}]",
                             hint="run d2seg data check")
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


def _image_ext(image_root: Path) -> str:
    from collections import Counter

    exts = Counter(p.suffix.lstrip(".") for p in image_root.iterdir() if p.is_file())
    if not exts:
        raise D2SegError("no images found", file=str(image_root))
    return exts.most_common(1)[0][0]


# ----------------------------------------------------------------------------- the catalog

def dataset_names(manifest: Manifest) -> list[str]:
    """The names registered for this manifest."""
    names = []
    for split in manifest.splits:
        base = f"{manifest.name}_{split}"
        names += [base] + ([f"{base}_separated", f"{base}_stuffonly"]
                           if manifest.kind == "coco_panoptic" else [])
    return names


_INFOS: dict[Manifest, list[DatasetInfo]] = {}   # manifest -> its datasets (built once)
_EXPLICIT: dict[str, DatasetInfo] = {}           # registered by register_manifest
_SCANNED: dict[str, DatasetInfo] = {}            # found by the last scan()
_SCANNED_MANIFESTS: list[Manifest] = []


def infos_for(manifest: Manifest) -> list[DatasetInfo]:
    """The datasets of a manifest (base metadata computed now: bad categories raise here)."""
    infos = _INFOS.get(manifest)  # (a manifest edited since is another key: equality)
    if infos is not None:
        return infos
    infos = []
    for split_name, split in manifest.splits.items():
        source = _SplitSource(manifest, split)
        base = f"{manifest.name}_{split_name}"
        if manifest.kind == "coco_instances":
            infos.append(DatasetInfo(base, "instances", source))
        elif manifest.kind == "sem_seg":
            infos.append(DatasetInfo(base, "sem_seg", source))
        else:
            infos += [DatasetInfo(base, "panoptic", source),
                      DatasetInfo(f"{base}_separated", "panoptic_separated", source),
                      DatasetInfo(f"{base}_stuffonly", "stuffonly", source)]
    _INFOS[manifest] = infos
    return infos


def register_manifest(manifest: Manifest) -> list[str]:
    """Add a manifest's datasets to this catalog (no detectron2); returns their names."""
    infos = infos_for(manifest)
    for info in infos:
        _EXPLICIT[info.name] = info
    return [i.name for i in infos]


def unregister_manifest(name: str) -> None:
    for key in [k for k, v in _EXPLICIT.items() if v.manifest.name == name]:
        del _EXPLICIT[key]


def scan() -> list[Manifest]:
    """Read every manifest in the manifest folders; returns the usable ones. A manifest that
    cannot be read (or whose categories are wrong) is set aside in
    ``d2seg.data.manifest.BROKEN_MANIFESTS``; a name declared twice is an error."""
    from d2seg.data.manifest import BROKEN_MANIFESTS, load_manifest, manifest_files

    BROKEN_MANIFESTS.clear()  # this scan's findings only
    _SCANNED.clear()
    _SCANNED_MANIFESTS.clear()
    seen: dict[str, Path] = {}
    for path in manifest_files():
        try:
            manifest = load_manifest(path, generate=False)
            if manifest.name in seen:
                raise D2SegError(f"dataset name '{manifest.name}' is also declared by "
                                 f"{seen[manifest.name]}", file=str(path), where="name",
                                 hint="give each manifest its own name")
            seen[manifest.name] = path
            infos = infos_for(manifest)
        except D2SegError as e:
            BROKEN_MANIFESTS[str(path)] = e
            continue
        _SCANNED_MANIFESTS.append(manifest)
        for info in infos:
            _SCANNED[info.name] = info
    return list(_SCANNED_MANIFESTS)


def scan_names() -> list[str]:
    """Every dataset name the manifest folders declare (after :func:`scan`)."""
    scan()
    return list(_SCANNED)


def dataset_info(name: str, where: str = "dataset") -> DatasetInfo:
    """The dataset ``name`` (registered here, else found in the manifest folders); else one
    error: its manifest's, when that was set aside, or the nearest names."""
    info = _EXPLICIT.get(name) or _SCANNED.get(name)
    if info is None:
        scan()
        info = _SCANNED.get(name)
    if info is not None:
        return info
    from d2seg.data.manifest import broken_manifest_for

    broken = broken_manifest_for(name)
    if broken is not None:
        raise broken
    known = sorted(set(_EXPLICIT) | set(_SCANNED))
    close = difflib.get_close_matches(name, known, n=3)
    raise D2SegError(f"dataset '{name}' is not registered", where=where,
                     hint=(f"did you mean {', '.join(close)}? " if close else "")
                     + "`d2seg data list` shows the registered datasets")


class CatalogMetadata:
    """Read-only metadata with detectron2's ``Metadata`` interface (``get``, attributes,
    ``as_dict``), computing deferred keys on first access. Torch-free."""

    def __init__(self, info: DatasetInfo):
        self._info = info

    @property
    def name(self) -> str:
        return self._info.name

    def __getattr__(self, key):
        if key.startswith("_"):
            raise AttributeError(key)
        info = self._info
        if key in info.base:
            return info.base[key]
        if key in info.deferred_keys:
            return info.deferred()[key]
        raise AttributeError(f"metadata of dataset '{info.name}' has no '{key}'")

    def get(self, key, default=None):
        try:
            return getattr(self, key)
        except AttributeError:
            return default

    def as_dict(self) -> dict:
        return {"name": self.name, **self._info.metadata()}


def dataset_metadata(name: str, where: str = "dataset") -> CatalogMetadata:
    """The metadata of a dataset without torch: what metric-only commands read
    (``json_file``, ``image_root``, ``panoptic_json``, ``panoptic_root``, ``thing_classes``,
    ``stuff_classes``, ``evaluator_type``, ...); errors as :func:`dataset_info`."""
    return CatalogMetadata(dataset_info(name, where=where))
