"""The radar page in a real headless Chromium (Debian's, driven by Playwright) against a real
server: live playback moves players, a recording seeks to the frame at/before a tick, the page
works when served from another origin; and the coach's viewer, checked on the canvas's pixels
and the page's DOM: the map backdrop under the players at the right pixels (also while the
backdrop loads, and when recordings are switched while a map loads), event markers, keyboard
and timeline seeks, a kill feed, score and round clock right after any seek (across a side
switch), interpolation at 0.25x, smoke, grenade trail and inferno drawn where they are, follow
buttons that take a slow click, compressed ticks inflated by the browser, and (with the GSI
ingest) live matches: players moving, the stale marker, the DVR with the match's events."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import require_shared
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


# -- the coach's viewer: map, timeline, panels, motion -------------------------------------------

MIRAGE = {"pos_x": -3230.0, "pos_y": 1713.0, "scale": 5.0}
TEAM_RGB = {"T": (240, 160, 48), "CT": (74, 144, 226)}  # radar.css --t and --ct
MARKER_RGB = {
    "kill": (232, 232, 232), "plant": (255, 64, 64), "defuse": (64, 160, 255),
    "explode": (255, 176, 0),
}  # fmt: skip
EXTRA_KILLS = {  # frame index -> kill, besides match_frames' own at 300 (rounds split at 600)
    100: {"killer": "Bravo", "victim": "Charlie", "weapon": "AWP", "is_hs": False},
    700: {"killer": "Charlie", "victim": "Alpha", "weapon": "M4A4", "is_hs": True},
    900: {"killer": "Bravo", "victim": "Delta", "weapon": "Desert Eagle", "is_hs": False},
}
DEFUSED_AT, EXPLODED_AT = 450, 1100  # frame indexes: round 1's plant is defused, round 2's blows


def backdrop_pixels() -> np.ndarray:
    """A radar image whose every pixel says where it is: R = x / 4, G = y / 4, B = 200."""
    ys, xs = np.mgrid[0:1024, 0:1024]
    rgba = np.stack([xs // 4, ys // 4, np.full_like(xs, 200), np.full_like(xs, 255)], axis=-1)
    return rgba.astype(np.uint8)


def write_frames(folder: Path, name: str, map_name: str, frames: list[dict]) -> Path:
    from processing.recording import write_recording
    from processing.source import SourceInfo

    path = folder / f"{name}.eeict"
    write_recording(path, SourceInfo(map_name, 64, f"{name}.dem", "0" * 64, "test"), frames)
    return path


def write_coach_match(folder: Path, name: str, map_name: str) -> Path:
    """match_frames with more kills, round 1's bomb defused and round 2's exploding."""
    from server_process import match_frames

    frames = match_frames()
    for index, kill in EXTRA_KILLS.items():
        frames[index]["kills"] = [{**kill, "penetrations": 0}]
    for i, frame in enumerate(frames):
        bomb = frame["bomb"]
        if bomb["planted"] and DEFUSED_AT <= i < 600:
            bomb.update(defused=True, defused_by="Charlie")
        if bomb["planted"] and i >= EXPLODED_AT:
            bomb["exploded"] = True
    return write_frames(folder, name, map_name, frames)


def _without_utility(frames: list[dict]) -> list[dict]:
    """Players in a row along the bottom of the map, no grenades: a clean canvas for pixels."""
    for frame in frames:
        frame.update(nades=None, infernos=None, nade_event=None)
        for n, player in enumerate(frame["players"]):
            player.update(x=-3000.0 + 300 * n, y=-3000.0, view_x=90.0)
    return frames


SPRINT_ROW = 600  # canvas row Alpha runs along (game y = 1713 - 5 * 600)
SPRINT_START, SPRINT_STEPS, SPRINT_UNITS = 20, 20, 150.0  # frame, frames, units a frame


def sprint_px(index: int) -> float:
    """Alpha's canvas x in frame ``index``: 30 px a frame for 20 frames, still before and after."""
    steps = min(max(index - SPRINT_START, 0), SPRINT_STEPS)
    return _expected_px(-2500.0 + SPRINT_UNITS * steps, 0)[0]


def sprint_frames() -> list[dict]:
    """Alpha runs right along one canvas row, 150 units (30 px) a frame: a step between two
    frames is wide enough to see where interpolation puts them."""
    from server_process import match_frames

    frames = _without_utility(match_frames(300))
    for i, frame in enumerate(frames):
        alpha = frame["players"][0]
        alpha.update(x=-2500.0 + SPRINT_UNITS * min(max(i - SPRINT_START, 0), SPRINT_STEPS),
                     y=MIRAGE["pos_y"] - MIRAGE["scale"] * SPRINT_ROW)  # fmt: skip
    return frames


THROW = {"frames": (20, 84), "x0": -2000.0, "step": 10.0, "row": 200}  # a smoke along row 200
FIRES = [(0.0, 0.0), (400.0, 0.0), (0.0, -400.0), (400.0, -400.0), (200.0, -200.0)]
FIRE_FRAMES = (100, 400)


def utility_frames() -> list[dict]:
    """A smoke grenade flying right along one canvas row for a second, blooming where it
    lands; an inferno whose fires make a square; players out of the way."""
    from server_process import match_frames

    frames = _without_utility(match_frames(400))
    first, last = THROW["frames"]
    y = MIRAGE["pos_y"] - MIRAGE["scale"] * THROW["row"]
    for i, frame in enumerate(frames):
        if first <= i < last:
            x = THROW["x0"] + THROW["step"] * (i - first)
            frame["nades"] = [{"id": 7, "type": "Smoke Grenade", "x": x, "y": y, "z": 0.0,
                               "team": "T"}]  # fmt: skip
        if i == last:
            x = THROW["x0"] + THROW["step"] * (last - first)
            frame["nade_event"] = {"type": "Smoke Grenade", "x": x, "y": y, "z": 0.0}
        if FIRE_FRAMES[0] <= i < FIRE_FRAMES[1]:
            fires = [{"x": fx, "y": fy, "z": 0.0} for fx, fy in FIRES]
            frame["infernos"] = [{"id": 9, "fires": fires}]
    return frames


