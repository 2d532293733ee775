"""Install detectron2 v0.6 with no compiler: fetch, verify, rewrite, install as a pure wheel.

detectron2 is not on PyPI. The sdist ``pb1-detectron2==0.6`` carries upstream v0.6's Python
sources but fails to install (its ``setup.py`` builds the C++ extension and pip refuses its
direct-URL extra). This module reads that file through the simple API of the index pip is
configured with, checks its sha256, applies the listed rewrites in
:mod:`d2seg.compat.source_fixes`, adds a ``detectron2/_C.py`` stand-in that serves d2seg's
PyTorch operators, and installs the result with pip as the distribution ``detectron2``.

Standard library only, so it runs before anything else is installed:
``python -m d2seg.compat.installer``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import html.parser
import importlib.metadata
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from d2seg.compat import lock, source_fixes

SDIST_PROJECT = "pb1-detectron2"
SDIST_FILENAME = "pb1-detectron2-0.6.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
DIST_NAME = "detectron2"
DIST_VERSION = "0.6"
MARKER_FILE = "d2seg_build.json"

# Where each sdist folder lands in the installed tree (upstream's setup.py maps the three
# projects into ``detectron2.projects``; we reproduce that mapping, not its code).
PACKAGE_ROOTS = {
    "detectron2/": "detectron2/",
    "projects/PointRend/point_rend/": "detectron2/projects/point_rend/",
    "projects/DeepLab/deeplab/": "detectron2/projects/deeplab/",
    "projects/Panoptic-DeepLab/panoptic_deeplab/": "detectron2/projects/panoptic_deeplab/",
}

# Upstream's install_requires, minus what only caffe2 export used (future, pydot) and with
# black unpinned: black==21.4b2 breaks with click >= 8.1 and is only used to pretty-print
# LazyConfig.save output.
REQUIRES = [
    "Pillow>=7.1",
    "matplotlib",
    "pycocotools>=2.0.2",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "tabulate",
    "cloudpickle",
    "tqdm>4.29.0",
    "tensorboard",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.10",
    "omegaconf>=2.1",
    "hydra-core>=1.1",
    "black",
]

C_STANDIN = '''"""Stand-in for detectron2's compiled extension, written by d2seg's installer.

Serves PyTorch/numpy implementations of the operators from d2seg.compat.c_extension.
"""
from d2seg.compat.c_extension import *  # noqa: F401,F403
'''


class InstallError(Exception):
    """A set-up failure the user can act on; printed as one line."""


def build_id() -> str:
    """Identify what this d2seg would install, so a stale build is replaced on upgrade."""
    h = hashlib.sha256()
    h.update(SDIST_SHA256.encode())
    h.update(json.dumps([list(f) for f in source_fixes.REWRITES]).encode())
    h.update(C_STANDIN.encode())
    h.update(json.dumps(REQUIRES).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- pip's configuration


def _pip_config() -> dict[str, str]:
    """``pip config list`` as a dict (keys like ``global.index-url``)."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True, text=True, timeout=60, check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    config = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip().strip("'\"")
    return config


def _pip_default_index() -> str:
    from pip._internal.models.index import PyPI  # pip's own default, so no host is named here

    return PyPI.simple_url


def index_urls() -> list[str]:
    """The indexes pip would use, in pip's order: index-url first, then extra-index-urls."""
    config = _pip_config()

    def setting(name: str) -> str | None:
        env = os.environ.get("PIP_" + name.upper().replace("-", "_"))
        if env:
            return env
        for section in ("install", "download", "global"):
            for scope in ("", ":env:"):
                value = config.get(f"{scope}{section}.{name}")
                if value:
                    return value
        return None

    main = setting("index-url") or _pip_default_index()
    extra = (setting("extra-index-url") or "").split()
    return [main] + extra


def _cert_context():
    import ssl

    cert = os.environ.get("PIP_CERT") or _pip_config().get("global.cert")
    if cert and os.path.exists(cert):
        return ssl.create_default_context(cafile=cert)
    return ssl.create_default_context()


# ---------------------------------------------------------------- simple API (PEP 503 / 691)


