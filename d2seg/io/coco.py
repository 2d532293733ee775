"""COCO instance annotation and results files, read with the checks drawing, GrabCut and the
watershed need (the full checker is ``d2seg.data.check``): one line naming file, entry and
missing key."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from d2seg.errors import D2SegError
from d2seg.io.json import read_json_or_parsed

__all__ = ["load_coco", "load_results", "json_type", "source_name"]


def source_name(source) -> str | None:
    """The file to name in an error: ``source`` when it is a path, not loaded data."""
    return str(source) if isinstance(source, (str, Path)) else None


def json_type(value) -> str:
    """How JSON calls the type of a parsed value, for error lines."""
    return {dict: "JSON object", list: "JSON list", str: "string", bool: "boolean",
            type(None): "null"}.get(type(value), "number")


def _require_keys(entries, keys: tuple[str, ...], what: str, source) -> None:
    for i, e in enumerate(entries):
        if not isinstance(e, Mapping):
            raise D2SegError(f"is a {json_type(e)}, not an object", file=source_name(source),
                             where=f"{what} {i}")
        missing = [k for k in keys if k not in e]
        if missing:
            raise D2SegError(f"no {', '.join(repr(k) for k in missing)}", file=source_name(source),
                             where=f"{what} {i}")


def load_coco(source) -> dict:
    """A COCO instances JSON (path or dict), checked for the keys drawing needs."""
    coco = read_json_or_parsed(source, "COCO annotation file")
    if not isinstance(coco, Mapping) or not isinstance(coco.get("images"), list):
        raise D2SegError("not a COCO annotation file (no 'images' list)", file=source_name(source))
    _require_keys(coco["images"], ("id", "file_name", "height", "width"), "images", source)
    _require_keys(coco.get("annotations", []), ("image_id", "category_id"), "annotations", source)
    _require_keys(coco.get("categories", []), ("id",), "categories", source)
    return coco


def load_results(source, keys: tuple[str, ...] = ("image_id", "category_id")) -> list:
    """A COCO results JSON (path or list): a list of detections, each with ``keys`` (scoring
    needs ``score`` too; drawing does not)."""
    results = read_json_or_parsed(source, "results file")
    if not isinstance(results, list):
        raise D2SegError(f"COCO results must be a JSON list of detections, not a "
                         f"{json_type(results)}", file=source_name(source),
                         hint="the format written by COCOEvaluator / d2seg predict")
    _require_keys(results, keys, "detection", source)
    return results
