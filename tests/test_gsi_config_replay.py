"""gsi-config's cfg text, and gsi-replay posting a capture slice to a real loopback server."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import threading

import pytest
from aiohttp import web
from conftest import require_shared

from processing.gsi import config, replay
from processing.gsi.capture import read_capture
from processing.gsi.replay import ReplayError, paced

SLICE = 25  # payloads: about five seconds of the capture


def parse_keyvalues(text: str) -> dict:
    """A minimal KeyValues reader: "key" "value" pairs and "key" { ... } blocks."""
    tokens = re.findall(r'"([^"]*)"|([{}])', text)
    stack: list[dict] = [{}]
    key = None
    for quoted, brace in tokens:
        if brace == "{":
            child: dict = {}
            stack[-1][key] = child
            stack.append(child)
            key = None
        elif brace == "}":
            stack.pop()
        elif key is None:
            key = quoted
        else:
            stack[-1][key] = quoted
            key = None
    return stack[0]


def test_config_text():
    text = config.render_config("http://10.0.0.5:8081/gsi/final", "s3cret", "final_match")
    (title, body), *rest = parse_keyvalues(text).items()
    assert not rest and title == "EEICT Stream final_match"
    assert body["uri"] == "http://10.0.0.5:8081/gsi/final"
    assert body["auth"] == {"token": "s3cret"}
    assert float(body["throttle"]) == config.THROTTLE_S and float(body["buffer"]) == 0.0
    assert 0 < float(body["heartbeat"]) <= 5 and 0 < float(body["timeout"]) <= 5
    for component in (
        "allplayers_id",
        "allplayers_state",
        "allplayers_match_stats",
        "allplayers_weapons",
        "allplayers_position",
        "allgrenades",
        "bomb",
        "map",
        "round",
        "phase_countdowns",
        "provider",
    ):
        assert body["data"][component] == "1"
    assert body["output"]["precision_position"] == "2"
    assert config.file_name("final_match") == "gamestate_integration_final_match.cfg"


@pytest.mark.parametrize(
    ("url", "token", "name"),
    [
        ("ftp://x/", "t", "a"),
        ("http://x/", 't"', "a"),
        ("http://x/", "t", "bad name"),
        ("http://x/\n", "t", "a"),
    ],
)
def test_config_refuses_what_would_break_the_file(url, token, name):
    with pytest.raises(ValueError):
        config.render_config(url, token, name)


def test_config_command(capsys):
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    assert config.run(parser.parse_args(["--url", "http://h:1/gsi/m", "--token", "t"])) == 0
    out, err = capsys.readouterr()
    assert out == config.render_config("http://h:1/gsi/m", "t", "eeict")
    assert "gamestate_integration_eeict.cfg" in err
    assert config.run(parser.parse_args(["--url", "nope", "--token", "t"])) == 2


def test_paced_spreads_each_second_evenly():
    posts = [{"provider": {"timestamp": t}} for t in (100, 100, 100, 100, 101, 101, 103)]
    assert [t for t, _ in paced(posts)] == [100.0, 100.25, 100.5, 100.75, 101.0, 101.5, 103.0]


class Recorder:
    """A loopback ingest endpoint that records each body with its arrival time."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[tuple[float, dict]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.json()
            await asyncio.sleep(0.002)  # a little work: overlapping posts would show
            self.bodies.append((asyncio.get_running_loop().time(), body))
        finally:
            self.in_flight -= 1
        return web.Response(status=self.status, text="ok" if self.status < 300 else "refused")


async def start(recorder: Recorder) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/gsi/{match}", recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/gsi/m1"


@pytest.fixture(scope="module")
def capture_slice() -> list[dict]:
    return list(read_capture(require_shared("gsi") / "full_game_gsi.zip", limit=SLICE))


async def test_replay_posts_in_order_with_token_at_scaled_pace(capture_slice):
    recorder = Recorder()
    runner, url = await start(recorder)
    try:
        speed = 4.0
        result = await replay.replay(capture_slice, url, speed=speed, token="tok")
    finally:
        await runner.cleanup()
    assert result.posted == len(capture_slice) == len(recorder.bodies)
    assert recorder.max_in_flight == 1  # one request at a time, like the game
    for (_, body), original in zip(recorder.bodies, capture_slice, strict=True):
        assert body["auth"] == {"token": "tok"}
        assert {k: v for k, v in body.items() if k != "auth"} == json.loads(json.dumps(original))
    schedule = [t for t, _ in paced(capture_slice)]
    arrived = [t for t, _ in recorder.bodies]
    for i in (len(schedule) // 2, len(schedule) - 1):
        planned = (schedule[i] - schedule[0]) / speed
        actual = arrived[i] - arrived[0]
        # Never early (waits are on the clock); late by at most the loaded machine's slack.
        assert planned - 0.01 <= actual <= planned + 1.0


async def test_replay_stops_with_a_clear_error_on_refusal(capture_slice):
    recorder = Recorder(status=401)
    runner, url = await start(recorder)
    try:
        with pytest.raises(ReplayError, match="post 1 refused: HTTP 401 refused"):
            await replay.replay(capture_slice, url, speed=100.0)
    finally:
        await runner.cleanup()
    assert len(recorder.bodies) == 1


def test_replay_command_exit_status(tmp_path, capsys):
    """The command end to end: a server on its own loop thread, the command on this one."""
    recorder = Recorder()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        holder["runner"], holder["url"] = loop.run_until_complete(start(recorder))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(30)
    parser = argparse.ArgumentParser()
    replay.add_arguments(parser)
    capture = str(require_shared("gsi") / "full_game_gsi.zip")
    try:
        args = parser.parse_args([capture, "--url", holder["url"], "--speed", "50", "--limit", "8"])
        assert replay.run(args) == 0
        assert len(recorder.bodies) == 8 and "auth" not in recorder.bodies[0][1]
        assert "posted 8 payloads" in capsys.readouterr().err
        # --skip goes on where a replay stopped: the next payloads, in order.
        rest = parser.parse_args([capture, "--url", holder["url"], "--speed", "50", "--skip",
                                  "5", "--limit", "4"])  # fmt: skip
        assert replay.run(rest) == 0
        expected = list(read_capture(capture, limit=9))
        assert [body for _, body in recorder.bodies] == expected[:8] + expected[5:9]
        assert "posted 4 payloads" in capsys.readouterr().err
        bad = parser.parse_args([capture, "--url", holder["url"], "--skip", "-1"])
        assert replay.run(bad) == 2
        dead = parser.parse_args([capture, "--url", "http://127.0.0.1:9/gsi/x", "--limit", "2"])
        assert replay.run(dead) == 1
        assert "cannot reach" in capsys.readouterr().err
        missing = parser.parse_args([str(tmp_path / "no.zip"), "--url", holder["url"]])
        assert replay.run(missing) == 1
        assert "no such file" in capsys.readouterr().err
        assert replay.run(parser.parse_args([capture, "--url", holder["url"], "--speed", "0"])) == 2
    finally:
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