HALF = 640  # frames a round of the "halves" recording; freeze time is its first 64


def halves_frames() -> list[dict]:
    """Three rounds: T (Orange) wins the first; the sides switch with round 2 (the totals swap
    by side), which CT (Orange again) wins."""
    from server_process import match_frames

    frames = _without_utility(match_frames(3 * HALF))
    for i, frame in enumerate(frames):
        frame.update(tick=1000 + i, round_start=i % HALF == 0, is_freeze=i % HALF < 64)
        switched = i >= HALF
        frame.update(t="Blue" if switched else "Orange", ct="Orange" if switched else "Blue",
                     switch=i == HALF)  # fmt: skip
        t_wins, ct_wins = (1 if i >= 500 else 0), 0  # round 1: T wins at frame 500
        if switched:
            t_wins, ct_wins = 0, 1 + (i >= HALF + 460)  # round 2: CT wins at frame 1100
        frame.update(t_wins=t_wins, ct_wins=ct_wins)
    return frames


class Served:
    """Where a test's page is opened: the real server's HTTP port."""

    def __init__(self, server: ServerProcess) -> None:
        self.url = server.http_url


@pytest.fixture(scope="module")
def coach(tmp_path_factory):
    """A real server with the coach's recordings (and a de_inferno one, without an overview)
    and a de_mirage overview (transform file and radar image) in its overview folder."""
    from server.maps import encode_png

    folder = tmp_path_factory.mktemp("coach")
    overviews = tmp_path_factory.mktemp("overviews")
    values = " ".join(f'"{k}" "{v}"' for k, v in MIRAGE.items())
    (overviews / "de_mirage.txt").write_text(f'"de_mirage" {{ {values} "rotate" "0" }}')
    (overviews / "de_mirage_radar.png").write_bytes(encode_png(backdrop_pixels()))
    recordings = {
        "coach": Recording.open(write_coach_match(folder, "coach", "de_mirage")),
        "elsewhere": Recording.open(write_coach_match(folder, "elsewhere", "de_inferno")),
    }
    write_frames(folder, "sprint", "de_mirage", sprint_frames())
    write_frames(folder, "utility", "de_mirage", utility_frames())
    write_frames(folder, "halves", "de_mirage", halves_frames())
    args = ("--recordings", str(folder), "--overviews", str(overviews), "--live", "coach")
    with server_process(*args, "--loop") as srv:
        yield Served(srv), recordings["coach"], recordings["coach"].meta["events"]


def _open_recording(page, url: str, name: str = "coach") -> None:
    page.goto(url + "/")
    page.click(f"#recordings button[data-id={name}]")
    page.wait_for_function("window.radar.connected && window.radar.tick !== null")
    page.wait_for_function("window.radar.map && window.radar.map.source !== 'fitted'")


def _pixel(page, canvas: str, x: float, y: float) -> list[int]:
    return page.evaluate(
        f"Array.from(document.getElementById('{canvas}').getContext('2d')"
        f".getImageData({int(x)}, {int(y)}, 1, 1).data)"
    )


def _wait_pixel(page, canvas: str, x: float, y: float, rgb: tuple[int, ...]) -> None:
    """Waits until the canvas has been drawn with ``rgb`` at (x, y)."""
    wanted = ",".join(map(str, rgb))
    page.wait_for_function(
        f"Array.from(document.getElementById('{canvas}').getContext('2d')"
        f".getImageData({int(x)}, {int(y)}, 1, 1).data).slice(0, 3).join() === '{wanted}'"
    )


# Team-coloured pixels of the radar canvas (exact colours: a disc's inside, not its rim).
TEAM_PIXELS_JS = """([t, ct]) => {
    const canvas = document.getElementById('radar');
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    const out = { T: [], CT: [] };
    for (let i = 0; i < data.length; i += 4) {
        const rgb = [data[i], data[i + 1], data[i + 2]].join();
        if (rgb === t) out.T.push(i / 4);
        else if (rgb === ct) out.CT.push(i / 4);
    }
    return out;
}"""


def _team_pixels(page) -> dict[str, list[int]]:
    """Indexes (y * 1024 + x) of the canvas pixels in each team's colour."""
    colours = [",".join(map(str, TEAM_RGB[team])) for team in ("T", "CT")]
    return page.evaluate(TEAM_PIXELS_JS, colours)


