"""In CI a test whose reference is missing fails instead of skipping; locally it still skips.

Two kinds of missing reference, each in a real test module of the suite run in a subprocess:
a package (panopticapi, shadowed by a module that cannot be imported) and the shared data
(pointed at a folder that does not exist).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# pytest's exit codes: 0 all passed, 5 nothing collected (a module skipped at import)
LOCAL_OK = {0, 5}


def _pytest(args: list[str], env_changes: dict[str, str], ci: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(env_changes)
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _check(run_args: list[str], env_changes: dict[str, str], what: str) -> None:
    local = _pytest(run_args, env_changes, ci=False)
    assert local.returncode in LOCAL_OK, local.stdout + local.stderr
    assert "1 skipped" in local.stdout and what in local.stdout, local.stdout

    ci = _pytest(run_args, env_changes, ci=True)
    assert ci.returncode not in LOCAL_OK, ci.stdout + ci.stderr
    assert "skipped in CI (CI=true)" in ci.stdout and what in ci.stdout, ci.stdout
    assert "passed" not in ci.stdout and "skipped" not in ci.stdout.splitlines()[-1]


@pytest.mark.slow
def test_hidden_panopticapi_fails_in_ci_and_skips_locally(tmp_path):
    shadow = tmp_path / "shadow" / "panopticapi"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        'raise ModuleNotFoundError("panopticapi hidden by the test", name="panopticapi")\n')
    path = os.pathsep.join(p for p in [str(shadow.parent), os.environ.get("PYTHONPATH")] if p)
    _check(["tests/panoptic/test_panoptic_quality.py", "-k", "sample_ground_truth_against_itself"],
           {"PYTHONPATH": path}, "panopticapi")


@pytest.mark.slow
def test_missing_shared_data_fails_in_ci_and_skips_locally(tmp_path):
    _check(["tests/panoptic/test_panoptic_quality.py", "-k", "sample_ground_truth_against_itself"],
           {"D2SEG_TEST_SHARED_DATA": str(tmp_path / "no-shared-data")}, "shared test data")
