"""d2seg.io.panoptic_png: every decoder path gives the ids that were encoded, and Pillow's decode.

References: the id map a test encodes itself (written by OpenCV and by Pillow with every
compression setting, so all five PNG row filters occur), and for files it did not make (the
panopticapi sample) Pillow's decode turned into R + 256 G + 256^2 B by hand.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from d2seg.errors import D2SegError
from d2seg.io import panoptic_png as png

HAS_WUFFS = png.wuffs_decoder() is not None  # the `decoder` fixture is in conftest.py


def pillow_ids(path) -> np.ndarray:
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def to_rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], -1).astype(np.uint8)


def id_maps(seed: int):
    """Noise (every row filter is chosen somewhere), flat regions, and awkward shapes."""
    g = np.random.default_rng(seed)
    yield g.integers(0, 1 << 24, (37, 53))
    regions = np.zeros((120, 161), np.int64)
    for _ in range(12):
        y, x = g.integers(0, 120), g.integers(0, 161)
        regions[y:y + g.integers(5, 60), x:x + g.integers(5, 80)] = g.integers(1, 1 << 24)
    yield regions
    for shape in [(1, 1), (1, 7), (9, 1), (3, 1001)]:
        yield g.integers(0, 1 << 24, shape)


def _writers():
    def opencv(level):
        def write(path, ids):
            cv2.imwrite(str(path), to_rgb(ids)[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, level])
        return write

    def pillow(**kw):
        def write(path, ids):
            Image.fromarray(to_rgb(ids)).save(path, **kw)
        return write

    def pillow_rgba(path, ids):  # alpha must not leak into the id
        alpha = (np.arange(ids.size).reshape(ids.shape) * 37 % 256).astype(np.uint8)
        Image.fromarray(np.dstack([to_rgb(ids), alpha]), "RGBA").save(path)

    def pillow_trns(path, ids):  # an RGB colour key marked transparent (tRNS chunk)
        rgb = to_rgb(ids)
        Image.fromarray(rgb).save(path, transparency=tuple(int(v) for v in rgb[0, 0]))

    return {"opencv-0": opencv(0), "opencv-1": opencv(1), "opencv-9": opencv(9),
            "pillow": pillow(), "pillow-optimize": pillow(optimize=True),
            "pillow-level0": pillow(compress_level=0), "pillow-level9": pillow(compress_level=9),
            "pillow-rgba": pillow_rgba, "pillow-trns": pillow_trns}


WRITERS = _writers()


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_ids_read_back_exactly(decoder, writer, tmp_path):
    for k, ids in enumerate(id_maps(seed=len(writer))):
        path = tmp_path / f"{k}.png"
        WRITERS[writer](path, ids)
        got = png.read_panoptic_png(path)
        assert got.dtype == np.uint32 and got.shape == ids.shape
        assert np.array_equal(got, ids), (writer, ids.shape)


def test_reuses_the_callers_buffer_on_the_opencv_path(tmp_path, monkeypatch):
    monkeypatch.setattr(png, "_decoder", None)
    ids = np.random.default_rng(0).integers(0, 1 << 24, (20, 30))
    WRITERS["pillow"](tmp_path / "a.png", ids)
    first = png.read_rgba(tmp_path / "a.png")
    again = png.read_rgba(tmp_path / "a.png", out=first)
    assert again is first
    assert np.array_equal(png.ids_of_rgba(again).reshape(ids.shape), ids)


def test_formats_outside_the_fast_path_go_through_pillow(decoder, tmp_path):
    g = np.random.default_rng(1)
    palette = Image.fromarray(g.integers(0, 7, (25, 31)).astype(np.uint8), "P")
    palette.putpalette(g.integers(0, 256, 768).astype(np.uint8).tobytes())
    palette.save(tmp_path / "palette.png")
    Image.fromarray(g.integers(0, 256, (25, 31)).astype(np.uint8), "L").save(tmp_path / "grey.png")
    wide = g.integers(0, 65536, (25, 31, 3)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "16bit.png"), wide)  # BGR order on disk: channel 2 is red
    for name in ("palette", "grey"):
        assert np.array_equal(png.read_panoptic_png(tmp_path / f"{name}.png"),
                              pillow_ids(tmp_path / f"{name}.png")), name
    high = (wide >> 8).astype(np.int64)  # 16-bit samples keep their high byte
    expected = high[..., 2] + 256 * high[..., 1] + 65536 * high[..., 0]
    assert np.array_equal(png.read_panoptic_png(tmp_path / "16bit.png"), expected)


def test_panopticapi_sample_matches_pillow(decoder, shared_data):
    folder = shared_data / "panopticapi_sample" / "sample_data" / "panoptic_examples"
    files = sorted(folder.glob("*.png"))
    assert files
    for path in files:
        assert np.array_equal(png.read_panoptic_png(path), pillow_ids(path)), path.name


def _png_bytes(ids) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(to_rgb(ids)).save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@pytest.mark.parametrize("case", ["missing", "empty", "folder", "text", "truncated", "corrupt",
                                  "bomb"])
def test_bad_files_are_one_line_errors_naming_the_file(decoder, case, tmp_path):
    path = tmp_path / "x.png"
    good = _png_bytes(np.random.default_rng(2).integers(0, 1 << 24, (40, 50)))
    if case == "empty":
        path.write_bytes(b"")
    elif case == "folder":
        path.mkdir()
    elif case == "text":
        path.write_text("id,category\n1,2\n")
    elif case == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif case == "corrupt":
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF
        path.write_bytes(bytes(bad))
    elif case == "bomb":  # a valid header announcing 10^10 pixels: refused before allocating
        header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
        path.write_bytes(png._SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IEND", b""))
    with pytest.raises(D2SegError) as caught:
        png.read_panoptic_png(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    expected = {"missing": "not found", "empty": "empty", "folder": "folder", "text": "not a PNG",
                "truncated": "unreadable", "corrupt": "unreadable", "bomb": "decompression-bomb"}
    assert expected[case] in message


def test_decoder_name_says_which_decoder_runs(monkeypatch):
    assert png.decoder_name().startswith("Wuffs" if HAS_WUFFS else "OpenCV")
    monkeypatch.setattr(png, "_decoder", None)
    assert "d2seg[fast]" in png.decoder_name()