def _near(pixels: list[int], x: float, y: float, radius: float = 3) -> bool:
    """Some pixel of ``pixels`` is within ``radius`` of (x, y)."""
    at = np.array(pixels)
    return bool(len(at)) and bool((np.hypot(at % 1024 - x, at // 1024 - y) <= radius).any())


def _blend(top: tuple[float, ...], alpha: float, under: tuple[float, ...]) -> np.ndarray:
    return alpha * np.array(top, float) + (1 - alpha) * np.array(under, float)


def _backdrop_at(x: float, y: float) -> tuple[int, int, int]:
    """The test overview image's pixel under canvas pixel (x, y) (drawn 1:1, whole map)."""
    return int(x) // 4, int(y) // 4, 200


def _rafs(page, count: int = 3) -> None:
    """Lets the page draw ``count`` more pictures."""
    page.evaluate(
        f"new Promise((done) => {{ let n = {count}; const next = () => --n ? "
        "requestAnimationFrame(next) : done(); requestAnimationFrame(next); })"
    )


def _expected_px(x: float, y: float) -> tuple[float, float]:
    """The overview transform by hand: the canvas is 1024 px, the whole map in view."""
    return (x - MIRAGE["pos_x"]) / MIRAGE["scale"], (MIRAGE["pos_y"] - y) / MIRAGE["scale"]


def _frame_at_or_before(recording: Recording, tick: int) -> int:
    return int(recording.ticks[np.searchsorted(recording.ticks, tick, side="right") - 1])


def test_map_backdrop_under_players_at_the_right_pixels(coach, page):
    seam, recording, _ = coach
    _open_recording(page, seam.url)
    page.wait_for_function("window.radar.map.images.includes('default')")
    info = page.evaluate("window.radar.map")
    assert info["source"] == "overview"
    assert (info["pos_x"], info["pos_y"], info["scale"]) == tuple(MIRAGE.values())
    zero = _expected_px(0.0, 0.0)
    _wait_pixel(page, "radar", *zero, (int(zero[0]) // 4, int(zero[1]) // 4, 200))  # drawn
    # Backdrop: two places no player is near show the image's own pixel there.
    for x, y in ((0.0, 0.0), (1000.0, 500.0)):
        px, py = _expected_px(x, y)
        r, g, b, _ = _pixel(page, "radar", px, py)
        assert abs(r - int(px) // 4) <= 1 and abs(g - int(py) // 4) <= 1 and b == 200, (x, y)
    # Players: at the first frame (paused), each drawn where the transform puts them.
    first = recording.frame(0)
    positions = page.evaluate("window.radar.positions")
    for player in first["players"]:
        px, py = _expected_px(player["x"], player["y"])
        assert positions[player["name"]] == pytest.approx([px, py], abs=0.5)
        assert _pixel(page, "radar", px, py)[:3] == list(TEAM_RGB[player["team"]]), player["name"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "radar-overview.png"))


def test_occupancy_backdrop_is_labelled(coach, page):
    seam, _, _ = coach
    _open_recording(page, seam.url, "elsewhere")
    info = page.evaluate("window.radar.map")
    assert info["source"] == "occupancy"
    page.wait_for_function(
        "document.getElementById('map-label').textContent.includes('where players stood')"
    )
    page.evaluate("window.radar.seek(1200)")  # a smoke (frame 100) and a molotov burning
    page.wait_for_function("window.radar.tick === 1200")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "radar-occupancy.png"))


def _marker_rows(page) -> dict:
    """The timeline as last drawn: its tick range and its kill and bomb-event rows' pixels."""
    return page.evaluate(
        """() => {
            const canvas = document.getElementById('timeline');
            const g = canvas.getContext('2d');
            const row = (y) => Array.from(g.getImageData(0, y, canvas.width, 1).data);
            return { ...window.radar.timeline, kill: row(16), bomb: row(canvas.height - 3) };
        }"""
    )


def _assert_markers_drawn(page, events: list[dict]) -> None:
    """Each event's marker colour at its tick's x on the timeline (kills above, bomb below)."""
    drawn = _marker_rows(page)
    first, last, width = drawn["first"], drawn["last"], drawn["width"]
    for event in events:
        x = int((event["tick"] - first) / (last - first) * width)
        row = drawn["kill" if event["type"] == "kill" else "bomb"]
        assert row[4 * x : 4 * x + 3] == list(MARKER_RGB[event["type"]]), event


def test_timeline_markers_at_the_event_ticks(coach, page):
    seam, recording, events = coach
    _open_recording(page, seam.url)
    wanted = [e for e in events if e["type"] in MARKER_RGB]
    assert sorted(e["type"] for e in wanted) == ["defuse", "explode"] + ["kill"] * 4 + ["plant"] * 2
    page.wait_for_function(f"window.radar.markers.length === {len(wanted)}")
    assert page.evaluate("window.radar.timeline.first") == recording.meta["first_tick"]
    _assert_markers_drawn(page, wanted)


def test_keyboard_and_timeline_seeks_land_on_the_right_tick(coach, page):
    seam, recording, events = coach
    _open_recording(page, seam.url)
    starts = [e["tick"] for e in events if e["type"] == "round_start"]
    page.keyboard.press("]")  # next round
    page.wait_for_function(f"window.radar.tick === {starts[1]}")
    page.keyboard.press("ArrowRight")  # +5 s
    plus5 = _frame_at_or_before(recording, starts[1] + 5 * 64)
    page.wait_for_function(f"window.radar.tick === {plus5}")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")  # pressed quickly: -10 s in all
    page.wait_for_function(f"window.radar.tick === {_frame_at_or_before(recording, plus5 - 640)}")
    page.keyboard.press("]")
    page.wait_for_function(f"window.radar.tick === {starts[1]}")
    page.keyboard.press("[")  # at the round's start: the previous round
    page.wait_for_function(f"window.radar.tick === {starts[0]}")

    first, last = recording.meta["first_tick"], recording.meta["last_tick"]
    timeline = page.locator("#timeline")
    box = timeline.bounding_box()
    timeline.click(position={"x": box["width"] * 0.6, "y": box["height"] / 2})
    target = round(first + 0.6 * (last - first))
    page.wait_for_function(f"window.radar.tick === {_frame_at_or_before(recording, target)}")
    # Drag: press at 20 %, let go at 35 %: lands where it was let go.
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, y, steps=3)
    page.mouse.move(box["x"] + box["width"] * 0.35, y)
    page.mouse.up()
    target = round(first + 0.35 * (last - first))
    page.wait_for_function(f"window.radar.tick === {_frame_at_or_before(recording, target)}")

    # A drag the browser cancels (a touch turned into a scroll) seeks nowhere.
    shown, gen = page.evaluate("[window.radar.tick, window.radar.session.gen]")
    page.mouse.move(box["x"] + box["width"] * 0.8, y)
    page.mouse.down()
    page.evaluate(
        "document.getElementById('timeline').dispatchEvent(new PointerEvent('pointercancel',"
        " { pointerId: 1, bubbles: true }))"
    )
    page.mouse.up()
    _rafs(page)
    assert page.evaluate("[window.radar.tick, window.radar.session.gen]") == [shown, gen]
    position = (shown - first) / (last - first) * page.evaluate("window.radar.timeline.width")
    assert _pixel(page, "timeline", position, 3)[:3] == [255, 255, 255]  # the marker stayed

    page.keyboard.press("4")  # speeds in order: 1.25x
    page.keyboard.press("Space")
    page.wait_for_function("window.radar.session.playing && window.radar.session.speed === 1.25")
    page.keyboard.press("Space")
    page.wait_for_function("!window.radar.session.playing")
    # A speed picked with the mouse: the dropdown lets go of the keys again.
    page.focus("#speed")
    page.select_option("#speed", "0.5")
    page.wait_for_function("window.radar.session.speed === 0.5")
    page.keyboard.press("Space")
    page.wait_for_function("window.radar.session.playing")


def _feed(events: list[dict], tick: int) -> list[str]:
    """The kill feed the page should show at ``tick``: this round's kills up to it, as
    "killer [weapon HS] victim" (no brackets when there is neither)."""
    starts = [e["tick"] for e in events if e["type"] == "round_start" and e["tick"] <= tick]
    start = max(starts, default=-1)
    lines = []
    for e in events:
        if e["type"] == "kill" and start <= e["tick"] <= tick:
            tags = " ".join(filter(None, [e["weapon"], "HS" if e["is_hs"] else ""]))
            lines.append(f"{e['killer'] or 'world'} {f'[{tags}]' if tags else '→'} {e['victim']}")
    return lines


def test_kill_feed_after_a_seek_equals_the_events_before_it(coach, page):
    seam, recording, events = coach
    _open_recording(page, seam.url)
    kills = [e["tick"] for e in events if e["type"] == "kill"]
    # Forward past kills whose frames were never sent, into round 2, then back to round 1.
    for tick in (kills[1] + 10, kills[2] + 3, kills[3], kills[2] - 1, kills[0] + 1, kills[0] - 1):
        shown = _frame_at_or_before(recording, tick)
        page.evaluate(f"window.radar.seek({tick})")
        page.wait_for_function(f"window.radar.tick === {shown}")
        expected = _feed(events, shown)
        as_js = json.dumps(json.dumps(expected, separators=(",", ":")))  # JSON.stringify's
        try:
            page.wait_for_function(f"JSON.stringify(window.radar.killFeed) === {as_js}")
        except Exception:
            pytest.fail(f"at {shown}: {page.evaluate('window.radar.killFeed')} != {expected}")
    assert expected == []  # before the first kill: nothing


def test_interpolation_visible_at_quarter_speed(coach, page):
    """Alpha runs 30 px a frame along one canvas row; at 0.25x the canvas shows Alpha's disc
    between where two frames put it (the team colour where no frame has Alpha)."""
    seam, _, _ = coach
    _open_recording(page, seam.url, "sprint")
    page.evaluate(f"window.radar.seek({1000 + SPRINT_START - 2})")
    page.wait_for_function(f"window.radar.tick === {1000 + SPRINT_START - 2}")
    page.keyboard.press("1")  # 0.25x
    page.keyboard.press("Space")
    page.wait_for_function("window.radar.session.playing && window.radar.session.speed === 0.25")
    # Every picture drawn for 2.5 s: the x of each run of Alpha's colour along the row.
    runs = page.evaluate(
        """([row, rgb]) => new Promise((done) => {
            const g = document.getElementById('radar').getContext('2d');
            const out = [];
            const end = performance.now() + 2500;
            const take = () => {
              const data = g.getImageData(0, row, 1024, 1).data;
              const xs = [];
              for (let x = 0; x < 1024; x++) {
                if ([data[4 * x], data[4 * x + 1], data[4 * x + 2]].join() === rgb) xs.push(x);
              }
              if (xs.length) out.push([xs[0], xs[xs.length - 1]]);
              if (performance.now() < end) requestAnimationFrame(take); else done(out);
            };
            requestAnimationFrame(take);
        })""",
        [SPRINT_ROW, ",".join(map(str, TEAM_RGB["T"]))],
    )
    frame_xs = np.array(
        [sprint_px(i) for i in range(SPRINT_START, SPRINT_START + SPRINT_STEPS + 1)]
    )
    assert len(runs) > 20, runs
    between = []
    for lo, hi in runs:
        assert hi - lo <= 20, (lo, hi)  # one disc (radius 9), nobody else on this row
        centre = (lo + hi) / 2
        assert frame_xs[0] - 2 <= centre <= frame_xs[-1] + 2, centre  # on Alpha's path
        if np.abs(frame_xs - centre).min() >= 6:  # frames are 30 px apart
            between.append(centre)
    assert len(between) >= 3, f"Alpha never drawn between two frames at 0.25x: {runs}"
    assert max(between) - min(between) > 30  # along the run, not one stuck picture


def test_follow_mode_centres_the_player(coach, page):
    seam, _, _ = coach
    _open_recording(page, seam.url)
    page.click("#team-T li[data-name=Alpha] button.follow")
    page.wait_for_function(
        "Math.hypot(window.radar.positions.Alpha[0] - 512, window.radar.positions.Alpha[1] - 512)"
        " < 1"
    )
    page.click("#team-T li[data-name=Alpha] button.follow")  # again: the whole map
    first_alpha = _expected_px(-300 + 200, -1900)  # frame 0: angle 0, 200 units east
    page.wait_for_function(f"Math.abs(window.radar.positions.Alpha[0] - {first_alpha[0]}) < 1")


def test_follow_button_takes_a_slow_click(coach, page):
    """A press held longer than the panels' update interval still follows the player (rows
    are updated in place, not replaced under the pointer)."""
    seam, _, _ = coach
    _open_recording(page, seam.url)
    x, y = page.evaluate(
        "(({ x, y, width, height }) => [x + width / 2, y + height / 2])(document"
        ".querySelector('#team-T li[data-name=Alpha] button.follow').getBoundingClientRect())"
    )
    page.mouse.move(x, y)
    page.mouse.down()
    page.wait_for_timeout(300)  # the press itself: three panel updates long
    page.mouse.up()
    page.wait_for_function(
        "document.getElementById('following').textContent.includes('Alpha') && document"
        ".querySelector('#team-T li[data-name=Alpha] button.follow').textContent === '◉'"
    )
    _wait_pixel(page, "radar", 512, 512, TEAM_RGB["T"])  # Alpha drawn at the centre, zoomed


def test_smoke_trail_and_inferno_drawn_where_they_are(coach, page):
    """Right after seeks (paused): a smoke in flight with its trail from the throw, then the
    smoke's circle where it landed and the inferno's area, each checked as the colour blended
    over the overview image at the pixels the transform gives."""
    seam, _, _ = coach
    _open_recording(page, seam.url, "utility")
    first, last = THROW["frames"]
    row = THROW["row"]
    mid = (first + last) // 2
    page.evaluate(f"window.radar.seek({1000 + mid})")
    page.wait_for_function(f"window.radar.tick === {1000 + mid}")
    throw_x = _expected_px(THROW["x0"], 0)[0]
    nade_x = _expected_px(THROW["x0"] + THROW["step"] * (mid - first), 0)[0]
    trail_x = (throw_x + nade_x) / 2  # on the path already flown (the frames before the seek)
    trail = tuple(np.round(_blend((207, 207, 207), 0.6, _backdrop_at(trail_x, row))).astype(int))
    _wait_near_pixel(page, trail_x, row, trail)
    ahead = nade_x + (nade_x - throw_x) / 2  # where it has not flown yet: the backdrop only
    assert _pixel(page, "radar", ahead, row)[:3] == list(_backdrop_at(ahead, row))

    page.evaluate(f"window.radar.seek({1000 + 150})")  # the smoke burst at frame 84, a second ago
    page.wait_for_function("window.radar.tick === 1150")
    smoke_x = _expected_px(THROW["x0"] + THROW["step"] * (last - first), 0)[0]
    radius = 144 / MIRAGE["scale"]
    for dx, dy in ((-0.75, 0), (0.75, 0), (0, -0.75), (0, 0.75)):
        x, y = smoke_x + dx * radius, row + dy * radius
        _wait_near_pixel(page, x, y, tuple(np.round(_blend((200,) * 3, 0.5, _backdrop_at(x, y)))))
    outside = smoke_x - 1.25 * radius
    assert _pixel(page, "radar", outside, row)[:3] == list(_backdrop_at(outside, row))
    # The inferno: its fires' square filled (orange at 45 %) inside, backdrop beyond its rim.
    (left, top), (right, bottom) = _expected_px(0, 0), _expected_px(400, -400)
    centre = ((left + right) / 2, (top + bottom) / 2)
    fill = tuple(np.round(_blend((255, 110, 0), 0.45, _backdrop_at(*centre))).astype(int))
    _wait_near_pixel(page, *centre, fill)
    beyond = (right + 15, centre[1])
    assert _pixel(page, "radar", *beyond)[:3] == list(_backdrop_at(*beyond))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "radar-utility.png"))


