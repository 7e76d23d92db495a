"""Screenshot an HTML page (a vidbatch report) in headless Chromium, for the docs.

    python scripts/screenshot.py outputs/classify-demo/_vidbatch_report.html docs/report.png

Needs Debian's chromium (scripts/test_tools.sh installs it) and playwright (a test extra).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("page", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2400, help="pixels from the top (0: all)")
    a = ap.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
        page = browser.new_page(viewport={"width": a.width, "height": a.height or 900})
        page.goto(a.page.resolve().as_uri())
        page.wait_for_load_state("load")
        page.wait_for_timeout(500)
        page.screenshot(path=str(a.png), full_page=not a.height)
        browser.close()


if __name__ == "__main__":
    main()
