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

Registration is lazy, as detectron2's and Mask2Former's own: a name, metadata and a loader
that parses the JSON only when the split is used (``d2seg.data.catalog`` builds them, torch-free;
this module puts them into detectron2's catalogs, for commands that run models). Metadata keys
that need more than the categories (``mask_format``, the derived-label paths) are computed on
first access.

Besides detectron2's keys, metadata carries ``mask_format`` ("bitmask" when any mask is RLE,
else "polygon": the INPUT.MASK_FORMAT the config needs) and ``d2seg_form`` (the form above).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from d2seg.data.manifest import Manifest
from d2seg.errors import D2SegError

_REGISTERED: dict[str, Manifest] = {}  # manifest name -> the manifest registered under it
_OWNED: set[str] = set()                 # dataset names d2seg registered


def _register(info) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from d2seg.data.d2_metadata import lazy_metadata

    DatasetCatalog.register(info.name, info.load)
    MetadataCatalog[info.name] = lazy_metadata(info)
    _OWNED.add(info.name)


def dataset_names(manifest: Manifest) -> list[str]:
    """The names ``register_manifest`` registers for this manifest, without registering."""
    from d2seg.data.catalog import dataset_names as names

    return names(manifest)


def register_manifest(manifest: Manifest) -> list[str]:
    """Register every split; again with the same manifest is a no-op, the same file with other
    contents replaces it, another file declaring the same name is an error."""
    from detectron2.data import DatasetCatalog

    previous = _REGISTERED.get(manifest.name)
    if previous is not None:
        if previous == manifest:
            return dataset_names(manifest)
        if previous.path == manifest.path:  # the same file, edited (or another cache folder)
            unregister_manifest(manifest.name)
            return register_manifest(manifest)
        raise D2SegError(f"dataset name '{manifest.name}' is already registered from "
                         f"{previous.path} with different contents", file=str(manifest.path),
                         where="name", hint="give each manifest its own name")
    taken = [n for n in dataset_names(manifest) if n in DatasetCatalog.list()]
    if taken:
        raise D2SegError(f"dataset '{taken[0]}' is already registered in detectron2",
                         file=str(manifest.path), where="name", hint="choose another name")
    from d2seg.data import catalog

    infos = catalog.infos_for(manifest)  # the categories are read (and checked) here
    registered = []
    try:
        for info in infos:
            _register(info)
            registered.append(info.name)
    except Exception:
        _unregister(registered)
        raise
    catalog.register_manifest(manifest)
    _REGISTERED[manifest.name] = manifest
    return registered


def _unregister(names) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for n in list(names):
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)
        _OWNED.discard(n)


def unregister_manifest(name: str) -> None:
    """Forget a manifest's datasets (tests, or re-registering an edited manifest)."""
    from d2seg.data import catalog

    catalog.unregister_manifest(name)
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