def _wait_near_pixel(page, x: float, y: float, rgb: tuple, tolerance: int = 2) -> None:
    """Waits until the canvas pixel at (x, y) is ``rgb`` within ``tolerance`` per channel."""
    wanted = json.dumps([int(v) for v in rgb])
    try:
        page.wait_for_function(
            f"Array.from(document.getElementById('radar').getContext('2d')"
            f".getImageData({int(x)}, {int(y)}, 1, 1).data).slice(0, 3)"
            f".every((v, i) => Math.abs(v - {wanted}[i]) <= {tolerance})"
        )
    except Exception:
        pytest.fail(f"pixel ({int(x)}, {int(y)}) is {_pixel(page, 'radar', x, y)}, not {rgb}")


def test_score_and_round_clock_after_seeks_across_a_side_switch(coach, page):
    """The score is each side's rounds in the frame shown, right after any seek: from the
    halftime switch on, the totals (and team names) have swapped sides. The clock counts the
    round's time from the end of its freeze time."""
    seam, _, _ = coach
    _open_recording(page, seam.url, "halves")
    cases = [  # frame index -> score, clock
        (HALF + 200, "Blue 0 : 1 Orange", "round 2 · 0:02"),  # after the switch: swapped
        (300, "Orange 0 : 0 Blue", "round 1 · 0:03"),
        (560, "Orange 1 : 0 Blue", "round 1 · 0:07 (round over)"),  # T won it at frame 500
        (HALF + 10, "Blue 0 : 1 Orange", "round 2 · 0:00 (freeze time)"),
        (HALF + 64 + 5 * 64, "Blue 0 : 1 Orange", "round 2 · 0:05"),
        (HALF + 560, "Blue 0 : 2 Orange", "round 2 · 0:07 (round over)"),
        (2 * HALF + 100, "Blue 0 : 2 Orange", "round 3 · 0:00"),
    ]
    for index, score, clock in cases:
        page.evaluate(f"window.radar.seek({1000 + index})")
        page.wait_for_function(f"window.radar.tick === {1000 + index}")
        try:
            page.wait_for_function(
                f"document.getElementById('score').textContent === {json.dumps(score)}"
                f" && document.getElementById('clock').textContent.startsWith({json.dumps(clock)})"
            )
        except Exception:
            shown = page.evaluate(
                "['score', 'clock'].map((id) => document.getElementById(id).textContent)"
            )
            pytest.fail(f"at frame {index}: {shown}, expected {score!r} and {clock!r}...")


