"""Shared fixtures: where ../shared lives, and a skip for tests that need it."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The ../shared/data folder beside the checkout; skip the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"needs the shared test data at {SHARED} (not part of a user's clone)")
    return SHARED
