"""Where d2seg keeps data it can recreate (the demo dataset, derived labels): one cache folder.

``$D2SEG_CACHE`` when set, else ``$XDG_CACHE_HOME/d2seg``, else ``~/.cache/d2seg``. Never the
install tree: in a wheel install that is site-packages, which may be read-only or shared.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder (an absolute path; not created here)."""
    explicit = os.environ.get("D2SEG_CACHE", "").strip()
    if explicit:
        return Path(os.path.abspath(os.path.expanduser(explicit)))
    xdg = os.path.expanduser(os.environ.get("XDG_CACHE_HOME", "").strip())
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"  # XDG: relative is ignored
    return base / "d2seg"
