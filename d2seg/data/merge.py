"""Join COCO instances datasets into one: ``d2seg data merge A.json B.json --out M.json``.

What it is for: pre-annotations (``d2seg label suggest``) reviewed in batches, or a new batch of
labels joined to the dataset so far. Rules:

* **images** are the same file when their ``file_name`` is the same (inputs from one image
  folder), or, with ``images`` (one folder per input), when they resolve to the same path; the
  merged ``file_name`` is then relative to ``root`` (default: the folders' common folder). An image
  in two inputs is an error unless ``prefer`` names which input's labels win (an input's path,
  ``first`` or ``last``); the other input's annotations of that image are dropped.
* **categories** are matched by name. The first input's categories keep their ids; a name new in
  a later input gets the next free id (one note line each). A name listed twice in one input, or
  an annotation whose category id its input does not declare, is an error.
* **ids** of images and annotations are renumbered 1..N in input order; ``drop_score`` removes
  the ``score`` field pre-annotations carry.

Inputs are never modified; the output is written atomically. No torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from d2seg.data.check import load_coco_json
from d2seg.errors import D2SegError
from d2seg.io.files import write_json_atomic

__all__ = ["merge_coco"]


def _categories_by_name(path: str, data: dict) -> dict[int, dict]:
    """{category id: category} of one input, names unique."""
    seen: dict[str, int] = {}
    by_id: dict[int, dict] = {}
    for k, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("name"), str):
            raise D2SegError("category needs an 'id' and a 'name'", file=path,
                             where=f"categories[{k}]")
        if c["name"] in seen:
            raise D2SegError(f"category name {c['name']!r} is listed twice (ids {seen[c['name']]} "
                             f"and {c['id']})", file=path, where="categories",
                             hint="give each category one entry")
        seen[c["name"]] = c["id"]
        by_id[c["id"]] = c
    return by_id


def merge_coco(inputs, out_path, *, images=None, root=None, prefer: str | None = None,
               drop_score: bool = False) -> dict:
    """Merge COCO instances files (see the module doc). Returns a summary with ``notes`` (one
    line each: categories added, supercategory differences, duplicates resolved)."""
    inputs = [str(p) for p in inputs]
    if len(inputs) < 2:
        raise D2SegError("merge needs at least two COCO files", where="d2seg data merge")
    if images is not None and len(images) != len(inputs):
        raise D2SegError(f"{len(images)} image folders for {len(inputs)} inputs",
                         where="--images", hint="give one image folder per input, in order")
    if prefer not in (None, "first", "last"):
        matches = [i for i, p in enumerate(inputs)
                   if p == prefer or Path(p).resolve() == Path(prefer).resolve()]
        if not matches:
            raise D2SegError(f"{prefer!r} is not one of the inputs", where="--prefer",
                             hint="name an input file, or first / last")
        prefer_index = matches[0]
    else:
        prefer_index = {None: None, "first": 0, "last": len(inputs) - 1}[prefer]
    if images is not None:
        folders = [Path(d).resolve() for d in images]
        base = Path(root).resolve() if root else Path(os.path.commonpath([str(f) for f in folders]))
    datas = [load_coco_json(p) for p in inputs]
    notes: list[str] = []

    # categories, by name
    merged_cats: list[dict] = []
    by_name: dict[str, dict] = {}
    remap: list[dict[int, int]] = []
    for path, data in zip(inputs, datas):
        ids = {}
        for cid, c in _categories_by_name(path, data).items():
            known = by_name.get(c["name"])
            if known is None:
                new_id = cid if cid not in {m["id"] for m in merged_cats} else \
                    max(m["id"] for m in merged_cats) + 1
                known = dict(c, id=new_id)
                merged_cats.append(known)
                by_name[c["name"]] = known
                if merged_cats and path != inputs[0]:
                    notes.append(f"{path}: adds category {c['name']!r} (id {new_id})")
            elif c.get("supercategory") != known.get("supercategory"):
                notes.append(f"{path}: category {c['name']!r} has supercategory "
                             f"{c.get('supercategory')!r}, the merge keeps "
                             f"{known.get('supercategory')!r}")
            ids[cid] = known["id"]
        remap.append(ids)

    # images: key -> (input index, image entry); duplicates resolved by prefer
    owner: dict[object, int] = {}
    order: list[object] = []
    entries: dict[tuple[int, object], dict] = {}
    image_key: list[dict] = []
    for k, (path, data) in enumerate(zip(inputs, datas)):
        keys = {}
        for j, im in enumerate(data["images"]):
            if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
                raise D2SegError("image needs an 'id' and a 'file_name'", file=path,
                                 where=f"images[{j}]")
            key = ((folders[k] / im["file_name"]).resolve() if images is not None
                   else im["file_name"])
            if (k, key) in entries:
                raise D2SegError(f"{im['file_name']} is listed twice", file=path,
                                 where=f"image {im['id']}")
            if im["id"] in keys:
                raise D2SegError(f"image id {im['id']} is used twice", file=path,
                                 where=f"image {im['id']}")
            keys[im["id"]] = key
            entries[(k, key)] = im
            if key not in owner:
                owner[key] = k
                order.append(key)
                continue
            first = owner[key]
            if prefer_index is None or prefer_index not in (first, k) and prefer not in ("first", "last"):
                raise D2SegError(f"{im['file_name']} is also in {inputs[first]}", file=path,
                                 where=f"image {im['id']}",
                                 hint="pass --prefer FILE (whose labels win), first or last")
            winner = first if prefer == "first" or prefer_index == first else k
            owner[key] = winner
            notes.append(f"{im['file_name']}: in {inputs[first]} and {path}; keeping "
                         f"{inputs[winner]}'s labels")
        image_key.append(keys)

    new_image_id = {key: i + 1 for i, key in enumerate(order)}
    out_images = []
    for key in order:
        im = dict(entries[(owner[key], key)], id=new_image_id[key])
        if images is not None:
            im["file_name"] = Path(os.path.relpath(key, base)).as_posix()
        out_images.append(im)
    out_anns = []
    for k, (path, data) in enumerate(zip(inputs, datas)):
        for j, a in enumerate(data["annotations"]):
            if not isinstance(a, dict):
                raise D2SegError("annotation is not an object", file=path,
                                 where=f"annotations[{j}]")
            where = f"annotation {a.get('id', j)}"
            if a.get("category_id") not in remap[k]:
                raise D2SegError(f"unknown category id {a.get('category_id')!r} (not in this "
                                 "file's 'categories')", file=path, where=where,
                                 hint="add the category or fix the annotation")
            if a.get("image_id") not in image_key[k]:
                raise D2SegError(f"unknown image id {a.get('image_id')!r}", file=path, where=where)
            key = image_key[k][a["image_id"]]
            if owner[key] != k:
                continue
            new = dict(a, id=len(out_anns) + 1, image_id=new_image_id[key],
                       category_id=remap[k][a["category_id"]])
            if drop_score:
                new.pop("score", None)
            out_anns.append(new)
    merged = {"images": out_images, "annotations": out_anns, "categories": merged_cats}
    write_json_atomic(out_path, merged)
    return {"out": str(out_path), "images": len(out_images), "annotations": len(out_anns),
            "categories": len(merged_cats), "notes": notes,
            "image_root": str(base) if images is not None else None}
