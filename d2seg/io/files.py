"""Write files atomically: a reader, or a run killed mid-write, sees the old file or the new one.

Every output d2seg writes (checkpoints, JSON, reports, PNGs, plots) goes through
:func:`atomic_output`: the bytes go to a uniquely named temporary file beside the target (same
file system, so the rename is atomic), which then replaces the target; on any failure the
temporary file is removed and the target is left as it was. The temporary file is created with
``open(..., "x")``, so the result gets the umask's permissions (``tempfile.mkstemp`` would
make every output readable by its owner only).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import IO, BinaryIO, Iterator

#: Suffix of the temporary files; a folder's leftovers (a killed run) can be found by it.
TEMP_SUFFIX = ".d2seg-tmp"


def is_leftover_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def open_temporary_beside(path: str | os.PathLike, mode: str = "xb",
                          **open_options) -> tuple[Path, IO]:
    """A new, uniquely named file in ``path``'s folder (created if missing), open for writing,
    and its path: ``.<name>.<random>.d2seg-tmp``. ``mode`` must create (``"x"``/``"xb"``), so an
    existing file, or a symlink planted at the name, is never opened (a new name is drawn)."""
    if "x" not in mode:
        raise ValueError(f"mode must create a new file ('x'), got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            return tmp, open(tmp, mode, **open_options)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content to; it replaces ``path`` when the block
    ends without an exception. ``durable``: fsync the data and the folder (checkpoints)."""
    path = Path(path)
    tmp, file = open_temporary_beside(path)  # "x": never another writer's file
    try:
        with file as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_output(path) as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj, **dump_options) -> Path:
    """``obj`` as JSON (``dump_options`` as for ``json.dumps``: indent, default ...)."""
    return write_bytes_atomic(path, json.dumps(obj, **dump_options).encode("utf-8"))


def write_png_atomic(path: str | os.PathLike, image) -> Path:
    """An array as PNG, encoded by OpenCV (BGR channel order, 8 or 16 bits)."""
    import cv2

    from d2seg.errors import D2SegError

    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise D2SegError("could not encode the PNG", file=str(path))
    return write_bytes_atomic(path, buffer.tobytes())


class UniqueNames:
    """Hands out output names, each at most once, so that inputs with the same name (``a/x.png``
    and ``b/x.png``) get separate outputs: a name already handed out gets a numeric suffix,
    ``x`` -> ``x_2``, ``x_3``, ... (the first one free). Names are compared case-folded, as a
    case-insensitive file system would (``X`` and ``x`` are one file there)."""

    def __init__(self, taken=()):
        self._taken = {str(n).casefold() for n in taken}

    def __contains__(self, name: str) -> bool:
        return name.casefold() in self._taken

    def take(self, name: str) -> str:
        unique, n = name, 1
        while unique in self:
            n += 1
            unique = f"{name}_{n}"
        self._taken.add(unique.casefold())
        return unique


def save_figure_atomic(fig, path: str | os.PathLike, **savefig_options) -> Path:
    """A matplotlib figure saved in the format its suffix names, then closed."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_output(path) as f:
            fig.savefig(f, format=path.suffix.lstrip(".") or "png", **savefig_options)
    finally:
        plt.close(fig)
    return path
