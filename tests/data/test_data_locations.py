"""Where d2seg finds manifests and puts the demo data: the demo manifests ship inside the package,
their data goes to the cache folder ($D2SEG_CACHE, else $XDG_CACHE_HOME/d2seg, else
~/.cache/d2seg), never beside the package. (tests/data/test_wheel_install.py checks the same from
a wheel install.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from d2seg.data import manifest as mf
from d2seg.data.cache import cache_dir
from d2seg.data.demo import default_demo_dir, generate_demo

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "d2seg" / "data" / "manifests"
STEMS = ("demo_instances", "demo_panoptic", "demo_semseg")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("D2SEG_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "home"


def test_cache_folder_is_d2seg_cache_then_xdg_then_home(home, tmp_path, monkeypatch):
    assert cache_dir() == home / ".cache" / "d2seg"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec: ignore a relative one
    assert cache_dir() == home / ".cache" / "d2seg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "d2seg"
    monkeypatch.setenv("D2SEG_CACHE", "~/mine")
    assert cache_dir() == home / "mine"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("D2SEG_CACHE", "rel")
    assert cache_dir() == tmp_path / "rel"  # absolute, whatever the folder later commands run in
    assert default_demo_dir() == tmp_path / "rel" / "demo"


def test_demo_manifests_ship_in_the_package_and_resolve_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("D2SEG_CACHE", str(tmp_path / "cache"))
    assert mf.bundled_manifest_folder().resolve() == PACKAGE
    assert mf.manifest_folders()[0] == mf.bundled_manifest_folder()
    for stem in STEMS:
        assert (PACKAGE / stem).with_suffix(".yaml").is_file()
        assert not (REPO / "datasets" / f"{stem}.yaml").exists()  # one copy: the package's
        m = mf.load_manifest(PACKAGE / f"{stem}.yaml", check_files=False)
        assert m.root == tmp_path / "cache"
        for split in m.splits.values():
            assert split.images == tmp_path / "cache" / "demo" / split.name / "images"


def test_loading_a_demo_manifest_generates_its_data_in_the_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("D2SEG_CACHE", str(tmp_path / "cache"))
    calls = []

    def small_demo(out_dir=None, **_):  # the real one writes 250 images: test_demo.py covers it
        calls.append(Path(out_dir))
        return generate_demo(out_dir, splits={"train": 2, "val": 1})

    monkeypatch.setattr("d2seg.data.demo.ensure_demo", small_demo)
    before = sorted(p.name for p in PACKAGE.iterdir())
    m = mf.load_manifest(PACKAGE / "demo_semseg.yaml")
    assert calls == [tmp_path / "cache" / "demo"]
    assert m.splits["val"].sem_seg_root == tmp_path / "cache" / "demo" / "val" / "semantic"
    assert sorted(p.name for p in PACKAGE.iterdir()) == before


def test_a_copy_of_a_demo_manifest_keeps_its_data_beside_it(tmp_path, monkeypatch):
    monkeypatch.setenv("D2SEG_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "mine" / "demo_instances.yaml"
    copy.parent.mkdir()
    copy.write_text((PACKAGE / "demo_instances.yaml").read_text())
    m = mf.load_manifest(copy, check_files=False)
    assert m.root == copy.parent
    assert m.splits["train"].annotations == copy.parent / "demo" / "train" / "instances.json"


def test_a_checkout_also_reads_its_datasets_folder_and_env_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("D2SEG_DATASETS", os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")]))
    assert mf.checkout_datasets_folder() == REPO / "datasets"
    assert mf.manifest_folders() == [mf.bundled_manifest_folder(), REPO / "datasets",
                                     tmp_path / "a", tmp_path / "b"]


def test_generate_demo_script_from_another_folder(tmp_path):
    env = dict(os.environ, D2SEG_CACHE=str(tmp_path / "cache"), COLUMNS="500")  # no line wraps
    for cmd in ([sys.executable, str(REPO / "datasets" / "generate_demo.py"), "--help"],
                [sys.executable, "-m", "d2seg.data.demo", "--help"]):
        out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert f"(default {tmp_path / 'cache' / 'demo'})" in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # --help writes nothing
