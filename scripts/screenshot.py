"""Screenshot an HTML page (a vidbatch report) in headless Chromium, for the docs.

    python scripts/screenshot.py outputs/classify-demo/_vidbatch_report.html docs/report.png \
        --height 0 --columns 2 --scale 0.5

--columns 2 lays the whole page out in two columns, cut at the section boundary nearest the
middle, so that one picture shows all of it.

Needs Debian's chromium (scripts/test_tools.sh installs it) and playwright (a test extra).
"""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("page", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2400, help="pixels from the top (0: all)")
    ap.add_argument("--columns", type=int, choices=(1, 2), default=1)
    ap.add_argument("--scale", type=float, default=1.0, help="resize the picture by this")
    a = ap.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
        page = browser.new_page(viewport={"width": a.width, "height": a.height or 900})
        page.goto(a.page.resolve().as_uri())
        page.wait_for_load_state("load")
        page.wait_for_timeout(500)
        shot = Image.open(io.BytesIO(page.screenshot(full_page=not a.height)))
        bottoms = page.evaluate("() => [...document.querySelectorAll('section')].map("
                                "s => s.getBoundingClientRect().bottom + window.scrollY)")
        browser.close()
    if a.columns == 2:
        cut = int(min(bottoms, key=lambda b: abs(b - shot.height / 2))) + 8
        left, right = shot.crop((0, 0, shot.width, cut)), shot.crop((0, cut, shot.width,
                                                                     shot.height))
        both = Image.new("RGB", (2 * shot.width, max(left.height, right.height)), "#f6f7f9")
        both.paste(left, (0, 0))
        both.paste(right, (shot.width, 0))
        shot = both
    if a.scale != 1.0:
        shot = shot.resize((round(shot.width * a.scale), round(shot.height * a.scale)),
                           Image.LANCZOS)
    shot.convert("RGB").quantize(colors=256).save(a.png, optimize=True)


if __name__ == "__main__":
    main()
