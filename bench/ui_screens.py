"""Screenshots of every page of ``eltmake ui`` for a project (examples/shop by default), so that a
reader can see what the UI shows: the graph, a build (started from the page, watched live), the
runs, one run with a step's log, and the state.

    python bench/ui_screens.py OUT_DIR [--project examples/shop] [--no-build]

It builds the project first (as `eltmake build` would; the first build of examples/shop installs
its tools from PyPI), then serves it with `eltmake ui --port 0` and drives Debian's Chromium with
Playwright. It also prints the time from starting `eltmake ui` to its first page (HTTP 200).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = os.environ.get("ELTMAKE_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def start_ui(project: Path) -> tuple[subprocess.Popen, str, float]:
    """Start `eltmake ui`; return it, its URL and the seconds from start to the first page."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "eltmake", "-C", str(project), "ui", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    m = re.search(r"http://\S+/", line)
    if not m:
        proc.kill()
        raise SystemExit(f"eltmake ui did not start: {line!r}")
    url = m.group(0)
    with urllib.request.urlopen(url + "graph") as r:
        assert r.status == 200
    return proc, url, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder for the PNG files")
    ap.add_argument(
        "--project", default=str(Path(__file__).resolve().parent.parent / "examples/shop")
    )
    ap.add_argument("--no-build", action="store_true", help="do not build the project first")
    ap.add_argument(
        "--touch",
        default="",
        help="a file to touch before the screenshots (makes steps out of date)",
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    project = Path(args.project).resolve()
    if not args.no_build:
        subprocess.run([sys.executable, "-m", "eltmake", "-C", str(project), "build"], check=True)
    from playwright.sync_api import sync_playwright

    proc, url, first = start_ui(project)
    print(
        f"eltmake ui: start to first page {first * 1000:.0f} ms "
        f"(PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', 'unset')})"
    )
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 820}, device_scale_factor=1)
            shots(page, url, out, args.touch, project)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for f in sorted(out.glob("*.png")):
        print(f)
    return 0


def shots(page, url: str, out: Path, touch: str, project: Path) -> None:
    page.goto(url + "graph")
    page.wait_for_selector(".node[data-status]:not([data-status=unknown])", timeout=120_000)
    page.wait_for_timeout(300)
    page.screenshot(path=str(out / "graph.png"))
    first = page.locator(".node").first.get_attribute("data-name")
    second = page.locator(".node").nth(1).get_attribute("data-name")
    page.locator(f'.node[data-name="{second}"]').click()
    page.wait_for_selector("#side-body dl", timeout=30_000)
    page.screenshot(path=str(out / "graph-selected.png"))
    if touch:
        (project / touch).touch()
    page.goto(url + "build")
    page.select_option("#target", first)
    page.check("#force")
    page.click("#build")
    page.wait_for_selector("#headline .badge.s-ok, #headline .badge.s-failed", timeout=600_000)
    page.wait_for_selector("#busy", state="detached", timeout=30_000)  # the lock is released
    page.screenshot(path=str(out / "build.png"))
    page.goto(url + "runs")
    page.wait_for_selector("tr[data-run]")
    page.screenshot(path=str(out / "runs.png"))
    page.locator("tr[data-run]").first.click()
    page.wait_for_selector(".tl-row, .timeline .muted")
    page.wait_for_timeout(500)
    page.screenshot(path=str(out / "run.png"), full_page=True)
    page.goto(url + "state")
    page.wait_for_selector("#state-wrap")
    page.wait_for_timeout(300)
    page.screenshot(path=str(out / "state.png"))


if __name__ == "__main__":
    sys.exit(main())