def test_players_drawn_on_a_grid_while_the_backdrop_loads(coach, page):
    """While /maps/<map> is on its way (an occupancy backdrop can take seconds to build on
    first use), players and panels are shown on a plain grid; the map follows when it comes."""
    seam, recording, _ = coach
    held = _hold(page, "**/maps/de_mirage")
    page.goto(seam.url + "/")
    page.click("#recordings button[data-id=coach]")
    _wait_for(page, lambda: held)
    page.wait_for_function("window.radar.tick !== null")
    page.wait_for_function(
        "document.querySelectorAll('#team-T li, #team-CT li').length === 4"
        " && document.getElementById('map-label').textContent.includes('loading')"
    )
    pixels = _team_pixels(page)
    assert len(pixels["T"]) > 2 * 100 and len(pixels["CT"]) > 2 * 100  # four discs drawn
    held[0].continue_()
    page.wait_for_function("window.radar.map.source === 'overview'")
    first = recording.frame(0)["players"][0]
    _wait_pixel(page, "radar", *_expected_px(first["x"], first["y"]), TEAM_RGB[first["team"]])
    zero = _expected_px(0.0, 0.0)
    _wait_pixel(page, "radar", *zero, _backdrop_at(*zero))


def test_switching_recordings_while_a_map_loads_keeps_the_new_map(coach, page):
    """Open a de_inferno recording, switch to a de_mirage one before de_inferno's map arrives:
    de_inferno's late answer must not replace de_mirage's transform."""
    seam, recording, _ = coach
    held = _hold(page, "**/maps/de_inferno")
    page.goto(seam.url + "/")
    page.click("#recordings button[data-id=elsewhere]")
    _wait_for(page, lambda: held)
    page.click("#recordings button[data-id=coach]")
    page.wait_for_function("window.radar.map && window.radar.map.source === 'overview'")
    with page.expect_request_finished(lambda r: "/maps/de_inferno/image" in r.url):
        held[0].continue_()  # de_inferno's answer lands now, then its image loads
    _rafs(page)
    info = page.evaluate("window.radar.map")
    assert (info["source"], info["pos_x"], info["scale"]) == ("overview", -3230, 5)
    pixels = _team_pixels(page)
    for player in recording.frame(0)["players"]:  # paused at the first frame
        assert _near(pixels[player["team"]], *_expected_px(player["x"], player["y"])), player
    zero = _expected_px(0.0, 0.0)
    assert _pixel(page, "radar", *zero)[:3] == list(_backdrop_at(*zero))


