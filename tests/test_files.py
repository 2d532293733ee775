"""d2seg.io.files: atomic writes leave the old file or the whole new one, never a temporary."""

from __future__ import annotations

import json
import os
import stat

import cv2
import numpy as np
import pytest

from d2seg.io import files


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if files.is_leftover_temporary(p.name)]


def test_json_text_and_bytes_round_trip(tmp_path):
    obj = {"a": [1, 2.5, None], "b": "é"}
    files.write_json_atomic(tmp_path / "sub" / "x.json", obj, indent=1)
    assert json.loads((tmp_path / "sub" / "x.json").read_text(encoding="utf-8")) == obj
    files.write_text_atomic(tmp_path / "t.md", "# é\n")
    assert (tmp_path / "t.md").read_text(encoding="utf-8") == "# é\n"
    files.write_bytes_atomic(tmp_path / "b.bin", b"\x00\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    assert not _leftovers(tmp_path) and not _leftovers(tmp_path / "sub")


def test_failure_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_output(target, durable=True) as f:
            f.write(b"half of the new")
            raise RuntimeError("disk pulled")
    assert target.read_text() == "old" and not _leftovers(tmp_path)
    with pytest.raises(TypeError):  # not JSON-serialisable: nothing written at all
        files.write_json_atomic(tmp_path / "new.json", {"x": object()})
    assert not (tmp_path / "new.json").exists() and not _leftovers(tmp_path)


def test_outputs_get_the_umask_permissions_not_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        path = files.write_text_atomic(tmp_path / "shared.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_png_and_figure(tmp_path):
    import matplotlib.pyplot as plt

    image = np.random.default_rng(0).integers(0, 256, (7, 9, 3)).astype(np.uint8)
    files.write_png_atomic(tmp_path / "p.png", image)
    assert np.array_equal(cv2.imread(str(tmp_path / "p.png")), image)
    wide = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    files.write_png_atomic(tmp_path / "w.png", wide)
    assert np.array_equal(cv2.imread(str(tmp_path / "w.png"), cv2.IMREAD_UNCHANGED), wide)

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    files.save_figure_atomic(fig, tmp_path / "f.png", dpi=50)
    assert cv2.imread(str(tmp_path / "f.png")).shape[:2] == (50, 100)
    assert not plt.fignum_exists(fig.number)  # closed: plots in a loop do not pile up
    assert not _leftovers(tmp_path)


def test_temporary_file_never_opens_a_planted_symlink(tmp_path, monkeypatch):
    """A symlink planted at the temporary name drawn first: ``atomic_output`` draws another
    name, the symlink's target is untouched and the output is a regular file."""
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    draws = iter(["aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(draws))
    (tmp_path / f".out.json.aaaaaaaa{files.TEMP_SUFFIX}").symlink_to(victim)
    files.write_text_atomic(tmp_path / "out.json", "new")
    assert victim.read_text() == "untouched"
    assert (tmp_path / "out.json").read_text() == "new" and not (tmp_path / "out.json").is_symlink()
    with pytest.raises(ValueError):  # a mode that would open an existing file is refused
        files.open_temporary_beside(tmp_path / "x", "wb")


def test_unique_names_add_a_numeric_suffix():
    """Hand-checked: repeats get _2, _3 (case-folded); a name a suffix already took moves on."""
    names = files.UniqueNames()
    assert [names.take(n) for n in ["x", "x", "X", "x_2", "y"]] == ["x", "x_2", "X_3", "x_2_2", "y"]
