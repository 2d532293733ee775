"""Read checkpoint files without ever running code from them.

A pickle can name any importable callable and have the loader call it, so a downloaded
checkpoint could run ``os.system`` the moment it is opened. Weights need none of that:
``.pth`` files go through ``torch.load(weights_only=True)``, and detectron2/Detectron ``.pkl``
files through an unpickler that admits only the few globals such files contain (containers,
numpy arrays, dtypes and scalars). Anything else is refused with a :class:`D2SegError` naming
the file and the global it asked for; a truncated or corrupt file gives one line too.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile

from d2seg.errors import D2SegError

#: (module, name) pairs a weights pickle may reference: what numpy and the standard library
#: emit when pickling dicts of arrays with protocols 2-5 (Python 2 pickles included).
ALLOWED_PICKLE_GLOBALS = frozenset({
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol-2 pickles made by Python 3 store bytes
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    *((f"numpy.{core}.multiarray", name) for core in ("core", "_core")
      for name in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
})

_NUMPY_DTYPE_CLASS = re.compile(r"^[A-Z][A-Za-z0-9]*DType$")  # numpy.dtypes.Float32DType ...
_CORRUPT = (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError,
            UnicodeDecodeError, zipfile.BadZipFile, AttributeError, ImportError)


class _WeightsUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`ALLOWED_PICKLE_GLOBALS`."""

    def __init__(self, file, path: str):
        super().__init__(file, encoding="latin1")  # Detectron (Python 2) pickles need latin1
        self._path = path

    def find_class(self, module: str, name: str):
        allowed = (module, name) in ALLOWED_PICKLE_GLOBALS or (
            module == "numpy.dtypes" and _NUMPY_DTYPE_CLASS.match(name))
        if not allowed:
            raise D2SegError(f"refused to unpickle: the file asks for '{module}.{name}', which a "
                             "weights file never needs (it could run code)", file=self._path,
                             hint="only load checkpoints from sources you trust; re-save the "
                                  "weights as a dict of numpy arrays or tensors")
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise D2SegError("refused to unpickle: the file uses persistent references (torch "
                         "tensors saved with pickle?)", file=self._path,
                         hint="save tensors with torch.save to a .pth file")


def load_pickle_safely(path: str | os.PathLike):
    """Unpickle a weights ``.pkl`` (detectron2 / Detectron model zoo) admitting data only."""
    path = str(path)
    data = _read_bytes(path)
    try:
        return _WeightsUnpickler(io.BytesIO(data), path).load()
    except D2SegError:
        raise
    except _CORRUPT as e:
        raise D2SegError(f"cannot read checkpoint: truncated or corrupt pickle ({type(e).__name__}: "
                         f"{_first_line(e)})", file=path) from e


_TORCH_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)|unsupported GLOBAL ([\w.]+)"
                           r"|Trying to load unsupported object ([\w.]+)", re.IGNORECASE)


def load_torch_safely(path: str | os.PathLike):
    """``torch.load(weights_only=True)`` on the CPU, with failures as one clear line.

    numpy arrays and dtypes are admitted as in ``.pkl`` files: some converted checkpoints
    hold them, and rebuilding an array runs no code of the file's choosing.
    """
    import numpy as np
    import torch

    path = str(path)
    data = _read_bytes(path)
    numpy_globals = [np.ndarray, np.dtype, np._core.multiarray._reconstruct,
                     np._core.multiarray.scalar]
    numpy_globals += [type(np.dtype(t)) for t in "?bhilqBHILQefdgFDG"]
    try:
        with torch.serialization.safe_globals(numpy_globals):
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        match = _TORCH_GLOBAL.search(str(e))
        if match or "weights only load failed" in str(e).lower():
            name = next((g for g in match.groups() if g), None) if match else None
            asked = f"asks for '{name}'" if name else "holds objects other than tensors"
            raise D2SegError(f"refused to load: the file {asked}, which a weights file never "
                             "needs (it could run code)", file=path,
                             hint="only load checkpoints from sources you trust") from e
        raise D2SegError(f"cannot read checkpoint: truncated or corrupt ({_first_line(e)})",
                         file=path) from e
    except (RuntimeError, *_CORRUPT) as e:
        raise D2SegError(f"cannot read checkpoint: truncated or corrupt ({type(e).__name__}: "
                         f"{_first_line(e)})", file=path) from e


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise D2SegError("checkpoint file not found", file=path,
                         hint="check MODEL.WEIGHTS") from None
    except OSError as e:
        raise D2SegError(f"cannot read checkpoint ({e.strerror})", file=path) from None
    if not data:
        raise D2SegError("checkpoint file is empty", file=path)
    return data


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