def _hold(page, pattern: str) -> list:
    """Requests matching ``pattern`` are held (not sent) until the test continues them."""
    held: list = []
    page.route(pattern, lambda route: held.append(route))
    return held


def _wait_for(page, condition, timeout_s: float = WAIT_MS / 1000) -> None:
    """Waits for a condition on the test's side, letting the page and its routes run."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        page.wait_for_timeout(20)


def test_compressed_ticks_are_inflated_by_the_browser(coach, page):
    import msgpack

    seam, recording, _ = coach
    _open_recording(page, seam.url)
    assert page.evaluate("window.radar.session.deflate")  # Chromium has DecompressionStream
    frames = recording.frames(0, 3)
    packer = zlib.compressobj(wbits=-15)
    data = packer.compress(msgpack.packb(frames)) + packer.flush()
    decoded = page.evaluate(
        """async (data) => {
            const { framesOf } = await import('/static/protocol.js');
            const plain = await framesOf({ type: 'ticks', frames: [1] });
            const inflated = await framesOf({ type: 'ticks', encoding: 'deflate',
                                              data: new Uint8Array(data) });
            return [plain, inflated];
        }""",
        list(data),
    )
    assert decoded[0] == [1]
    # Steam ids (above 2**53) lose precision as JavaScript numbers; the page keys on names.
    without_sid = lambda fs: [  # noqa: E731
        {**f, "players": [{k: v for k, v in p.items() if k != "sid"} for p in f["players"]]}
        for f in fs
    ]
    assert without_sid(decoded[1]) == without_sid(frames)
    assert [p["sid"] for p in decoded[1][0]["players"]] == pytest.approx(
        [p["sid"] for p in frames[0]["players"]], rel=1e-15
    )


def test_two_level_map_switches_level_by_height(tmp_path, page):
    """A Nuke-like overview with two levels: the level shown follows the followed player's
    height, players on the other level are drawn faintly, and the switch overrides it."""
    from server_process import match_frames

    from processing.recording import write_recording
    from processing.source import SourceInfo
    from server.maps import encode_png

    overviews = tmp_path / "overviews"
    overviews.mkdir()
    (overviews / "de_nuke.txt").write_text(
        '"de_nuke" { "pos_x" "-3230" "pos_y" "1713" "scale" "5" "verticalsections" {'
        ' "default" { "AltitudeMax" "10000" "AltitudeMin" "-495" }'
        ' "lower" { "AltitudeMax" "-495" "AltitudeMin" "-10000" } } }'
    )
    colours = {"default": (200, 40, 40), "lower": (40, 200, 40)}
    for level, rgb in colours.items():
        name = "de_nuke_radar.png" if level == "default" else "de_nuke_lower_radar.png"
        (overviews / name).write_bytes(encode_png(np.full((1024, 1024, 4), (*rgb, 255), np.uint8)))
    frames = match_frames(300)
    for frame in frames:
        for player in frame["players"]:
            if player["name"] == "Charlie":
                player["z"] = -600.0  # downstairs
    folder = tmp_path / "recordings"
    folder.mkdir()
    info = SourceInfo("de_nuke", 64, "levels.dem", "0" * 64, "test")
    write_recording(folder / "levels.eeict", info, frames)
    args = ("--recordings", str(folder), "--overviews", str(overviews), "--live", "levels")
    with server_process(*args) as srv:
        seam = Served(srv)
        _open_recording(page, seam.url, "levels")
        page.wait_for_function("window.radar.map.images.length === 2")
        assert page.is_visible("#level-switch")
        levels = page.evaluate("window.radar.map.levels.map((lv) => lv.name)")
        assert levels == ["default", "lower"]

        def state() -> tuple[str, list[int], list[int], list[int]]:
            positions = page.evaluate("window.radar.positions")
            return (
                page.evaluate("window.radar.map.level"),
                _pixel(page, "radar", 40, 40)[:3],  # backdrop, away from everyone
                _pixel(page, "radar", *positions["Alpha"])[:3],
                _pixel(page, "radar", *positions["Charlie"])[:3],
            )

        page.wait_for_function("window.radar.map.level === 'default'")
        level, backdrop, alpha, charlie = state()
        assert backdrop == list(colours["default"]) and alpha == list(TEAM_RGB["T"])
        assert charlie != list(TEAM_RGB["CT"])  # downstairs: faint
        page.click("#team-CT li[data-name=Charlie] button.follow")
        page.wait_for_function("window.radar.map.level === 'lower'")
        _wait_pixel(page, "radar", 40, 40, colours["lower"])
        level, backdrop, alpha, charlie = state()
        assert backdrop == list(colours["lower"]) and charlie == list(TEAM_RGB["CT"])
        assert alpha != list(TEAM_RGB["T"])
        page.select_option("#level", "default")  # the switch wins over height
        page.wait_for_function("window.radar.map.level === 'default'")


def test_real_demos_occupancy_backdrop_lines_up_with_the_players(tmp_path, page):
    """The nine shared de_mirage demos: the backdrop built from where their players stood,
    and the page drawing a demo's players on it where the raster says players stood."""
    import subprocess
    import sys
    import urllib.request

    from test_maps import decode_png

    demos = sorted(require_shared("demos").glob("*.dem"))
    out = tmp_path / "recordings"
    subprocess.run(
        [sys.executable, "-m", "server", "process", "--out", str(out), *map(str, demos)],
        check=True, capture_output=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    recordings = {p.stem: Recording.open(p) for p in sorted(out.glob("*.eeict"))}
    assert len(recordings) == len(demos)
    with server_process("--recordings", str(out), "--live", "run_1") as srv:
        seam = Served(srv)
        _open_recording(page, seam.url, "run_1")
        info = page.evaluate("window.radar.map")
        assert info["source"] == "occupancy" and "9 recordings" in info["label"]
        with urllib.request.urlopen(seam.url + info["image"], timeout=30) as response:
            raster = decode_png(response.read())
        page.keyboard.press("7")  # 4x
        page.keyboard.press("Space")
        checked = 0
        for _ in range(5):
            tick = page.evaluate("window.radar.tick")
            page.wait_for_function(f"window.radar.tick > {tick} + 64")
            for x, y in page.evaluate("Object.values(window.radar.positions)"):
                # Within a cell of where the raster has someone standing (2 px cells).
                r, c = int(y), int(x)
                assert raster[max(0, r - 2) : r + 3, max(0, c - 2) : c + 3, 1].any(), (x, y)
                checked += 1
        assert checked >= 5
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "radar-demos.png"))


