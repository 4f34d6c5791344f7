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
from dataclasses import dataclass
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
SERVE = (*GSI, "--gsi-stale-after", "1.5", "--gsi-finish-after", "120")
SPEED = "50"  # the whole match in about 35 s of posts
FIRST_PART = 700  # posts: warmup and rounds 1-2 (round 1 starts at post 116)


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


@dataclass(frozen=True)
class Post:
    """What one capture post says the frames it is shown on must hold."""

    scores: tuple[int, int]  # t, ct
    alive: dict[str, tuple]  # name -> (hp, armor, helmet, money, items, weapon in hand, team)
    positions: dict[str, np.ndarray]  # name -> x, y, z
    round_start: bool  # its round phase became freezetime: players are moved to their spawns
    over: bool  # map phase gameover


def capture_posts(capture: Path) -> list[Post]:
    """The capture's posts that make frames (those with a map), read on their own."""
    from processing.gsi.capture import read_capture
    from processing.vocabulary import client_name

    posts: list[Post] = []
    phase = None
    for payload in read_capture(capture):
        game_map = payload.get("map")
        if game_map is None:
            continue  # the game's menu: no frame
        alive, positions = {}, {}
        for player in payload.get("allplayers", {}).values():
            state = player["state"]
            if state["health"] <= 0:
                continue
            weapons = sorted(player["weapons"].items(), key=lambda kv: int(kv[0].split("_")[1]))
            in_hand = [w for _, w in weapons if w["state"] in ("active", "reloading")]
            alive[player["name"]] = (
                state["health"], state["armor"], state["helmet"], state["money"],
                [client_name(w["name"]) for _, w in weapons],
                client_name(in_hand[0]["name"]) if in_hand else "", player["team"],
            )  # fmt: skip
            positions[player["name"]] = np.array([float(v) for v in player["position"].split(",")])
        now = payload.get("round", {}).get("phase")
        scores = (game_map["team_t"]["score"], game_map["team_ct"]["score"])
        over = game_map["phase"] == "gameover"
        posts.append(Post(scores, alive, positions, now == "freezetime" != phase, over))
        phase = now
    return posts


def shows(frame: dict, post: Post, after: Post | None) -> bool:
    """``frame`` is ``post`` (its discrete state exactly) with every position on the way to
    ``after`` by one common fraction: what the framer draws between two consecutive posts."""
    players = {p["name"]: p for p in frame["players"]}
    if players.keys() != post.alive.keys() or (frame["t_wins"], frame["ct_wins"]) != post.scores:
        return False
    for name, p in players.items():
        held = (p["hp"], p["armor"], p["helmet"], p["money"], p["items"], p["actv_itm"], p["team"])
        if held != post.alive[name]:
            return False
    drawn = {name: np.array([p["x"], p["y"], p["z"]]) for name, p in players.items()}
    moving = {} if after is None or after.round_start else {
        name: after.positions[name] - post.positions[name]
        for name in drawn if name in after.positions
    }  # fmt: skip
    step = max(moving, key=lambda name: np.abs(moving[name]).max(), default=None)
    fraction = 0.0
    if step is not None and np.abs(moving[step]).max() > 1e-9:
        delta = moving[step]
        fraction = float((drawn[step] - post.positions[step]) @ delta / (delta @ delta))
    if not -1e-6 <= fraction <= 1 + 1e-6:
        return False
    return all(
        np.abs(drawn[name] - post.positions[name] - fraction * moving.get(name, 0.0)).max() < 1e-3
        for name in drawn
    )


def align(frames: list[dict], posts: list[Post]) -> list[int]:
    """For each frame, the post it shows: the first from the previous frame's on that it is
    (``shows``). Fails if a frame shows no post at or after the one before it: positions and
    state must come at the right time, in the capture's order."""
    at, shown = 0, []
    for index, frame in enumerate(frames):
        start = at
        while not shows(frame, posts[at], posts[at + 1] if at + 1 < len(posts) else None):
            at += 1
            assert at < min(len(posts), start + 400), (
                f"frame {index} (tick {frame['tick']}) shows no post from {start} on"
            )
        shown.append(at)
    return shown


