"""Shared fixtures: where ../shared lives, and a skip for tests that need it.

In CI (``CI=true``) no test may skip: every skip there means a reference the suite relies on
(panopticapi, pycocotools, the shared data, the offline ImageNet weights, ...) was missing, and
a reference-backed test that silently vanishes proves nothing. The hooks below turn such a skip
into a failure that quotes the skip's reason. Locally a skip stays a skip, with its reason.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# D2SEG_TEST_SHARED_DATA points elsewhere (tests/test_ci_strict.py uses it to hide the data).
SHARED = Path(os.environ.get("D2SEG_TEST_SHARED_DATA") or REPO.parent / "shared" / "data")


def in_ci() -> bool:
    """True where the CI convention says so (``CI=true``; also ``1``/``yes``)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_if_ci_skip(report) -> None:
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (f"skipped in CI (CI=true), where every reference the tests use must be "
                           f"present: {_skip_reason(report)}")


def pytest_configure(config):
    if in_ci():  # a module that fails to collect must not hide the other modules' results
        config.option.continue_on_collection_errors = True
    # d2seg's cache (the demo data, labels derived from panoptic PNGs) goes to a folder of the
    # test runs, never the user's ~/.cache/d2seg; pytest's cache keeps it between runs, so the
    # demo is generated once. Subprocesses inherit it; a test needing its own uses monkeypatch.
    cache = getattr(config, "cache", None)
    os.environ["D2SEG_CACHE"] = str(cache.mkdir("d2seg_cache") if cache is not None
                                    else tempfile.mkdtemp(prefix="d2seg-test-cache-"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_if_ci_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped (``pytest.importorskip`` at import) fails in CI as well."""
    outcome = yield
    _fail_if_ci_skip(outcome.get_result())


@pytest.fixture
def shared_data() -> Path:
    """The ../shared/data folder beside the checkout; skip the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"needs the shared test data at {SHARED} (not part of a user's clone)")
    return SHARED