def test_plain_ticks_without_decompression_stream(coach, page):
    seam, recording, _ = coach
    page.add_init_script("delete window.DecompressionStream")  # an older browser
    _open_recording(page, seam.url)
    assert page.evaluate("window.radar.session.deflate") is False
    assert page.evaluate("window.radar.tick") == recording.meta["first_tick"]
    page.keyboard.press("]")
    page.wait_for_function(f"window.radar.tick === {int(recording.meta['round_starts'][1])}")


# -- live matches from CS2 GSI (needs the server's GSI ingest on the HTTP port) -----------------

GSI_MATCH = "radar-gsi"


def _gsi_payloads(limit: int) -> list[dict]:
    """The first ``limit`` payloads of the shared capture with players on the map, live."""
    import ast
    import zipfile

    with zipfile.ZipFile(require_shared("gsi") / "full_game_gsi.zip") as archive:
        lines = archive.read("full_game.txt").decode().splitlines()
    payloads = []
    for line in lines:
        if not line.startswith("{"):
            continue
        payload = ast.literal_eval(line)
        if payload.get("allplayers") and payload.get("map", {}).get("phase") == "live":
            payloads.append(payload)
            if len(payloads) == limit:
                break
    return payloads


class GsiPoster:
    """Posts payloads to ``POST /gsi/<match>`` from a thread, ~10 a second, while running."""

    def __init__(self, url: str, payloads: list[dict]) -> None:
        self.url, self.payloads, self.sent = url, payloads, 0
        self.running = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def post(self, payload: dict) -> int:
        import urllib.error
        import urllib.request

        body = json.dumps(payload).encode()
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def _run(self) -> None:
        while not self.stopped.is_set() and self.sent < len(self.payloads):
            self.running.wait()
            self.post(self.payloads[self.sent])
            self.sent += 1
            self.stopped.wait(0.1)  # pacing of the feed, not a wait for a result


GSI_TOKEN = "radar-test-token"
GSI_ARGS = ("--gsi", f"{GSI_MATCH}={GSI_TOKEN}", "--gsi-stale-after", "2")


