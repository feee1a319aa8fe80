"""Fixtures shared across tests/ folders. ``phantom``, ``mni_slice``, ``hf_cache`` and
``isolated_registry`` come from msagent's pytest plugin (msagent.testing.pytest_plugin); the
browser fixtures skip without a browser, or fail when MSAGENT_REQUIRE_BROWSER=1."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

#: Set to 1 (tox, CI) to make a missing browser a failure rather than a skip.
REQUIRE_BROWSER = "MSAGENT_REQUIRE_BROWSER"


def _browser_missing(reason: str):
    if os.environ.get(REQUIRE_BROWSER) == "1":
        pytest.fail(f"{reason} (${REQUIRE_BROWSER}=1: the browser tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system's Chromium ($MSAGENT_CHROMIUM, else chromium, chromium-browser or google-chrome
    on PATH): skips the test without one, fails it under MSAGENT_REQUIRE_BROWSER=1."""
    path = os.environ.get("MSAGENT_CHROMIUM") or next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
        "/usr/bin/chromium")
    if not Path(path).exists():
        _browser_missing(f"no Chromium at {path}: apt-get install -y chromium (or set MSAGENT_CHROMIUM)")
    return path


@pytest.fixture(scope="session")
def sync_playwright():
    """Playwright's ``sync_playwright`` (driving the system's Chromium: no browser download);
    skips without Playwright, fails under MSAGENT_REQUIRE_BROWSER=1."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _browser_missing("pip install playwright (no browser download)")
    return sync_playwright


@pytest.fixture(scope="session")
def litemedsam():
    import msagent

    return msagent.load_backbone("litemedsam", device="cpu")


@pytest.fixture
def msd(tmp_path):
    """An MSD folder: two tubes (16 and 12 slices), labels 1 "tube" and 2 "cyst" (absent)."""
    from msagent.testing import write_msd_tubes

    return write_msd_tubes(tmp_path / "Task99_Tubes")
