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

from d2seg.data.manifest import BROKEN_MANIFESTS, Manifest, broken_manifest_for
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
        broken = broken_manifest_for(dataset_name)
        if broken is not None:  # its manifest was set aside: that is the reason to give
            raise broken
        close = difflib.get_close_matches(dataset_name, DatasetCatalog.list(), n=3)
        raise D2SegError(f"dataset '{dataset_name}' is not registered", where=where,
                         hint=(f"did you mean {', '.join(close)}? " if close else "")
                         + "`d2seg data list` shows the registered datasets")
    return MetadataCatalog.get(dataset_name)


def register_datasets() -> list[str]:
    """Register every manifest found into detectron2's catalogs; returns the dataset names.

    Registration is lazy (``d2seg.data.catalog``): it reads each manifest and each JSON's
    categories (cached), never a whole annotation file. A manifest that cannot be read or
    registered is set aside in BROKEN_MANIFESTS instead of stopping every command (one bad file
    in datasets/ must not block work on other datasets); asking for one of its datasets raises
    its error (d2seg.data.register.registered_metadata), and ``d2seg data list`` shows it.
    Commands that run no model use ``d2seg.data.catalog`` instead (no torch).
    """
    from d2seg.data import catalog

    names = []
    for manifest in catalog.scan():
        try:
            names += register_manifest(manifest)
        except D2SegError as e:
            BROKEN_MANIFESTS[str(manifest.path)] = e
    return names
