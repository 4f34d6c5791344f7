"""The radar page in a real headless Chromium (Debian's, driven by Playwright) against a real
server: live playback moves players, a recording seeks to the frame at/before a tick, the page
works when served from another origin; and the coach's viewer: the map backdrop under the
players at the right pixels,
event markers, keyboard and timeline seeks, a kill feed right after any seek, interpolation
at 0.25x, compressed ticks inflated by the browser, and (with the GSI ingest) live matches."""

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
TEAM_RGB = {"T": (240, 160, 48), "CT": (74, 144, 226)}
MARKER_RGB = {"kill": (232, 232, 232), "plant": (255, 64, 64)}
EXTRA_KILLS = {  # frame index -> kill, besides match_frames' own at 300 (rounds split at 600)
    100: {"killer": "Bravo", "victim": "Charlie", "weapon": "AWP", "is_hs": False},
    700: {"killer": "Charlie", "victim": "Alpha", "weapon": "M4A4", "is_hs": True},
    900: {"killer": "Bravo", "victim": "Delta", "weapon": "Desert Eagle", "is_hs": False},
}


def backdrop_pixels() -> np.ndarray:
    """A radar image whose every pixel says where it is: R = x / 4, G = y / 4, B = 200."""
    ys, xs = np.mgrid[0:1024, 0:1024]
    rgba = np.stack([xs // 4, ys // 4, np.full_like(xs, 200), np.full_like(xs, 255)], axis=-1)
    return rgba.astype(np.uint8)


def write_coach_match(folder: Path, name: str, map_name: str) -> Path:
    from server_process import match_frames

    from processing.recording import write_recording
    from processing.source import SourceInfo

    frames = match_frames()
    for index, kill in EXTRA_KILLS.items():
        frames[index]["kills"] = [{**kill, "penetrations": 0}]
    path = folder / f"{name}.eeict"
    write_recording(path, SourceInfo(map_name, 64, f"{name}.dem", "0" * 64, "test"), frames)
    return path


class Served:
    """Where a test's page is opened: the real server's HTTP port."""

    def __init__(self, server: ServerProcess) -> None:
        self.url = server.http_url


@pytest.fixture(scope="module")
def coach(tmp_path_factory):
    """A real server with two recordings and a de_mirage overview (transform file and radar
    image) in its overview folder."""
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
    # A smoke that burst at tick 1100 (frame 100) still counts down right after a seek past it.
    page.evaluate("window.radar.seek(1200)")
    page.wait_for_function("window.radar.tick === 1200 && window.radar.smokes.length === 1")
    smoke = page.evaluate("window.radar.smokes[0]")
    assert (smoke["x"], smoke["y"]) == (-400, -800)
    assert smoke["left"] == pytest.approx(18 - 100 / 64, abs=0.01)  # paused: exact
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "radar-occupancy.png"))


def test_timeline_markers_at_the_event_ticks(coach, page):
    seam, recording, events = coach
    _open_recording(page, seam.url)
    wanted = [e for e in events if e["type"] in ("kill", "plant", "defuse", "explode")]
    assert len(wanted) == 6  # four kills, two plants
    page.wait_for_function(f"window.radar.markers.length === {len(wanted)}")
    markers = page.evaluate("window.radar.markers")
    assert [(m["tick"], m["type"]) for m in markers] == [(e["tick"], e["type"]) for e in wanted]
    first, last = recording.meta["first_tick"], recording.meta["last_tick"]
    width, height = page.evaluate(
        "(({ width, height }) => [width, height])(document.getElementById('timeline'))"
    )
    for marker in markers:
        x = (marker["tick"] - first) / (last - first) * width
        assert marker["x"] == pytest.approx(x)
        y = 16 if marker["type"] == "kill" else height - 3  # kills above, bomb events below
        assert _pixel(page, "timeline", x, y)[:3] == list(MARKER_RGB[marker["type"]])


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

    page.keyboard.press("4")  # speeds in order: 1.25x
    page.keyboard.press("Space")
    page.wait_for_function("window.radar.session.playing && window.radar.session.speed === 1.25")
    page.keyboard.press("Space")
    page.wait_for_function("!window.radar.session.playing")


def _feed(events: list[dict], tick: int) -> list[str]:
    """The kill feed the page should show at ``tick``: this round's kills up to it."""
    start = max(e["tick"] for e in events if e["type"] == "round_start" and e["tick"] <= tick)
    return [
        f"{e['killer']} [{e['weapon']}{' HS' if e['is_hs'] else ''}] {e['victim']}"
        for e in events
        if e["type"] == "kill" and start <= e["tick"] <= tick
    ]


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
    seam, recording, _ = coach
    _open_recording(page, seam.url)
    page.keyboard.press("1")  # 0.25x
    page.keyboard.press("Space")
    page.wait_for_function("window.radar.session.playing && window.radar.session.speed === 0.25")
    samples = page.evaluate(
        """() => new Promise((done) => {
            const out = [];
            const take = () => {
              const i = window.radar.interpolation;
              if (i) out.push([i.key, i.f, window.radar.positions.Alpha]);
              if (out.length < 60) requestAnimationFrame(take); else done(out);
            };
            requestAnimationFrame(take);
        })"""
    )

    def alpha_px(index: int) -> np.ndarray:
        alpha = next(p for p in recording.frame(index)["players"] if p["name"] == "Alpha")
        return np.array(_expected_px(alpha["x"], alpha["y"]))

    between = 0
    for tick, f, drawn in samples:
        index = int(np.searchsorted(recording.ticks, tick))
        a, b = alpha_px(index), alpha_px(index + 1)
        # Drawn where the page says it is between frame a and the next: f of the way along.
        assert np.allclose(drawn, a + (b - a) * f, atol=0.01), (tick, f, drawn)
        if 0.05 < f < 0.95 and np.linalg.norm(np.array(drawn) - a) > 0.1:
            between += 1
    assert between, f"Alpha never drawn between two frames at 0.25x: {samples[:5]}"


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
    before = page.evaluate("JSON.stringify(window.radar.positions)")
    page.wait_for_function(f"JSON.stringify(window.radar.positions) !== {json.dumps(before)}")
    assert len(page.evaluate("window.radar.positions")) >= 5  # ten players, some dead
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
