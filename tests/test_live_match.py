"""A match being played: the shared GSI capture posted by ``eeict gsi-replay`` into a real server.

Subscribers get frames that follow the capture, the match can be replayed while it runs, bad
posts are refused while the stream goes on, a quiet feed is marked stale and resumes, a server
restart continues under a new epoch, and the match ends as a recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import msgpack
import numpy as np
import pytest
from conftest import require_shared, until
from server_process import ServerProcess
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.timeout(240)

MATCH, TOKEN = "m", "s3cret"
EXAMPLES = Path(__file__).resolve().parents[1] / "client_examples"
GSI = ("--gsi", f"{MATCH}={TOKEN}")
SERVE = (*GSI, "--gsi-stale-after", "1.5", "--gsi-finish-after", "4")


@pytest.fixture(scope="module")
def capture() -> Path:
    return require_shared("gsi") / "full_game_gsi.zip"


def replay(server: ServerProcess, capture: Path, *options: str) -> subprocess.CompletedProcess:
    """``eeict gsi-replay`` as a user runs it, against ``server``'s ingest endpoint."""
    command = [sys.executable, "-m", "server", "gsi-replay", str(capture), "--url",
               f"{server.http_url}/gsi/{MATCH}", "--token", TOKEN, *options]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=200)


def post(server: ServerProcess, body: bytes, match: str = MATCH) -> int:
    request = urllib.request.Request(f"{server.http_url}/gsi/{match}", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def get_json(server: ServerProcess, path: str):
    with urllib.request.urlopen(f"{server.http_url}{path}", timeout=5) as response:
        return json.load(response)


class Watcher:
    """A live subscriber of the match: every frame with its seq, and every other message."""

    def __init__(self, server: ServerProcess, query: str = "") -> None:
        self.url = f"{server.ws_url}/live/{MATCH}{query}"
        self.frames: dict[int, dict] = {}
        self.seqs: list[int] = []
        self.notices: list[dict] = []
        self.hellos: list[dict] = []

    async def run(self, resume: bool = False) -> None:
        """Until the stream ends or the connection closes; waits for the stream to appear."""
        for _ in range(400):
            try:
                async with connect(self.url) as ws:
                    hello = msgpack.unpackb(await ws.recv())
                    if hello["type"] == "error":  # not streaming yet
                        raise OSError(hello["message"])
                    self.hellos.append(hello)
                    request = {"type": "subscribe", "buffer": 64}
                    if resume and self.seqs:
                        request |= {"resume_seq": self.seqs[-1] + 1,
                                    "epoch": self.hellos[-2]["stream"]["epoch"]}  # fmt: skip
                    await ws.send(msgpack.packb(request))
                    async for data in ws:
                        message = msgpack.unpackb(data)
                        if message["type"] == "ticks":
                            for i, frame in enumerate(message["frames"]):
                                self.seqs.append(message["seq"] + i)
                                self.frames[message["seq"] + i] = frame
                        elif message["type"] != "subscribed":
                            self.notices.append(message)
                            if message["type"] == "end":
                                return
                return
            except (OSError, InvalidStatus):
                await asyncio.sleep(0.05)
            except ConnectionClosed:
                return
        raise AssertionError(f"{self.url} never streamed")

    def kinds(self, kind: str) -> list[dict]:
        return [m for m in self.notices if m["type"] == kind]


def capture_paths(capture: Path) -> dict[str, np.ndarray]:
    """Each player's (x, y) at every post where the capture has them alive, by name."""
    from processing.gsi.capture import read_capture

    paths: dict[str, list[tuple[float, float]]] = {}
    for payload in read_capture(capture):
        for player in (payload.get("allplayers") or {}).values():
            if player.get("state", {}).get("health", 0) > 0 and "position" in player:
                x, y, _ = (float(v) for v in player["position"].split(","))
                paths.setdefault(player["name"], []).append((x, y))
    return {name: np.asarray(points) for name, points in paths.items()}


def distance_to_path(points: np.ndarray, path: np.ndarray) -> np.ndarray:
    """Each point's distance to the polyline through ``path``'s posts (what interpolation draws)."""
    a, b = path[:-1], path[1:]
    ab = b - a
    length2 = np.maximum((ab**2).sum(axis=1), 1e-9)
    best = np.full(len(points), np.inf)
    for start in range(0, len(points), 256):
        p = points[start : start + 256, None, :]
        f = np.clip(((p - a) * ab).sum(axis=2) / length2, 0.0, 1.0)
        nearest = a + f[..., None] * ab
        best[start : start + 256] = np.sqrt(((p - nearest) ** 2).sum(axis=2)).min(axis=1)
    return best


async def test_a_whole_match_streams_live_replays_while_live_and_ends_as_a_recording(
    tmp_path, capture
):
    server = ServerProcess(("--recordings", str(tmp_path), *SERVE))
    server.start()
    try:
        watcher = Watcher(server)
        watching = asyncio.create_task(watcher.run())
        posting = asyncio.create_task(asyncio.to_thread(replay, server, capture, "--speed", "200"))
        # 10 s of the stream: the match is well under way.
        await until(lambda: len(watcher.seqs) >= 640 or posting.done(), 120, "640 frames")
        assert not posting.done(), (await posting).stderr[-2000:]

        # Bad posts get their statuses; the subscriber's stream goes on untouched.
        good = json.dumps({"provider": {"appid": 730}, "auth": {"token": TOKEN}}).encode()
        bad = {
            401: [json.dumps({"provider": {}, "auth": {"token": "wrong"}}).encode(),
                  json.dumps({"provider": {}}).encode()],
            413: [b'{"provider": {}, "pad": "' + b"x" * 400_000 + b'"}'],
            400: [b"not json", b"[1, 2]", json.dumps({"auth": {"token": TOKEN}}).encode()],
        }  # fmt: skip
        for status, bodies in bad.items():
            for body in bodies:
                assert await asyncio.to_thread(post, server, body) == status, body[:60]
        assert await asyncio.to_thread(post, server, good, "nope") == 404

        # The match so far replays while it runs: back to round 1, then catch up at 8x.
        async with connect(f"{server.ws_url}/replay/{MATCH}") as ws:
            hello = msgpack.unpackb(await ws.recv())
            assert hello["live"] and hello["stream"]["kind"] == "live_match"
            first_round = hello["rounds"][0]["tick"]
            await ws.send(msgpack.packb({"type": "seek", "round": 1}))
            state = {}
            while state.get("type") != "state" or state.get("gen", 0) < 2:
                state = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5))
            assert state["tick"] == first_round and state["live"]
            await ws.send(msgpack.packb({"type": "speed", "value": 8}))
            await ws.send(msgpack.packb({"type": "play"}))
            while not (state.get("type") == "state" and state.get("live_edge")):
                state = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 30))
            assert state["tick"] >= state["last_tick"] - 64

        result = await posting
        assert result.returncode == 0, result.stderr[-2000:]
        await asyncio.wait_for(watching, 60)
        metrics = await asyncio.to_thread(urllib.request.urlopen, f"{server.http_url}/metrics")
        exposition = metrics.read().decode()
        found: list[dict] = []

        async def recorded() -> None:  # written after the end, then picked up by the catalog
            while not found:
                catalog = await asyncio.to_thread(get_json, server, "/recordings")
                found.extend(r for r in catalog["recordings"] if r["id"].startswith(f"{MATCH}-"))
                await asyncio.sleep(0.1)

        await asyncio.wait_for(recorded(), 30)
    finally:
        server.stop()

    # Every frame from the moment it joined, in order, once; then the end.
    seqs = watcher.seqs
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and not watcher.kinds("skip")
    assert seqs[0] < 64 and watcher.kinds("end")[0]["seq"] == seqs[-1] + 1
    frames = [watcher.frames[s] for s in seqs]

    # Positions follow the capture: every drawn point lies on the path between its posts.
    paths = capture_paths(capture)
    for name, path in paths.items():
        drawn = np.asarray(
            [(p["x"], p["y"]) for f in frames for p in f["players"] if p["name"] == name]
        )
        if len(drawn):
            assert np.percentile(distance_to_path(drawn, path), 99.9) < 1.0, name
    assert {p["name"] for f in frames for p in f["players"]} <= set(paths)

    # Rounds and score as the capture has them at the end.
    (recording,) = found
    starts = [f["tick"] for f in frames if f["round_start"]]
    recorded = [tick for tick in recording["rounds"] if tick >= frames[0]["tick"]]
    assert recording["frame_count"] == seqs[-1] + 1 and recorded == starts
    assert len(starts) >= 15
    last_live = None
    from processing.gsi.capture import read_capture

    for payload in read_capture(capture):
        if (payload.get("map") or {}).get("phase") in ("live", "gameover"):
            last_live = payload["map"]
    final = frames[-1]
    assert (final["t_wins"], final["ct_wins"]) == (
        last_live["team_t"]["score"], last_live["team_ct"]["score"]
    )  # fmt: skip
    assert 'eeict_ingest_errors_total{reason="unauthorized"} 2.0' in exposition
    # The capture's halftime: frames in the intermission, then one switch of sides.
    assert any(f["is_halftime"] for f in frames) and sum(f["switch"] for f in frames) == 1


