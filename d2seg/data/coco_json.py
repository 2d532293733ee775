"""COCO JSON access that costs what it must: whole-file parsing only when a split is used, and
cheap reads of what registration needs (the categories, whether any mask is RLE).

Why: a COCO-size file (118k images, 883k polygons, ~300 MB) takes ~20 s and ~2.5 GB to parse
with ``json``; listing datasets or building a config needs only its 80 category names.

* :func:`d2seg.io.json.read_json` parses a whole file (orjson when installed: ~3x faster than
  ``json``).
* :func:`read_categories` finds the ``"categories"`` value by scanning the bytes backwards in
  fixed-size chunks (constant memory; exports write it last, so one chunk is read) and decodes
  only that value (the last such object key holding a list of objects; the loader checks the
  ids again when it parses the file); the file is parsed whole only when no such key is found. :func:`has_rle` says
  whether any annotation's ``segmentation`` is an RLE object, by a byte scan too.
* Both results are cached in ``$D2SEG_CACHE/catalog``, keyed on the file's (path, size,
  mtime): the next command reads a few hundred bytes.

No torch, no detectron2, no numpy here: ``d2seg data list`` imports this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path

from d2seg.errors import D2SegError
from d2seg.io.json import loads, read_json

CACHE_VERSION = 1
_CHUNK = 1 << 20  # bytes read at a time by the scans


def read_coco_top(path) -> dict:
    """The parsed file, checked to be an object with lists images/annotations/categories."""
    return check_top(read_json(path, "annotation file"), path)


def check_top(data, path) -> dict:
    """``data`` if it is an object with lists images/annotations/categories, else the error."""
    if not isinstance(data, dict):
        raise D2SegError(f"a COCO JSON is an object, got {type(data).__name__}", file=str(path))
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise D2SegError("missing or not a list", file=str(path), where=key)
    return data


def validate_categories(cats, path) -> list[dict]:
    """Each category a dict with an integer id and a string name; ids unique; at least one."""
    if not isinstance(cats, list):
        raise D2SegError("missing or not a list", file=str(path), where="categories")
    for i, cat in enumerate(cats):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
            raise D2SegError("each category needs an integer 'id' and a string 'name'",
                             file=str(path), where=f"categories[{i}]")
    ids = Counter(c["id"] for c in cats)
    dup = sorted(i for i, n in ids.items() if n > 1)
    if dup:
        raise D2SegError(f"duplicate category ids {dup}", file=str(path), where="categories")
    if not cats:
        raise D2SegError("no categories declared", file=str(path), where="categories")
    return cats


# ----------------------------------------------------------------------------- the cache

def file_key(path) -> list:
    """(absolute path, size, mtime_ns): what says a file is unchanged without reading it."""
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def _cache_file(path) -> Path:
    from d2seg.data.cache import cache_dir

    digest = hashlib.blake2b(os.path.abspath(path).encode(), digest_size=12).hexdigest()
    return cache_dir() / "catalog" / f"{digest}.json"


def _cache_read(path, key: list) -> dict:
    try:
        entry = json.loads(_cache_file(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(entry, dict) or entry.get("key") != key or entry.get("version") != CACHE_VERSION:
        return {}
    return entry


def _cache_write(path, key: list, **values) -> None:
    from d2seg.io.files import write_json_atomic

    entry = _cache_read(path, key) or {"version": CACHE_VERSION, "key": key}
    entry.update(values)
    try:
        target = _cache_file(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(target, entry)
    except OSError:  # a read-only cache only costs the scan next time
        pass


# ----------------------------------------------------------------------------- byte scans

def _chunks(path, overlap: int):
    """(offset of chunk start, bytes) over the file, each chunk starting ``overlap`` bytes
    before the previous one ended so a match across a boundary is seen."""
    with open(path, "rb") as f:
        offset, tail = 0, b""
        while True:
            block = f.read(_CHUNK)
            if not block:
                return
            yield offset - len(tail), tail + block
            offset += len(block)
            tail = block[-overlap:] if overlap else b""


def find_all(path, needle: bytes) -> list[int]:
    """File offsets of every occurrence of ``needle`` (constant memory)."""
    found = []
    for start, chunk in _chunks(path, len(needle) - 1):
        i = chunk.find(needle)
        while i >= 0:
            if start + i not in found:
                found.append(start + i)
            i = chunk.find(needle, i + 1)
    return found


_WS = b" \t\r\n"


def rfind_each(path, needle: bytes):
    """File offsets of ``needle``, last first, reading the file backwards a chunk at a time
    (COCO exports write ``categories`` last: then only the last chunk is read)."""
    size = os.path.getsize(path)
    overlap = len(needle) - 1
    seen = set()
    with open(path, "rb") as f:
        end = size
        while end > 0:
            start = max(0, end - _CHUNK)
            f.seek(start)
            block = f.read(min(size, end + overlap) - start)
            i = block.rfind(needle)
            while i >= 0:
                if start + i not in seen:
                    seen.add(start + i)
                    yield start + i
                i = block.rfind(needle, 0, i)
            end = start


def _value_after_key(path, offset: int, key_len: int):
    """Decode the JSON value following the key at ``offset`` (reading a growing window), or
    raise ValueError when it is not ``"key": value`` preceded by ``{`` or ``,``."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        back = max(0, offset - 64)
        f.seek(back)
        before = f.read(offset - back).rstrip(_WS)
        if not before or before[-1:] not in (b"{", b","):
            raise ValueError("not an object key")
        window = 1 << 16
        while True:
            f.seek(offset + key_len)
            text = f.read(window).decode("utf-8")
            stripped = text.lstrip()
            if not stripped.startswith(":"):
                raise ValueError("no colon after the key")
            body = stripped[1:].lstrip()
            try:
                value, _ = json.JSONDecoder().raw_decode(body)
                return value
            except ValueError:
                if offset + key_len + window >= size:
                    raise
                window *= 4


def read_categories(path) -> list[dict]:
    """The file's ``categories`` (validated), cheaply: see the module docstring."""
    path = Path(path)
    try:
        key = file_key(path)
    except OSError as e:
        raise D2SegError(f"cannot read: {e.strerror}", file=str(path)) from None
    cached = _cache_read(path, key).get("categories")
    if isinstance(cached, list):
        return cached
    cats = None
    for offset in rfind_each(path, b'"categories"'):  # the last object key that holds a list
        try:
            value = _value_after_key(path, offset, len(b'"categories"'))
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(value, list) and all(isinstance(c, dict) for c in value):
            cats = value
        break
    if cats is None:  # absent, ambiguous or odd: parse the whole file (and say what is wrong)
        cats = read_coco_top(path)["categories"]
    validate_categories(cats, path)
    _cache_write(path, key, categories=cats)
    return cats


_RLE = re.compile(rb'"segmentation"\s*:\s*\{')


def has_rle(path) -> bool:
    """Whether any ``segmentation`` in the file is an object (an RLE mask): a byte scan."""
    key = file_key(path)
    cached = _cache_read(path, key).get("has_rle")
    if isinstance(cached, bool):
        return cached
    found = False
    for _, chunk in _chunks(path, 256):
        if b'"counts"' in chunk and _RLE.search(chunk):
            found = True
            break
    _cache_write(path, key, has_rle=found)
    return found


# ----------------------------------------------------------------------------- chunked parsing

class ChunkingFailed(Exception):
    """The file could not be cut into annotation chunks: parse it whole instead."""


def _array_layout(path, key: bytes, chunk: int):
    """(array start, chunk ends, tail start, array end, tail items) of the top-level array
    ``key``: chunk ends are offsets just after an element's closing ``}`` followed by ``,{``
    (candidates: a wrong one makes a chunk unparsable, which is detected); the tail (the last
    elements) is decoded here, which also finds where the array ends. None when the key is
    absent, repeated or not followed by an array."""
    offsets = find_all(path, key)
    if len(offsets) != 1:
        return None
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        back = max(0, offsets[0] - 64)
        f.seek(back)
        before = f.read(offsets[0] - back).rstrip(_WS)
        if not before or before[-1:] not in (b"{", b","):
            return None
        f.seek(offsets[0] + len(key))
        head = f.read(256)
        stripped = head.lstrip(_WS)
        if not stripped.startswith(b":") or not stripped[1:].lstrip(_WS).startswith(b"["):
            return None
        start = offsets[0] + len(key) + head.index(b"[") + 1
        ends, pos = [], start
        while size - pos > 2 * chunk:
            f.seek(pos)
            block = f.read(chunk)
            i = block.rfind(b"},")
            while i >= 0:
                rest = block[i + 2:i + 66].lstrip(_WS)
                if rest.startswith(b"{"):
                    break
                i = block.rfind(b"},", 0, i)
            if i < 0:
                return None
            ends.append(pos + i + 1)
            pos = pos + i + 2  # after the comma
        f.seek(pos)
        tail = f.read()
    try:
        text = "[" + tail.decode("utf-8")
        items, end = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return None
    array_end = pos + len(text[:end].encode("utf-8")) - 1
    return start, ends, pos, array_end, items


def read_coco_chunked(path, key: str = "annotations", chunk: int = 8 << 20):
    """(the document with ``key`` emptied, an iterator over lists of its elements): parses the
    annotations a chunk at a time, so no parse tree of the whole file ever exists (the caller
    turns each chunk into its compact form before the next one is parsed). Raises
    :class:`ChunkingFailed` (possibly after some chunks) when the file does not split."""
    path = Path(path)
    layout = _array_layout(path, f'"{key}"'.encode(), chunk)
    if layout is None:
        raise ChunkingFailed(str(path))
    start, ends, tail_start, array_end, tail_items = layout
    with open(path, "rb") as f:
        head = f.read(start)
        f.seek(array_end)
        rest = f.read()
    try:
        doc = loads(head + b"]" + rest)
    except ValueError:
        raise ChunkingFailed(str(path)) from None
    del head, rest
    if not isinstance(doc, dict) or doc.get(key) != []:
        raise ChunkingFailed(str(path))

    def chunks():
        prev = start
        with open(path, "rb") as f:
            for end in ends:
                f.seek(prev)
                piece = f.read(end - prev)
                try:
                    items = loads(b"[" + piece + b"]")
                except ValueError:
                    raise ChunkingFailed(str(path)) from None
                del piece
                yield items
                prev = end + 1
        if prev != tail_start:
            raise ChunkingFailed(str(path))
        yield tail_items

    return doc, chunks()
