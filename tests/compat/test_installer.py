"""The detectron2 installer: index discovery, hash check, wheel layout, leaving installs alone."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest

from d2seg.compat import installer


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Never touch (or reuse) the real download cache, except where a test asks for it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _file_index(root: Path, payload: bytes) -> str:
    project = root / "simple" / installer.SDIST_PROJECT
    project.mkdir(parents=True)
    (root / "files").mkdir()
    (root / "files" / installer.SDIST_FILENAME).write_bytes(payload)
    (project / "index.html").write_text(
        f'<html><body><a href="../../files/{installer.SDIST_FILENAME}#sha256=00">x</a></body></html>'
    )
    return (root / "simple").as_uri()


def test_hash_mismatch_stops_with_one_clear_line(tmp_path):
    index = _file_index(tmp_path, b"not the real sdist")
    with pytest.raises(installer.InstallError) as err:
        installer.fetch_sdist([index])
    message = str(err.value)
    assert "\n" not in message
    assert hashlib.sha256(b"not the real sdist").hexdigest() in message
    assert installer.SDIST_SHA256 in message
    assert not (tmp_path / "cache" / "d2seg" / installer.SDIST_FILENAME).exists()


def test_project_missing_from_every_index_says_what_to_do(tmp_path):
    (tmp_path / "simple").mkdir()
    with pytest.raises(installer.InstallError, match="PIP_INDEX_URL"):
        installer.fetch_sdist([(tmp_path / "simple").as_uri()])


def test_json_simple_api_is_read_and_the_verified_file_cached(tmp_path):
    payload = b"pretend sdist"
    digest = hashlib.sha256(payload).hexdigest()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path == f"/simple/{installer.SDIST_PROJECT}/":
                assert "application/vnd.pypi.simple.v1+json" in self.headers["Accept"]
                body = json.dumps({"files": [{"filename": installer.SDIST_FILENAME,
                                              "url": f"/f/{installer.SDIST_FILENAME}"}]}).encode()
                ctype = "application/vnd.pypi.simple.v1+json"
            elif self.path == f"/f/{installer.SDIST_FILENAME}":
                body, ctype = payload, "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        index = f"http://127.0.0.1:{server.server_port}/simple"
        assert installer.find_sdist_url(index).endswith(f"/f/{installer.SDIST_FILENAME}")
        original = installer.SDIST_SHA256
        installer.SDIST_SHA256 = digest
        try:
            path = installer.fetch_sdist([index])
        finally:
            installer.SDIST_SHA256 = original
        assert path.read_bytes() == payload
        assert path.parent == tmp_path / "cache" / "d2seg"
    finally:
        server.shutdown()


def test_index_urls_follow_pip_configuration(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.invalid/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///a/simple file:///b/simple")
    assert installer.index_urls() == ["https://mirror.invalid/simple", "file:///a/simple", "file:///b/simple"]


def test_a_foreign_detectron2_is_left_alone(monkeypatch):
    monkeypatch.setattr(installer, "installed_state", lambda: ("0.6+cu121", None))
    monkeypatch.setattr(installer, "fetch_sdist", lambda *a: pytest.fail("must not download"))
    assert "left as it is" in installer.install()


def test_installing_again_is_a_no_op():
    version, marker = installer.installed_state()
    if marker is None:
        pytest.skip("detectron2 here was not installed by d2seg")
    assert marker["build_id"] == installer.build_id(), "installed build is stale: run d2seg setup"
    assert "already installed" in installer.install()


def test_wheel_layout_from_the_real_sdist(tmp_path, monkeypatch):
    cached = Path.home() / ".cache" / "d2seg" / installer.SDIST_FILENAME
    if not cached.is_file():
        pytest.skip(f"the verified sdist is not cached at {cached} (make setup downloads it)")
    wheel = installer.build_wheel(cached, tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read("detectron2-0.6.dist-info/METADATA").decode()
        record = zf.read("detectron2-0.6.dist-info/RECORD").decode()
        standin = zf.read("detectron2/_C.py").decode()
    assert "Name: detectron2\n" in metadata and "Version: 0.6\n" in metadata
    assert "@" not in metadata  # no direct-URL requirement (pip refuses those from an index)
    for module in ("detectron2/projects/point_rend/__init__.py",
                   "detectron2/projects/deeplab/__init__.py",
                   "detectron2/projects/panoptic_deeplab/__init__.py",
                   "detectron2/model_zoo/configs/Base-RCNN-FPN.yaml"):
        assert module in names
    assert not any(n.endswith((".so", ".cpp", ".cu")) for n in names)
    assert "d2seg.compat.c_extension" in standin
    assert len(record.splitlines()) == len(names)


def test_download_cache_write_does_not_follow_a_planted_symlink(tmp_path):
    """A symlink planted at the old fixed temporary name (``<sdist>.part``) beside the cache
    entry: the file it points to is untouched, the cache entry is a regular file with the
    downloaded bytes, and no temporary file is left."""
    cached = tmp_path / "cache" / "d2seg" / installer.SDIST_FILENAME
    cached.parent.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    planted = cached.with_suffix(".part")
    planted.symlink_to(victim)
    installer._write_cached(cached, b"downloaded bytes")
    assert victim.read_text() == "untouched"
    assert not cached.is_symlink() and cached.read_bytes() == b"downloaded bytes"
    assert sorted(p.name for p in cached.parent.iterdir()) == sorted([cached.name, planted.name])