class _Anchors(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def _open(url: str, accept: str | None = None, timeout: float = 60):
    parts = urllib.parse.urlsplit(url)
    headers = {"User-Agent": "d2seg-installer"}
    if accept:
        headers["Accept"] = accept
    if parts.username:  # credentials in the index URL, as pip allows
        token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    request = urllib.request.Request(url, headers=headers)
    if parts.scheme == "https":
        return urllib.request.urlopen(request, timeout=timeout, context=_cert_context())
    return urllib.request.urlopen(request, timeout=timeout)


def find_sdist_url(index_url: str) -> str | None:
    """URL of the sdist file on one index, or None if that index does not list it."""
    project_url = index_url.rstrip("/") + f"/{SDIST_PROJECT}/"
    if project_url.startswith("file:"):
        project_url += "index.html"
    try:
        with _open(project_url, "application/vnd.pypi.simple.v1+json, text/html;q=0.1") as resp:
            body = resp.read()
            content_type = resp.headers.get("Content-Type", "") if resp.headers else ""
            final_url = resp.geturl()
    except (OSError, ValueError):
        return None
    if "json" in content_type:
        links = [f["url"] for f in json.loads(body).get("files", [])]
    else:
        parser = _Anchors()
        parser.feed(body.decode("utf-8", "replace"))
        links = parser.hrefs
    for link in links:
        absolute = urllib.parse.urljoin(final_url, link)
        if urllib.parse.urlsplit(absolute).path.rsplit("/", 1)[-1] == SDIST_FILENAME:
            return absolute.split("#", 1)[0]
    return None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "d2seg"


def fetch_sdist(indexes: list[str] | None = None) -> Path:
    """Download (or reuse from the cache) the verified sdist; raise InstallError otherwise."""
    cached = _cache_dir() / SDIST_FILENAME
    if cached.is_file() and _sha256(cached.read_bytes()) == SDIST_SHA256:
        return cached
    indexes = indexes or index_urls()
    tried = []
    for index in indexes:
        url = find_sdist_url(index)
        if url is None:
            tried.append(_redact(index))
            continue
        try:
            with _open(url, timeout=300) as resp:
                data = resp.read()
        except OSError as e:
            raise InstallError(
                f"could not download {SDIST_FILENAME} from {_redact(index)} ({e}); check the "
                "network or pip's index settings (PIP_INDEX_URL / pip config), then run again"
            ) from None
        digest = _sha256(data)
        if digest != SDIST_SHA256:
            raise InstallError(
                f"{SDIST_FILENAME} from {_redact(index)} has sha256 {digest}, expected "
                f"{SDIST_SHA256}; the index serves a different file: use a trusted index "
                "(PIP_INDEX_URL) and run again"
            )
        _write_cached(cached, data)
        return cached
    raise InstallError(
        f"{SDIST_PROJECT}=={DIST_VERSION} was not found on the configured package index(es) "
        f"({', '.join(tried)}); point pip at an index that mirrors it (PIP_INDEX_URL), "
        f"or install detectron2 yourself and run again"
    )


def _write_cached(path: Path, data: bytes) -> None:
    """``data`` to a new, uniquely named file beside ``path`` (``mkstemp``: O_EXCL, so a file or
    symlink already at a name is never opened, and two installs never share one), then renamed
    onto ``path``; on failure the temporary file is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username:
        netloc = "***@" + (parts.hostname or "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- wheel


def _wheel_record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def sdist_files(sdist: Path) -> dict[str, bytes]:
    """Installed path -> content for every file the wheel ships, rewrites applied."""
    files: dict[str, bytes] = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            rel = member.name.split("/", 1)[1] if "/" in member.name else member.name
            for src, dst in PACKAGE_ROOTS.items():
                if rel.startswith(src):
                    files[dst + rel[len(src):]] = tar.extractfile(member).read()
                    break
            if rel == "LICENSE":
                files["LICENSE"] = tar.extractfile(member).read()
    source_fixes.apply(files)
    files["detectron2/_C.py"] = C_STANDIN.encode()
    return files


def build_wheel(sdist: Path, out_dir: Path) -> Path:
    """Write ``detectron2-0.6-py3-none-any.whl`` (pure Python) into out_dir."""
    files = sdist_files(sdist)
    license_text = files.pop("LICENSE", b"")
    dist_info = f"{DIST_NAME}-{DIST_VERSION}.dist-info"
    metadata = "\n".join(
        [
            "Metadata-Version: 2.1",
            f"Name: {DIST_NAME}",
            f"Version: {DIST_VERSION}",
            "Summary: Detectron2 v0.6 (Python sources of pb1-detectron2 0.6), installed by "
            "d2seg with PyTorch operators in place of the C++ extension",
            "License: Apache-2.0",
            "Requires-Python: >=3.8",
            *[f"Requires-Dist: {r}" for r in REQUIRES],
            "",
        ]
    )
    marker = {
        "installed_by": "d2seg",
        "build_id": build_id(),
        "source": SDIST_FILENAME,
        "sha256": SDIST_SHA256,
        "rewrites": [{"file": f, "why": why} for f, _, _, _, why in source_fixes.REWRITES],
    }
    extra = {
        f"{dist_info}/METADATA": metadata.encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: d2seg\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
        f"{dist_info}/top_level.txt": b"detectron2\n",
        f"{dist_info}/LICENSE": license_text,
        f"{dist_info}/{MARKER_FILE}": json.dumps(marker, indent=1).encode(),
    }
    files.update(extra)
    wheel = out_dir / f"{DIST_NAME}-{DIST_VERSION}-py3-none-any.whl"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            zf.writestr(name, files[name])
            writer.writerow([name, _wheel_record_hash(files[name]), len(files[name])])
        writer.writerow([f"{dist_info}/RECORD", "", ""])
        zf.writestr(f"{dist_info}/RECORD", record.getvalue())
    return wheel


# ---------------------------------------------------------------- install


def installed_state() -> tuple[str | None, dict | None]:
    """(installed detectron2 version or None, d2seg's build marker or None)."""
    try:
        dist = importlib.metadata.distribution(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        return None, None
    text = dist.read_text(MARKER_FILE)
    return dist.version, (json.loads(text) if text else None)


def install(force: bool = False, quiet: bool = False) -> str:
    """Make detectron2 importable; return one line saying what was done."""
    version, marker = installed_state()
    if version is not None and marker is None and not force:
        return f"detectron2 {version} is already installed (not by d2seg): left as it is"
    if marker is not None and marker.get("build_id") == build_id() and not force:
        return f"detectron2 {version} (d2seg build {marker['build_id']}) is already installed"
    sdist = fetch_sdist()
    with tempfile.TemporaryDirectory(prefix="d2seg-detectron2-") as tmp:
        wheel = build_wheel(sdist, Path(tmp))
        cmd = [sys.executable, "-m", "pip", "install", "--force-reinstall", "--no-deps", str(wheel)]
        _run_pip(cmd, quiet)
        # dependencies separately, so --force-reinstall does not reinstall torch & co.
        _run_pip([sys.executable, "-m", "pip", "install", *REQUIRES, *_lock_args(Path(tmp))], quiet)
    return f"installed detectron2 {DIST_VERSION} from {SDIST_FILENAME} (sha256 verified, build {build_id()})"


def _lock_args(folder: Path) -> list[str]:
    """pip arguments that hold what pip newly installs to d2seg's lock.

    Under ``make`` (``PIP_CONSTRAINT`` set) pip applies the whole lock itself. In an environment
    of the user's own, only distributions not installed yet are pinned, so no version the user
    already has is moved.
    """
    if os.environ.get("PIP_CONSTRAINT"):
        return []
    pins = lock.constraints_for_missing()
    if not pins:
        return []
    path = folder / "d2seg-constraints.txt"
    path.write_text(pins)
    return ["-c", str(path)]


def _run_pip(cmd: list[str], quiet: bool) -> None:
    if quiet:
        cmd = cmd[:4] + ["-q"] + cmd[4:]
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise InstallError(f"pip failed ({' '.join(cmd[3:])}); see pip's message above")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m d2seg.compat.installer", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--force", action="store_true", help="reinstall even if present")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        print(install(force=args.force, quiet=args.quiet))
    except InstallError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
