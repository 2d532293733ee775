"""A wheel install works like a checkout: the demo manifests ship inside the package and their
data is generated into the cache folder ($D2SEG_CACHE), never into the install tree.

The wheel is built from a copy of the sources (the build writes build/ and *.egg-info beside
them) and installed into a fresh venv outside the checkout. That venv sees the main venv's
packages (torch, detectron2, ...) through a .pth file, which comes after its own site-packages on
sys.path, so d2seg is imported from the wheel, not from the checkout's editable install (whose
import hook is a .pth file of the main venv, not read from a folder a .pth adds). Every command
runs from an empty folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "instance" / "mask_rcnn_MNV2_FPN_cpu_quick.yaml"
TRAIN_OPTS = [
    "DATASETS.TEST", "()", "MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "1",
    "SOLVER.WARMUP_ITERS", "0", "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "1000",
    "TEST.EVAL_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0", "INPUT.MIN_SIZE_TRAIN", "(96,)",
    "INPUT.MAX_SIZE_TRAIN", "128", "D2SEG.PROGRESS_BAR", "False",
]


def _run(cmd, *, cwd, env, timeout=600) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout[-4000:]}"
    return proc.stdout


def _files(folder: Path) -> set[str]:
    """Files under ``folder``, without the bytecode Python caches there on import."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def _copy_sources(dest: Path) -> Path:
    shutil.copytree(REPO / "d2seg", dest / "d2seg",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    return dest


def test_wheel_install_lists_checks_and_trains_from_another_folder(tmp_path):
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "D2SEG_DATASETS", "PYTHONHOME") and not k.startswith("PIP_")}
    cache, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    env.update(D2SEG_CACHE=str(cache), XDG_CACHE_HOME=str(tmp_path / "xdg"), OMP_NUM_THREADS="1",
               PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")

    # the wheel, built without isolation by the main venv's setuptools
    src = _copy_sources(tmp_path / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", src,
          "-w", tmp_path / "wheels"], cwd=work, env=env)
    (wheel,) = (tmp_path / "wheels").glob("d2seg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for stem in ("demo_instances", "demo_panoptic", "demo_semseg"):
        assert f"d2seg/data/manifests/{stem}.yaml" in names
    assert not [n for n in names if n.startswith(("datasets/", "configs/", "tests/"))]

    # a fresh venv from the base interpreter that also sees the main venv's packages
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--without-pip", venv], cwd=work, env=env)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=work, env=env).strip())
    main_paths = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "main_venv.pth").write_text("".join(f"{p}\n" for p in main_paths))
    _run([python, "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", wheel],
         cwd=work, env=env)
    installed = site / "d2seg"
    before = _files(site)

    where = json.loads(_run([python, "-c", (
        "import json, sys, d2seg; from d2seg.data import manifest as mf\n"
        "m = mf.load_manifest(mf.bundled_manifest_folder() / 'demo_instances.yaml', check_files=False)\n"
        "print(json.dumps({'d2seg': d2seg.__file__, 'folders': [str(f) for f in mf.manifest_folders()],\n"
        "                  'manifest': str(m.path), 'root': str(m.root), 'path': sys.path}))")],
        cwd=work, env=env))
    assert Path(where["d2seg"]).parent == installed, where  # the wheel's copy, not the checkout's
    assert where["folders"] == [str(installed / "data" / "manifests")], where  # no datasets/ folder
    assert Path(where["manifest"]).parent == installed / "data" / "manifests"
    assert where["root"] == str(cache)
    assert where["path"].index(str(site)) < where["path"].index(next(iter(main_paths)))
    script = venv / "bin" / "d2seg"
    assert script.read_text().splitlines()[0] == f"#!{python}"  # the commands run the same python

    listed = _run([script, "data", "list"], cwd=work, env=env)
    names = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert {"demo_instances_train", "demo_instances_val", "demo_panoptic_train_separated",
            "demo_semseg_val"} <= names, listed
    demo = cache / "demo"
    assert not demo.exists()  # listing registers names only; the data is generated when a split is used

    doctor = _run([script, "doctor", "--no-self-check"], cwd=work, env=env)
    assert "detectron2" in doctor

    out = tmp_path / "out"
    trained = _run([script, "train", "--config-file", CONFIG, "--output", out, *TRAIN_OPTS],
                   cwd=work, env=env)
    assert (out / "model_final.pth").is_file(), trained
    assert (demo / ".complete").is_file()  # training used the split: generated into the cache
    assert len(list((demo / "train" / "images").iterdir())) == 200
    config = (out / "config.yaml").read_text()
    assert "demo_instances_train" in config

    # `d2seg demo` trains the checkout's configs/, which the wheel does not ship: one clear line
    proc = subprocess.run([script, "demo", "--max-iter", "1", "--out", tmp_path / "demo_out"], cwd=work,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout.strip().splitlines()[-1].startswith(
        f"error: {site / 'configs'}"), proc.stdout[-4000:]
    assert "source checkout" in proc.stdout

    # nothing was written into the install tree, the checkout's main venv or the working folder
    assert _files(site) == before
    assert not (site / "datasets").exists() and not (Path(next(iter(main_paths))) / "datasets").exists()
    assert list(work.iterdir()) == []
    assert not (tmp_path / "xdg").exists()  # $D2SEG_CACHE wins over $XDG_CACHE_HOME
    print(f"wheel build, install and three commands: {time.monotonic() - started:.0f} s")
