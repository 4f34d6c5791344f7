"""The radar page in a real headless Chromium (Debian's, driven by Playwright) against a real
server: live playback moves players, a recording seeks to the frame at/before a tick, and the
page works when served from another origin."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from server_process import ServerProcess, server_process, write_match

from processing.recording import Recording

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
WAIT_MS = 15_000


def _require_browser() -> None:
    """Skip without Chromium or Playwright, but fail under CI=true (CI installs both)."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
    if not shutil.which(CHROMIUM):
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    if missing:
        message = "radar page test needs " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def server(tmp_path_factory, other_origin) -> Iterator[tuple[ServerProcess, Recording]]:
    folder = tmp_path_factory.mktemp("recordings")
    recording = Recording.open(write_match(folder))
    args = ("--recordings", str(folder), "--live", "match", "--loop")
    with server_process(*args, "--allowed-origins", other_origin) as srv:
        yield srv, recording


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(WAIT_MS)
    yield page
    page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _open_live(page) -> None:
    page.click("#streams button[data-id=match]")
    page.wait_for_function("window.radar.connected && window.radar.tick !== null")


def test_live_stream_moves_players(server, page):
    srv, _ = server
    page.goto(srv.http_url + "/")
    _open_live(page)
    canvas = page.locator("#radar")
    before = canvas.screenshot()
    tick, positions = page.evaluate("[window.radar.tick, window.radar.positions]")
    page.wait_for_timeout(500)
    after = canvas.screenshot()
    tick2, positions2 = page.evaluate("[window.radar.tick, window.radar.positions]")
    assert before != after, "the canvas did not change in 0.5 s of live playback"
    assert tick2 != tick  # a looping stream may wrap, so "different", not "greater"
    assert set(positions) >= {"Alpha", "Bravo", "Charlie"}
    assert any(positions[n] != positions2.get(n) for n in positions), "no player moved"
    assert page.evaluate("window.radar.frameCount") > 0


def test_live_buffer_stays_bounded_without_animation_frames(server, page):
    # A background tab runs no requestAnimationFrame callbacks, but messages still arrive.
    srv, _ = server
    page.goto(srv.http_url + "/")
    _open_live(page)
    page.evaluate("window.requestAnimationFrame = () => 0")  # the draw loop stops here
    received = page.evaluate("window.radar.frameCount")
    page.wait_for_function(f"window.radar.frameCount > {received} + 4 * 64")  # 4 s of frames
    # Kept: about 1 s played + 1 s of buffer ahead + a burst; never the whole 4 s.
    assert page.evaluate("window.radar.buffered") < 3 * 64


def test_live_follows_a_server_restart_with_a_new_epoch(tmp_path, page):
    # The first server's epoch is an hour old, so its seqs are far above the restarted one's.
    folder = tmp_path / "recordings"
    folder.mkdir()
    write_match(folder)
    args = ("--recordings", str(folder), "--live", "match", "--loop")
    srv = ServerProcess((*args, "--epoch", str(time.time() - 3600)))
    srv.log_path = tmp_path / "server.log"
    try:
        srv.start()
        page.goto(srv.http_url + "/")
        _open_live(page)
        srv.stop()
        page.wait_for_function("!window.radar.connected")
        srv.args = args  # a new epoch: now
        srv.start()
        # The reconnect backoff grows to 8 s; the page shows no frame between hello and ticks.
        page.wait_for_function(
            "window.radar.connected && window.radar.tick !== null", timeout=30_000
        )
        tick = page.evaluate("window.radar.tick")
        page.wait_for_function(f"window.radar.tick !== {tick}")
        tick = page.evaluate("window.radar.tick")
        page.wait_for_function(f"window.radar.tick !== {tick}")  # still moving
    finally:
        srv.stop()


def test_recording_seeks_to_frame_at_or_before_tick(server, page):
    srv, recording = server
    page.goto(srv.http_url + "/")
    page.click("#recordings button[data-id=match]")
    page.wait_for_function("window.radar.connected && window.radar.tick !== null")
    assert page.evaluate("window.radar.tick") == recording.meta["first_tick"]

    # A tick in the gap at the second round start: the frame shown is the one before it.
    ticks = recording.ticks
    gap = int(np.flatnonzero(np.diff(ticks) > 1)[0])
    wanted = int(ticks[gap]) + 2
    page.evaluate(f"window.radar.seek({wanted})")
    page.wait_for_function(f"window.radar.tick === {int(ticks[gap])}")

    # Click-to-seek on the timeline: the middle of the bar is the middle of the tick range.
    timeline = page.locator("#timeline")
    box = timeline.bounding_box()
    timeline.click(position={"x": box["width"] * 0.25, "y": box["height"] / 2})
    first, last = recording.meta["first_tick"], recording.meta["last_tick"]
    target = first + 0.25 * (last - first)
    page.wait_for_function(f"Math.abs(window.radar.tick - {target}) < {0.02 * (last - first)}")

    # Play at 2x: the tick advances, and the state reports the speed.
    page.select_option("#speed", "2")
    page.click("#play")
    page.wait_for_function("window.radar.session.playing && window.radar.session.speed === 2")
    start = page.evaluate("window.radar.tick")
    page.wait_for_function(f"window.radar.tick > {start}")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "radar.png"))


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def other_origin() -> Iterator[str]:
    """The server/ folder on a plain file server, like someone opening the page elsewhere."""
    handler = functools.partial(_QuietFiles, directory=str(ROOT / "server"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_page_from_another_origin_uses_server_url(server, page, other_origin):
    srv, _ = server
    page.goto(f"{other_origin}/static/index.html?server={srv.http_url}")
    _open_live(page)
    tick = page.evaluate("window.radar.tick")
    page.wait_for_function(f"window.radar.tick !== {tick}")
