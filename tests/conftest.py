"""Shared fixtures: the real test material in ../shared/realdata and tiny synthetic volumes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("MEDSEG_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """Path of ../shared/realdata; tests using it are skipped (with the reason) where it is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real test data not found at {REALDATA} (set MEDSEG_REALDATA)")
    return REALDATA


def pytest_collection_modifyitems(config, items):
    # tests that use the realdata fixture must carry the realdata marker, so `-m "not realdata"` works
    for item in items:
        if "realdata" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("realdata"):
            item.add_marker(pytest.mark.realdata)
