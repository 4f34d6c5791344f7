"""Compressed and shaped ticks end to end: what a client asks for in its URL is what it gets."""

from __future__ import annotations

import asyncio
import time

import msgpack
import pytest
import websockets
from websockets.asyncio.client import connect

from server.streams.encoding import decode_ticks

pytestmark = pytest.mark.timeout(60)


def url(app, path: str) -> str:
    return f"ws://127.0.0.1:{app.port}{path}"


async def recv(ws) -> dict:
    return msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5.0))


async def live_ticks(app, query: str, seconds: float) -> list[tuple[int, dict, int]]:
    """(seq, frame, message size) of every frame a live subscriber gets in ``seconds``."""
    out = []
    async with connect(url(app, f"/live/tiny{query}")) as ws:
        await recv(ws)
        await ws.send(msgpack.packb({"type": "subscribe", "buffer": 16}))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            data = await asyncio.wait_for(ws.recv(), 5.0)
            message = msgpack.unpackb(data)
            if message["type"] != "ticks":
                continue
            step = message.get("every", 1)
            for i, frame in enumerate(decode_ticks(message)):
                out.append((message["seq"] + i * step, frame, len(data)))
    return out


async def test_compressed_live_frames_equal_the_plain_ones_in_fewer_bytes(start_app, write_tiny):
    write_tiny(players=10, pad=40)
    app = await start_app(live=["tiny"], loop=True)
    plain, packed = await asyncio.gather(
        live_ticks(app, "", 1.5), live_ticks(app, "?encoding=deflate", 1.5)
    )
    by_seq = {seq: frame for seq, frame, _ in plain}
    common = [(seq, frame) for seq, frame, _ in packed if seq in by_seq]
    assert len(common) > 32 and all(frame == by_seq[seq] for seq, frame in common)
    plain_bytes = sum(size for _, _, size in plain) / len(plain)
    packed_bytes = sum(size for _, _, size in packed) / len(packed)
    assert packed_bytes < plain_bytes / 3


async def test_shapes_keep_only_the_fields_and_frames_asked_for(start_app, write_tiny):
    frames = write_tiny(players=3)
    app = await start_app(live=["tiny"], loop=True)
    got = await live_ticks(app, "?fields=players.x,players.y,round_start&every=4", 1.5)
    seqs = [seq for seq, _, _ in got]  # the frame on screen at once, then every 4th
    assert len(seqs) > 8 and seqs[1:] == list(range(seqs[1], seqs[-1] + 1, 4))
    assert seqs[1] % 4 == 0 and seqs[1] - seqs[0] <= 4
    for seq, frame, _ in got:
        source = frames[seq % len(frames)]
        assert set(frame) == {"tick", "round_start", "players"}
        assert frame["tick"] == source["tick"]
        assert frame["players"] == [
            {"sid": p["sid"], "x": p["x"], "y": p["y"]} for p in source["players"]
        ]


async def test_one_message_is_built_per_shape_for_all_its_subscribers(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"], loop=True)
    stream = app.drivers["tiny"].stream
    await asyncio.gather(*(live_ticks(app, "?encoding=deflate", 1.0) for _ in range(5)))
    sent = stream.metrics.messages_sent["tiny"]  # to each subscriber, whether built or shared
    assert sent >= 3 * stream._cache.misses  # five subscribers, one build per burst


async def test_replay_and_fetch_honour_the_options(start_app, write_tiny):
    frames = write_tiny()
    app = await start_app(live=["tiny"])
    async with connect(url(app, "/replay/tiny?encoding=deflate&fields=players.x")) as ws:
        await recv(ws)  # hello
        await recv(ws)  # state
        first = await recv(ws)
        assert first["encoding"] == "deflate"
        (frame,) = decode_ticks(first)
        sid = frames[0]["players"][0]["sid"]
        assert frame == {"tick": frames[0]["tick"], "players": [{"sid": sid, "x": 0.0}]}
        await ws.send(msgpack.packb({"type": "fetch", "from_tick": 100, "to_tick": 699, "id": 7}))
        fetched = []
        while True:
            message = await recv(ws)
            if message["type"] == "fetch_end":
                break
            if message["type"] == "ticks" and message.get("fetch") == 7:
                fetched += decode_ticks(message)
        assert [f["tick"] for f in fetched] == list(range(100, 700))
        assert all(f["players"][0]["x"] == float(i) for i, f in enumerate(fetched))


async def test_a_bad_option_is_refused_with_a_reason(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"])
    async with connect(url(app, "/live/tiny?encoding=brotli")) as ws:
        error = await recv(ws)
        assert error["code"] == "bad_option" and "deflate" in error["message"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd.code == 1008
