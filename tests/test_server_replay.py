"""Replay sessions, range fetch, resume, catalog and downloads over a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import urllib.error
import urllib.request

import msgpack
import pytest
import websockets
from websockets.asyncio.client import connect

from processing.recording import Recording
from server.app import WRITE_LIMIT
from server.streams.fetch import CHUNK_BYTES

pytestmark = pytest.mark.timeout(120)


def url(app, path: str) -> str:
    return f"ws://127.0.0.1:{app.port}{path}"


async def recv(ws) -> dict:
    return msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5.0))


async def until(ws, kind: str, **match) -> dict:
    while True:
        message = await recv(ws)
        if message["type"] == kind and all(message.get(k) == v for k, v in match.items()):
            return message


async def request(ws, **message) -> None:
    await ws.send(msgpack.packb(message))


async def open_replay(app, name: str):
    ws = await connect(url(app, f"/replay/{name}"))
    hello = await recv(ws)
    state = await recv(ws)
    first = await recv(ws)
    assert hello["type"] == "hello" and state["type"] == "state" and state["state"] == "paused"
    assert first["type"] == "ticks" and first["gen"] == state["gen"]
    assert [f["tick"] for f in first["frames"]] == [hello["stream"]["first_tick"]]
    return ws, hello


async def test_hello_has_the_round_timeline_and_seek_returns_that_tick(start_app, write_tiny):
    write_tiny("match", count=1600, step=2)  # round starts every 500 frames
    app = await start_app(live=["match"])
    recording = app.catalog.get("match").recording
    ws, hello = await open_replay(app, "match")
    async with ws:
        assert [r["tick"] for r in hello["rounds"]] == recording.meta["round_starts"]
        rng = random.Random(1)
        for _ in range(30):
            tick = int(recording.ticks[rng.randrange(recording.frame_count)])
            await request(ws, type="seek", tick=tick)
            state = await until(ws, "state")
            frame = (await until(ws, "ticks", gen=state["gen"]))["frames"][0]
            assert state["tick"] == tick and frame["tick"] == tick
        await request(ws, type="seek", round=3)
        assert (await until(ws, "state"))["tick"] == hello["rounds"][2]["tick"]
        await request(ws, type="ping", id="p")
        pong = await until(ws, "pong")
        assert pong["id"] == "p" and abs(pong["server_time"] - time.time()) < 5  # wall clock


async def test_play_pace_speed_and_pause_over_the_socket(start_app, write_tiny):
    write_tiny("match", count=5000)
    app = await start_app(live=["match"])
    ws, _ = await open_replay(app, "match")
    async with ws:
        await request(ws, type="buffer", ticks=0)
        await until(ws, "state")

        async def frames_in(seconds: float) -> int:
            count, deadline = 0, time.time() + seconds
            while (left := deadline - time.time()) > 0:
                try:
                    message = msgpack.unpackb(await asyncio.wait_for(ws.recv(), left))
                except TimeoutError:
                    break
                if message["type"] == "ticks":
                    count += len(message["frames"])
            return count

        await request(ws, type="play")
        normal = await frames_in(2.0)
        await request(ws, type="speed", value=4)
        fast = await frames_in(2.0)
        await request(ws, type="pause")
        await until(ws, "state", state="paused")
        paused = await frames_in(1.0)
    assert 2 * 64 * 0.7 <= normal <= 2 * 64 * 1.2
    assert fast >= 2.5 * normal
    assert paused == 0


async def test_fetch_equals_the_recording_and_respects_credit(start_app, write_tiny):
    write_tiny("match", count=4000, step=2)
    app = await start_app(live=["match"])
    recording = app.catalog.get("match").recording
    ws, _ = await open_replay(app, "match")
    async with ws:
        rng = random.Random(5)
        fetched = 0
        for n in range(5):
            a, b = sorted(rng.randrange(recording.frame_count) for _ in range(2))
            await request(
                ws, type="fetch", id=n, from_tick=int(recording.ticks[a]),
                to_tick=int(recording.ticks[b]), credit=300,
            )  # fmt: skip
            got, unacked = [], 0
            while True:
                message = await recv(ws)
                if message["type"] == "fetch_end":
                    break
                assert message["type"] == "ticks" and message["fetch"] == n, message
                got.extend(message["frames"])
                unacked += len(message["frames"])
                assert unacked <= 300  # never more in flight than allowed
                if unacked >= 200:
                    await request(ws, type="credit", frames=unacked)
                    unacked = 0
            assert message["count"] == b + 1 - a
            assert got == recording.frames(a, b + 1)
            fetched += len(got)
    assert app.metrics.frames_sent["match"] == 1 + fetched  # the opening frame, then fetches


async def test_100_forced_disconnects_with_resume_lose_and_duplicate_nothing(start_app, write_tiny):
    write_tiny("match", count=3000)
    app = await start_app(live=["match"])
    recording = app.catalog.get("match").recording
    first, last = int(recording.ticks[0]), int(recording.ticks[-1])
    got: list[dict] = []
    rng = random.Random(9)
    for _ in range(100):
        ws, _ = await open_replay(app, "match")
        resume = {"resume_after": got[-1]["tick"]} if got else {}
        credit = rng.randrange(1, 25)
        await request(ws, type="fetch", from_tick=first, to_tick=last, credit=credit, **resume)
        got.extend((await until(ws, "ticks"))["frames"])  # a little, then drop the connection
        ws.transport.abort()
    ws, _ = await open_replay(app, "match")
    async with ws:
        await request(
            ws, type="fetch", from_tick=first, to_tick=last, credit=10_000,
            resume_after=got[-1]["tick"],
        )  # fmt: skip
        while (message := await recv(ws))["type"] != "fetch_end":
            got.extend(message["frames"])
    assert got == recording.frames(0, recording.frame_count)


async def test_fetch_client_that_stops_reading_holds_bounded_memory(start_app, write_tiny):
    write_tiny("match", count=3000, players=10, pad=2000)  # ~60 MB of frames in all
    app = await start_app(live=["match"])
    recording = app.catalog.get("match").recording
    ws, _ = await open_replay(app, "match")
    first, last = int(recording.ticks[0]), int(recording.ticks[-1])
    await request(ws, type="fetch", from_tick=first, to_tick=last, credit=1_000_000)
    await asyncio.sleep(2.0)  # the client reads nothing
    (server_side,) = app._server.connections
    queued = server_side.transport.get_write_buffer_size()
    largest_message = CHUNK_BYTES + 1024  # a fetch chunk and its envelope
    assert queued <= WRITE_LIMIT + largest_message
    ws.transport.abort()


async def test_bad_requests_get_clear_errors(start_app, write_tiny):
    write_tiny("match", count=1000)
    app = await start_app(live=["match"])
    ws, _ = await open_replay(app, "match")
    async with ws:
        for message, code in [
            ({"type": "fetch", "from_tick": 10**6, "to_tick": 10**6 + 5}, "out_of_range"),
            ({"type": "seek", "tick": -4}, "out_of_range"),
            ({"type": "speed", "value": -2}, "bad_speed"),
            ({"type": "seek"}, "bad_field"),
            ({"type": "credit", "frames": "5"}, "bad_field"),
            ({"type": "subscribe"}, "unknown_type"),
        ]:
            await request(ws, id=code, **message)
            error = await until(ws, "error")
            assert (error["code"], error["request"]) == (code, code)
    async with connect(url(app, "/replay/nothing-here")) as ws:
        assert (await recv(ws))["code"] == "unknown_stream"
        with pytest.raises(websockets.ConnectionClosed):
            await recv(ws)


async def test_catalog_picks_up_new_files_and_refuses_corrupt_ones(start_app, write_tiny, tmp_path):
    write_tiny("first", count=500)
    app = await start_app(live=["first"])
    write_tiny("second", count=500)
    data = (tmp_path / "second.eeict").read_bytes()
    (tmp_path / "truncated.eeict").write_bytes(data[:1000])
    await asyncio.sleep(1.1)  # a request for an unknown recording rescans at most once a second
    async with connect(url(app, "/replay/second")) as ws:  # no restart needed
        assert (await recv(ws))["stream"]["id"] == "second"
    assert sorted(app.catalog.entries) == ["first", "second"]
    (refused,) = app.catalog.describe()["refused"]
    assert refused["file"] == "truncated.eeict" and "truncated" in refused["reason"]


def http_get(app, path: str, headers: dict | None = None):
    req = urllib.request.Request(f"http://127.0.0.1:{app.http_port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


async def test_download_with_checksum_ranges_and_conditional_get(start_app, write_tiny, tmp_path):
    write_tiny("match", count=2000)
    app = await start_app(live=["match"])
    data = (tmp_path / "match.eeict").read_bytes()
    status, headers, body = await asyncio.to_thread(http_get, app, "/recordings/match/file")
    assert status == 200 and body == data and int(headers["Content-Length"]) == len(data)
    assert headers["X-Checksum-SHA256"] == hashlib.sha256(data).hexdigest()
    Recording.from_bytes(body, "downloaded")  # a valid recording
    status, _, part = await asyncio.to_thread(
        http_get, app, "/recordings/match/file", {"Range": "bytes=100-199"}
    )
    assert status == 206 and part == data[100:200]
    status, _, _ = await asyncio.to_thread(  # aiohttp refuses a backwards range
        http_get, app, "/recordings/match/file", {"Range": "bytes=200-100"}
    )
    assert status == 416
    status, _, _ = await asyncio.to_thread(
        http_get, app, "/recordings/match/file", {"Range": f"bytes={len(data)}-"}
    )
    assert status == 416
    status, _, _ = await asyncio.to_thread(
        http_get, app, "/recordings/match/file", {"If-None-Match": headers["ETag"]}
    )
    assert status == 304
    status, _, _ = await asyncio.to_thread(http_get, app, "/recordings/nope/file")
    assert status == 404
