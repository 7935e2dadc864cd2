"""The UI in a real browser: Playwright for Python driving Debian's Chromium.

Where Chromium or Playwright cannot be had, these tests skip and say why; in CI (``CI`` set)
they fail instead, because ``.ci/run`` installs both.
"""

from __future__ import annotations

import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

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


def _unavailable() -> str | None:
    for module in ("starlette", "uvicorn", "sse_starlette", "playwright"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install '.[test]')"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


WHY = _unavailable()
if WHY and (os.environ.get("CI") or os.environ.get("ELTMAKE_TEST_BROWSER_REQUIRED")):
    pytest.fail(f"the browser tests must run in CI: {WHY}", pytrace=False)
if WHY:
    pytest.skip(WHY, allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402
from uiserver import UIServer, make_project  # noqa: E402

TIMEOUT = 60_000


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_project(tmp_path)


@pytest.fixture
def ui(root: Path):
    server = UIServer(root)
    yield server
    server.stop()


@pytest.fixture
def page(browser, ui: UIServer):
    ctx = browser.new_context(viewport={"width": 1400, "height": 820})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, errors  # no script error on any page


def node(page, name: str):
    return page.locator(f'.node[data-name="{name}"]')


def test_graph_shows_targets_statuses_and_details(page, ui: UIServer):
    page.goto(ui.url + "/graph")
    expect(node(page, "a")).to_have_attribute("data-status", "never_built", timeout=TIMEOUT)
    expect(node(page, "all")).to_have_attribute("data-status", "out_of_date")
    expect(page.locator(".node")).to_have_count(4)
    expect(page.locator("path.edge")).to_have_count(3)
    expect(page.locator("#legend")).to_contain_text("never built")
    node(page, "a").click()
    expect(page.locator("#side-title")).to_have_text("a")
    expect(page.locator("#side-body .kind")).to_have_text("command")
    expect(page.locator("#side-body")).to_contain_text('"API_TOKEN": "****"')
    expect(page.locator("#side-body")).not_to_contain_text("s3cr3t")
    expect(page.locator("#build")).to_have_text("Build a")
    expect(page.locator("#side-body")).to_contain_text("nothing")


def test_a_build_from_the_graph_changes_statuses_live(page, ui: UIServer, root: Path):
    page.goto(ui.url + "/graph")
    expect(node(page, "slow")).to_have_attribute("data-status", "never_built", timeout=TIMEOUT)
    node(page, "slow").click()
    page.click("#build")
    expect(page.locator("#banner")).to_contain_text("started")
    expect(node(page, "slow")).to_have_attribute("data-status", "running")
    expect(node(page, "a")).to_have_attribute("data-status", "up_to_date")
    (root / "go").write_text("")
    expect(node(page, "slow")).to_have_attribute("data-status", "up_to_date")
    expect(node(page, "many")).to_have_attribute("data-status", "never_built")


def test_the_build_page_shows_steps_and_output_as_they_come(page, ui: UIServer, root: Path):
    page.goto(ui.url + "/build")
    page.select_option("#target", "slow")
    page.click("#build")
    expect(page.locator('tr[data-target="slow"]')).to_have_attribute("data-status", "running")
    expect(page.locator("#output")).to_contain_text("slow | waiting for go")
    expect(page.locator("#output")).to_contain_text("a | token is ****")
    expect(page.locator("#stop")).to_be_enabled()
    (root / "go").write_text("")
    expect(page.locator("#output")).to_contain_text("slow | went")
    expect(page.locator('tr[data-target="slow"]')).to_have_attribute("data-status", "built")
    expect(page.locator("#headline .badge")).to_have_text("done")
    expect(page.locator("#headline")).to_contain_text("eltmake build slow")
    # A reload shows the same build from the snapshot, once.
    page.reload()
    expect(page.locator('tr[data-target="slow"]')).to_have_attribute("data-status", "built")
    assert page.locator("#output").inner_text().count("went") == 1


def test_a_steps_log_opens_tail_first_then_whole(page, ui: UIServer, root: Path):
    (root / "go").write_text("")
    assert ui.post("/api/builds", {"targets": []})[0] == 202
    ui.wait_build()
    page.goto(ui.url + "/runs")
    page.locator("tr[data-run]").first.click()
    expect(page).to_have_url(re.compile(re.escape(ui.url) + r"/runs/1(#.*)?$"))
    page.locator('.tl-row[data-target="many"]').click()
    expect(page.locator("#log-title")).to_have_text("Log of many")
    expect(page.locator("#log")).to_contain_text("line 499")
    expect(page.locator("#log")).not_to_contain_text("line 299\n")
    page.click("#full-log")
    expect(page.locator("#log")).to_contain_text("line 0\n")
    page.locator('.tl-row[data-target="a"]').click()
    expect(page.locator("#log")).to_contain_text("token is ****")


def test_a_page_on_another_origin_cannot_start_a_build(page, ui: UIServer):
    class Evil(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            body = b"<!doctype html><title>evil</title><p>hello"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    evil = ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        target = ui.url + "/api/builds"
        # A simple form-like POST (no preflight) reaches the server, which refuses it (its
        # answer is also unreadable there: opaque, or blocked by the resource policy).
        simple = page.evaluate(
            """async (url) => { try { const r = await fetch(url, {method: 'POST',
                 mode: 'no-cors', headers: {'content-type': 'text/plain'},
                 body: '{"targets": []}'}); return r.type; } catch (e) { return 'blocked'; } }""",
            target,
        )
        assert simple in ("opaque", "blocked")
        # With the token header the browser must ask first; the server never says yes.
        failed = page.evaluate(
            """async (url) => { try { await fetch(url, {method: 'POST',
                 headers: {'content-type': 'application/json', 'x-eltmake-csrf': 'guess'},
                 body: '{}'}); return 'sent'; } catch (e) { return 'blocked'; } }""",
            target,
        )
        assert failed == "blocked"
        # Nor can it read the token.
        leaked = page.evaluate(
            """async (url) => { try { const r = await fetch(url); return await r.text(); }
                 catch (e) { return 'blocked'; } }""",
            ui.url + "/api/session",
        )
        assert leaked == "blocked"
    finally:
        evil.shutdown()
    assert ui.get("/api/build")["build"] is None  # no build was started


def test_state_and_runs_pages_read_the_store(page, ui: UIServer, root: Path):
    from eltmake.state import StateStore

    store = StateStore(root / ".eltmake" / "state.db")
    store.set("tap-orders", {"bookmarks": {"orders": {"replication_key_value": "2024-05-01"}}})
    store.close()
    page.goto(ui.url + "/state")
    expect(page.locator('tr[data-id="tap-orders"]')).to_contain_text("free")
    expect(page.locator("#state-json")).to_contain_text('"replication_key_value": "2024-05-01"')
    page.goto(ui.url + "/runs")
    expect(page.locator("#runs-card")).to_contain_text("No builds recorded yet")


def test_a_big_graph_shows_a_neighbourhood_first(browser, tmp_path: Path):
    lines = ['[project]\nname = "big"\ndefault = "top"\n']
    for i in range(300):
        deps = f'\ndeps = ["t{i // 3:03d}"]' if i else ""
        lines.append(f'[targets.t{i:03d}]\nrun = "true"{deps}\n')
    lines.append('[targets.top]\ndeps = ["t299"]\n')
    (tmp_path / "eltmake.toml").write_text("\n".join(lines))
    with UIServer(tmp_path) as ui:
        page = browser.new_page(viewport={"width": 1400, "height": 820})
        page.set_default_timeout(TIMEOUT)
        page.goto(ui.url + "/graph")
        expect(page.locator("#scope")).to_contain_text("of 301 targets around top")
        shown = page.locator(".node").count()
        assert 1 < shown <= 150
        expect(node(page, "top")).to_be_visible()
        page.fill("#find", "t150")
        page.dispatch_event("#find", "change")
        expect(page.locator("#scope")).to_contain_text("around t150")
        expect(page.locator("#side-title")).to_have_text("t150")
        page.click("#show-all")
        expect(page.locator(".node")).to_have_count(301)
        page.close()
