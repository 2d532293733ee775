"""Fixtures the deploy test modules share (each module defines its own ``images``)."""

from __future__ import annotations

import cv2
import pytest


@pytest.fixture
def image_file(tmp_path, images):
    """The module's first demo image, as a PNG file."""
    path = tmp_path / "im.png"
    cv2.imwrite(str(path), images["demo_0"])
    return path