async def test_a_whole_match_streams_live_replays_while_live_and_ends_as_a_recording(
    tmp_path, capture
):
    server = ServerProcess(("--recordings", str(tmp_path), *SERVE))
    server.start()
    try:
        watcher = Watcher(server)
        watching = asyncio.create_task(watcher.run())
        # The match in two parts: warmup and rounds 1-2, then (after the live checks) the rest.
        # Nothing waits for a part to be half done: the checks need round 1 only, and the
        # match cannot end before the second part is posted.
        first = asyncio.create_task(asyncio.to_thread(
            replay, server, capture, "--limit", str(FIRST_PART), "--speed", SPEED
        ))  # fmt: skip
        await until(lambda: any(f["round_start"] for f in watcher.frames.values()), 60, "round 1")

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

        done = await first
        assert done.returncode == 0, done.stderr[-2000:]
        rest = await asyncio.to_thread(
            replay, server, capture, "--skip", str(FIRST_PART), "--speed", SPEED
        )
        assert rest.returncode == 0, rest.stderr[-2000:]
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
    assert watcher.kinds("end")[0]["seq"] == seqs[-1] + 1
    # Stale between the two parts if the second came late, then on again under the same seq.
    assert [m["stale"] for m in watcher.kinds("stale")] in ([], [True, False])

    # The recording is the stream: every frame, the same bytes a subscriber got.
    (entry,) = found
    from processing.recording import Recording

    recording = Recording.open(tmp_path / f"{entry['id']}.eeict")
    frames = recording.frames(0, recording.frame_count)
    assert len(frames) == seqs[-1] + 1 and [watcher.frames[s] for s in seqs] == frames[seqs[0] :]

    # Each frame shows the capture at the right moment: the posts' discrete state exactly
    # (scores, who is alive, hp, armor, helmet, money, items, weapon in hand, team) and
    # positions between two consecutive posts, in the capture's order.
    posts = capture_posts(capture)
    shown = align(frames, posts)
    assert posts[shown[-1]].over and len(set(shown)) > len(posts) // 4  # to the end

    # Rounds: one start per round of the capture (19), each with the score the capture has
    # in that round's freeze time.
    starts = [f for f in frames if f["round_start"]]
    expected = capture_round_scores(capture)
    assert len(starts) == len(expected) == 19 == len(recording.meta["round_starts"])
    assert [(f["t_wins"], f["ct_wins"]) for f in starts] == expected
    assert recording.meta["round_starts"] == [f["tick"] for f in starts]
    assert (frames[-1]["t_wins"], frames[-1]["ct_wins"]) == posts[-1].scores
    # The capture's halftime: frames in the intermission, then one switch of sides.
    assert any(f["is_halftime"] for f in frames) and sum(f["switch"] for f in frames) == 1
    # Refused posts are counted by reason.
    for reason, count in (("unauthorized", 2), ("bad_payload", 3), ("too_large", 1),
                          ("unknown_match", 1)):  # fmt: skip
        assert f'eeict_ingest_errors_total{{reason="{reason}"}} {count}.0' in exposition


def capture_round_scores(capture: Path) -> list[tuple[int, int]]:
    """(t, ct) score in each round's freeze time, by rounds played, from the capture."""
    from processing.gsi.capture import read_capture

    scores: dict[int, set[tuple[int, int]]] = {}
    for payload in read_capture(capture):
        game_map = payload.get("map", {})
        if payload.get("round", {}).get("phase") == "freezetime" and game_map["phase"] == "live":
            score = (game_map["team_t"]["score"], game_map["team_ct"]["score"])
            scores.setdefault(game_map["round"], set()).add(score)
    assert all(len(s) == 1 for s in scores.values())
    return [scores[n].pop() for n in sorted(scores)]


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
