"""Debian's Chromium driven by the pinned playwright-core (tests/e2e/browser/), for the tests that
load the playground's page in a real browser; never a browser downloaded by a test tool."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Final

BROWSER_DIR: Final = Path(__file__).resolve().parents[1] / "e2e" / "browser"
CHROMIUM: Final = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


def browser_unavailable() -> str | None:
    """Why no browser test can run here (and how to set it up), or None when one can."""
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (README set-up: apt-get install chromium)"
    if shutil.which("node") is None:
        return "no node (README set-up: Node.js 20+)"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return "playwright-core not installed: npm ci --prefix tests/e2e/browser"
    return None
