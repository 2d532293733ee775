"""A registered dataset's COCO instances file and image folder (the one place that looks it up)."""

from __future__ import annotations

from d2seg.errors import D2SegError


def dataset_files(name: str, where: str = "--dataset") -> tuple[str, str | None]:
    """``(json_file, image_root)`` of the registered dataset ``name`` (torch-free catalog)."""
    from d2seg.data.catalog import dataset_metadata

    meta = dataset_metadata(name, where=where)
    json_file = meta.get("json_file", None)
    if not json_file:
        raise D2SegError(f"dataset {name!r} has no COCO instances file", where=where,
                         hint="use an instance dataset, or give --gt JSON --images DIR")
    return str(json_file), meta.get("image_root", None)