async def test_a_quiet_feed_is_stale_then_resumes_without_breaking_seq(tmp_path, capture):
    server = ServerProcess(("--recordings", str(tmp_path), *GSI, "--gsi-stale-after", "1"))
    server.start()
    try:
        watcher = Watcher(server)
        watching = asyncio.create_task(watcher.run())
        first = await asyncio.to_thread(replay, server, capture, "--limit", "150", "--speed", "20")
        assert first.returncode == 0, first.stderr
        await until(lambda: watcher.kinds("stale"), 20, "stale")
        assert watcher.kinds("stale")[0]["stale"] is True
        (stream,) = [s for s in (await asyncio.to_thread(get_json, server, "/streams"))["streams"]
                     if s["id"] == MATCH]  # fmt: skip
        assert stream["stale"] and stream["source"] == "gsi"
        before = len(watcher.seqs)
        again = await asyncio.to_thread(replay, server, capture, "--limit", "150", "--speed", "20")
        assert again.returncode == 0, again.stderr
        await until(lambda: len(watcher.kinds("stale")) >= 3, 20, "resumed, then stale again")
        watching.cancel()
    finally:
        server.stop()
    assert [m["stale"] for m in watcher.kinds("stale")][:3] == [True, False, True]
    seqs = watcher.seqs
    assert len(seqs) > before and seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_a_server_restart_mid_match_continues_under_a_new_epoch(tmp_path, capture):
    server = ServerProcess(("--recordings", str(tmp_path), *GSI, "--gsi-finish-after", "60"))
    server.start()
    try:
        watcher = Watcher(server)
        watching = asyncio.create_task(watcher.run())
        first = await asyncio.to_thread(replay, server, capture, "--limit", "300", "--speed", "20")
        assert first.returncode == 0, first.stderr
        await asyncio.sleep(1.5)  # a sealed chunk reaches the journal every second of frames
        os.killpg(server.proc.pid, signal.SIGKILL)  # no shutdown: what a crash leaves
        server.proc.wait(10)
        server.proc = None
        await asyncio.wait_for(watching, 10)
        seen, streamed = len(watcher.seqs), watcher.seqs[-1] + 1
        server.start()
        resumed = asyncio.create_task(watcher.run(resume=True))
        # Posting goes on while the watcher waits: on a slow machine it may reconnect only
        # after most of a short replay has been framed.
        posting = asyncio.create_task(
            asyncio.to_thread(replay, server, capture, "--limit", "300", "--speed", "20")
        )
        await until(lambda: len(watcher.seqs) > seen + 16, 60, "frames after the restart")
        again = await posting
        assert again.returncode == 0, again.stderr
        async with connect(f"{server.ws_url}/replay/{MATCH}") as ws:
            hello = msgpack.unpackb(await ws.recv())
        resumed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await resumed
        log = server.log()
    finally:
        server.stop()
    old, new = watcher.hellos[0]["stream"]["epoch"], watcher.hellos[-1]["stream"]["epoch"]
    assert old != new
    assert [m["reason"] for m in watcher.kinds("skip")] == ["resume_unknown"]
    # The journal kept all but the last unsealed second of what was streamed before the crash,
    # and the new incarnation's frames follow them.
    reloaded = int(re.search(r"(\d+) frames reloaded", log).group(1))
    assert reloaded >= streamed - 64
    assert hello["stream"]["frame_count"] > reloaded


async def test_the_python_client_example_watches_a_live_match(tmp_path, capture):
    server = ServerProcess(("--recordings", str(tmp_path), *GSI))
    server.start()
    try:
        posting = asyncio.create_task(
            asyncio.to_thread(replay, server, capture, "--limit", "400", "--speed", "20")
        )
        watcher = Watcher(server)
        watching = asyncio.create_task(watcher.run())
        await until(lambda: watcher.seqs, 30, "the live match to start")
        client = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLES / "subscribe.py"), "--url", server.ws_url,
            "--stream", MATCH, "--duration", "3",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(client.communicate(), 30)
        watching.cancel()
        assert (await posting).returncode == 0
    finally:
        server.stop()
    text = output.decode()
    ticks = [int(line.split()[1]) for line in text.splitlines() if line.startswith("tick ")]
    assert client.returncode == 0 and len(ticks) >= 2 and ticks[-1] > ticks[0], text
    assert "skips 0" in text, text