@pytest.fixture
def gsi(tmp_path) -> Iterator[tuple[str, GsiPoster]]:
    """A server taking GSI posts for one match on its HTTP port."""
    payloads = [{**p, "auth": {"token": GSI_TOKEN}} for p in _gsi_payloads(400)]
    args = ("--recordings", str(tmp_path), *GSI_ARGS)  # the match's journal goes there
    srv = ServerProcess(args, log_path=tmp_path / "server.log")
    srv.start()
    http_url = srv.http_url
    poster = GsiPoster(f"{http_url}/gsi/{GSI_MATCH}", payloads)
    try:
        status = poster.post(payloads[0])
        assert status < 300, f"POST /gsi/{GSI_MATCH} answered {status}:\n{srv.log()}"
        poster.sent = 1
        poster.thread.start()
        poster.running.set()
        yield http_url, poster
    finally:
        poster.stopped.set()
        poster.running.set()
        srv.stop()


def _wait_listed(page, kind: str) -> None:
    page.wait_for_function(
        f"(window.radar.list(), document.querySelector("
        f"'#streams button[data-kind={kind}][data-id=\"{GSI_MATCH}\"]'))",
        polling=500,
    )


def test_live_gsi_match_moves_and_shows_a_stale_feed(gsi, page):
    http_url, poster = gsi
    page.goto(http_url + "/")
    _wait_listed(page, "live")
    page.click(f"#streams button[data-kind=live][data-id='{GSI_MATCH}']")
    page.wait_for_function("window.radar.connected && window.radar.tick !== null")
    assert page.evaluate("window.radar.session.deflate")
    # Players are drawn, and the canvas's team-coloured pixels change: they move.
    page.wait_for_function("window.radar.map && window.radar.map.source !== 'fitted'")
    before = _team_pixels(page)
    assert len(before["T"]) + len(before["CT"]) > 5 * 100  # ten players, some may be dead
    deadline = time.monotonic() + WAIT_MS / 1000
    while _team_pixels(page) == before:
        assert time.monotonic() < deadline, "no player moved on the canvas"
        _rafs(page, 10)
    assert page.is_hidden("#stale")
    poster.running.clear()  # the feed stops
    page.wait_for_selector("#stale", state="visible", timeout=30_000)
    poster.running.set()  # and resumes
    page.wait_for_selector("#stale", state="hidden", timeout=30_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "radar-live-gsi.png"))


def test_live_gsi_match_dvr_goes_back_and_returns_to_the_live_edge(gsi, page):
    http_url, _ = gsi
    page.goto(http_url + "/")
    _wait_listed(page, "replay")
    page.click(f"#streams button[data-kind=replay][data-id='{GSI_MATCH}']")
    page.wait_for_function("window.radar.connected && window.radar.session.live")
    # Long enough to go 5 s back (frames are made in real time, 64 a second).
    page.wait_for_function("window.radar.session.last > 8 * 64", timeout=30_000)
    page.click("#go-live")  # seeks to the newest frame and catches up at 2x
    page.wait_for_function("window.radar.session.liveEdge === true && window.radar.tick !== null")
    page.wait_for_function("window.radar.session.speed === 1")  # held at the edge: 1x again
    edge = page.evaluate("window.radar.tick")
    page.wait_for_function(f"window.radar.tick > {edge}")  # the live edge moves on
    at_edge = page.evaluate("window.radar.tick")
    page.keyboard.press("ArrowLeft")  # 5 s back: off the edge
    page.wait_for_function(
        f"window.radar.session.liveEdge === false && window.radar.tick < {at_edge} - 4 * 64"
    )
    page.keyboard.press("l")  # back to the live edge
    page.wait_for_function("window.radar.session.liveEdge === true")


def _server_events(http_url: str) -> list[dict]:
    import urllib.request

    with urllib.request.urlopen(f"{http_url}/recordings/{GSI_MATCH}/events", timeout=10) as r:
        return json.loads(r.read())["events"]


def test_live_gsi_match_dvr_shows_the_events_so_far(gsi, page):
    """The DVR of a match still being played: markers for its kills so far on the timeline
    and a kill feed after a seek, from the live match's events index, which the page fetches
    again as the match goes on. Needs the server to build that index while the match is
    played (GET /recordings/<match>/events: the events so far, as for a recording)."""
    http_url, _ = gsi
    page.goto(http_url + "/")
    _wait_listed(page, "replay")
    page.click(f"#streams button[data-kind=replay][data-id='{GSI_MATCH}']")
    page.wait_for_function("window.radar.connected && window.radar.session.live")
    # The capture's first kills come about 17 s into the match.
    deadline = time.monotonic() + 90
    while len(kills := [e for e in _server_events(http_url) if e["type"] == "kill"]) < 2:
        assert time.monotonic() < deadline, (
            f"GET /recordings/{GSI_MATCH}/events has no two kills after 90 s of the match"
            " (the server builds a live match's index as it is played)"
        )
        page.wait_for_timeout(500)
    kills = kills[:2]
    # The page is paused at the first frame: these kills come from the index, not frames.
    page.wait_for_function(
        f"window.radar.markers.filter((m) => m.type === 'kill').length >= 2"
        f" && window.radar.timeline.last > {kills[1]['tick']}",
        timeout=30_000,
    )
    _rafs(page)
    _assert_markers_drawn(page, kills)
    tick = kills[1]["tick"] + 1
    page.evaluate(f"window.radar.seek({tick})")
    page.wait_for_function(f"window.radar.tick === {tick}")
    expected = _feed(_server_events(http_url), tick)
    assert len(expected) >= 2
    as_js = json.dumps(json.dumps(expected, separators=(",", ":"), ensure_ascii=False))
    try:
        page.wait_for_function(f"JSON.stringify(window.radar.killFeed) === {as_js}")
    except Exception:
        pytest.fail(f"kill feed {page.evaluate('window.radar.killFeed')} != {expected}")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "radar-live-dvr.png"))
