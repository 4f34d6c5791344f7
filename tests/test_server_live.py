"""The real server and real websockets clients on 127.0.0.1: live streams end to end."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import msgpack
import pytest
import websockets
from websockets.asyncio.client import connect

from server.streams.live import FlowLimits

pytestmark = pytest.mark.timeout(60)


def url(app, path: str) -> str:
    return f"ws://127.0.0.1:{app.port}{path}"


async def recv(ws) -> dict:
    return msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5.0))


async def collect(ws, seconds: float) -> list[tuple[float, dict]]:
    """Every message that arrives within ``seconds``, with its arrival time."""
    out, deadline = [], time.time() + seconds
    while (left := deadline - time.time()) > 0:
        try:
            message = await asyncio.wait_for(ws.recv(), left)
        except TimeoutError:
            break
        out.append((time.time(), msgpack.unpackb(message)))
    return out


def tick_messages(messages):
    return [(t, m) for t, m in messages if m["type"] == "ticks"]


def seqs(messages) -> list[int]:
    return [m["seq"] + i for _, m in tick_messages(messages) for i in range(len(m["frames"]))]


async def subscribe(ws, **fields) -> dict:
    hello = await recv(ws)
    assert hello["type"] == "hello"
    await ws.send(msgpack.packb({"type": "subscribe", **fields}))
    assert (await recv(ws))["type"] == "subscribed"
    return hello


async def test_ticks_in_order_at_pace_and_within_the_buffer(start_app, write_tiny):
    frames = write_tiny()
    app = await start_app(live=["tiny"], loop=True)
    stream = app.drivers["tiny"].stream
    async with connect(url(app, "/live/tiny")) as ws:
        hello = await subscribe(ws, buffer=32)
        assert hello["stream"]["tickrate"] == 64 and hello["server"].startswith("eeict-stream/")
        messages = await collect(ws, 3.0)
    got = seqs(messages)
    assert got == list(range(got[0], got[0] + len(got)))
    for arrival, message in tick_messages(messages):
        last = message["seq"] + len(message["frames"]) - 1
        assert last <= stream.feed.playhead(arrival) + 32  # never beyond the buffer
        for i, frame in enumerate(message["frames"]):
            assert frame == frames[stream.feed.index(message["seq"] + i)]
    # 3 s at 64/s plus the initial 32-frame buffer; generous bounds for a noisy machine.
    assert 3 * 64 * 0.8 + 32 <= len(got) <= 3 * 64 + 32 + 8


async def test_two_clients_see_the_same_tick_at_the_same_moment(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"], loop=True)
    async with connect(url(app, "/live/tiny")) as a, connect(url(app, "/live/tiny")) as b:
        await subscribe(a, buffer=16)
        await subscribe(b, buffer=16)
        got_a, got_b = await asyncio.gather(collect(a, 2.0), collect(b, 2.0))
    when_a = {m["seq"]: t for t, m in tick_messages(got_a)}
    when_b = {m["seq"]: t for t, m in tick_messages(got_b)}
    common = sorted(set(when_a) & set(when_b))
    assert len(common) >= 10
    for seq in common[2:]:  # aligned bursts: the same burst reaches both together
        assert abs(when_a[seq] - when_b[seq]) < 0.05


async def test_late_joiner_starts_at_the_live_edge(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"], loop=True)
    await asyncio.sleep(1.0)
    async with connect(url(app, "/live/tiny")) as ws:
        await subscribe(ws, buffer=0)
        joined = app.drivers["tiny"].stream.feed.playhead(time.time())
        first = (await recv(ws))["seq"]
    assert joined - 2 <= first <= joined
    assert first >= 60  # not from the start


async def test_slow_client_is_skipped_or_closed_while_others_keep_their_rate(start_app, write_tiny):
    write_tiny(count=3000, players=10, pad=2000)  # ~20 KB frames: a stalled reader fills up fast
    app = await start_app(live=["tiny"], loop=True)
    stream = app.drivers["tiny"].stream
    stream.limits = FlowLimits(high_water=64 * 1024, low_water=16 * 1024, close_after_s=2.0)
    small = socket.socket()
    small.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    small.connect(("127.0.0.1", app.port))
    async with (
        connect(url(app, "/live/tiny"), sock=small, max_queue=1) as slow,
        connect(url(app, "/live/tiny")) as fast,
    ):
        await subscribe(slow, buffer=64)
        await subscribe(fast, buffer=64)
        # The slow client reads nothing; the fast one reads for 6 s.
        messages = await collect(fast, 6.0)
        queued = [sub.sink.buffered() for sub in stream.subscribers if not sub.done]
        closes = stream.metrics.slow_disconnects["tiny"]
        skips = stream.metrics.skips["tiny"]
    got = seqs(messages)
    assert got == list(range(got[0], got[0] + len(got)))
    assert len(got) >= 6 * 64 * 0.8  # the fast client's rate is unchanged
    assert closes + skips >= 1
    # Bounded memory: nothing queued anywhere beyond the limit plus one message.
    burst_size = len(stream.burst_bytes(0, 8))
    assert all(size <= 64 * 1024 + burst_size for size in queued)


async def test_malformed_messages_get_errors_and_the_stream_goes_on(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"], loop=True)
    async with connect(url(app, "/live/tiny")) as ws:
        await subscribe(ws, buffer=16)
        bad = [
            b"\xc1",  # never valid msgpack
            msgpack.packb([1, 2]),
            msgpack.packb({"type": "launch"}),
            msgpack.packb({"type": "buffer", "ticks": "many", "id": 7}),
            msgpack.packb({"type": "buffer", "ticks": -5}),
            "a text frame",
            msgpack.packb({"type": "ping", "pad": "x" * 20_000}),
        ]
        for message in bad:
            await ws.send(message)
        messages = await collect(ws, 1.5)
    errors = [m for _, m in messages if m["type"] == "error"]
    assert [e["code"] for e in errors] == [
        "bad_message", "bad_message", "unknown_type", "bad_field", "bad_field", "bad_message",
        "too_large",
    ]  # fmt: skip
    assert errors[3]["request"] == 7
    got = seqs(messages)
    assert len(got) > 64 and got == list(range(got[0], got[0] + len(got)))


async def test_oversized_message_closes_with_1009(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"], loop=True)
    async with connect(url(app, "/live/tiny"), max_size=None) as ws:
        await ws.send(b"x" * (2 * 1024 * 1024))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await recv(ws)
    assert closed.value.rcvd.code == 1009


async def test_unknown_stream_gets_an_error_and_4004(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"])
    async with connect(url(app, "/live/nope")) as ws:
        error = await recv(ws)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv(ws)
    assert error["code"] == "unknown_stream" and "tiny" in error["message"]
    assert closed.value.rcvd.code == 4004


async def test_token_is_required_when_configured(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"], token="s3cret")
    for bad in ("", "?token=wrong"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(url(app, f"/live/tiny{bad}")):
                pass
        assert refused.value.response.status_code == 401
    async with connect(url(app, "/live/tiny?token=s3cret")) as ws:
        assert (await recv(ws))["type"] == "hello"
    headers = {"Authorization": "Bearer s3cret"}
    async with connect(url(app, "/live/tiny"), additional_headers=headers) as ws:
        assert (await recv(ws))["type"] == "hello"
    assert app.metrics.refused["unauthorized"] == 2

    def get(path, headers):
        import urllib.request

        request = urllib.request.Request(f"http://127.0.0.1:{app.http_port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code

    assert await asyncio.to_thread(get, "/metrics", {}) == 401
    assert await asyncio.to_thread(get, "/metrics", {"Authorization": "Bearer s3cret"}) == 200
    assert await asyncio.to_thread(get, "/healthz", {}) == 200  # probes need no token


async def test_connection_cap_closes_with_1013(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"], max_connections=1)
    async with connect(url(app, "/live/tiny")) as first:
        await recv(first)
        async with connect(url(app, "/live/tiny")) as second:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await recv(second)
    assert closed.value.rcvd.code == 1013


async def test_resume_after_reconnect_loses_and_duplicates_nothing(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"], loop=True)
    received: list[int] = []
    async with connect(url(app, "/live/tiny")) as ws:
        await subscribe(ws, buffer=16)
        received += seqs(await collect(ws, 0.5))
    await asyncio.sleep(1.0)  # disconnected: about 64 frames missed
    async with connect(url(app, "/live/tiny")) as ws:
        await subscribe(ws, buffer=16, resume_seq=received[-1] + 1)
        received += seqs(await collect(ws, 0.5))
    assert received == list(range(received[0], received[0] + len(received)))
    assert len(received) > 64 + 16


async def test_legacy_demodata_serves_json_ticks(start_app, write_tiny):
    frames = write_tiny()
    app = await start_app(live=["tiny"], loop=True)
    async with connect(url(app, "/demodata")) as ws:
        first = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(16)]
        with pytest.raises(TimeoutError):  # nothing more until asked
            await asyncio.wait_for(ws.recv(), 0.5)
        await ws.send(json.dumps({"request": "more ticks"}))
        second = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(16)]
    for _ in range(40):  # the handler ends once the client is gone (no leaked connection slot)
        if app.metrics.connections == 0:
            break
        await asyncio.sleep(0.05)
    assert app.metrics.connections == 0
    ticks = [t["tick"] for t in first + second]
    assert ticks == list(range(ticks[0], ticks[0] + 32))
    by_tick = {f["tick"]: f for f in frames}
    assert all(t == by_tick[t["tick"]] for t in first + second)


async def test_http_endpoints(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"], loop=True)
    (app.config.recordings / "broken.eeict").write_bytes(b"\0" * 100)
    await asyncio.to_thread(app.catalog.scan)  # the periodic rescan, without waiting 2 s

    def get(path):
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{app.http_port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    assert (await asyncio.to_thread(get, "/healthz"))[0] == 200
    assert (await asyncio.to_thread(get, "/readyz"))[0] == 200
    _, body = await asyncio.to_thread(get, "/streams")
    stream = json.loads(body)["streams"][0]
    assert stream["id"] == "tiny" and stream["path"] == "/live/tiny" and stream["loop"]
    _, body = await asyncio.to_thread(get, "/recordings")
    catalog = json.loads(body)
    assert [r["id"] for r in catalog["recordings"]] == ["tiny"]
    assert catalog["refused"][0]["file"] == "broken.eeict"
    _, body = await asyncio.to_thread(get, "/metrics")
    assert b"eeict_subscribers" in body and b"eeict_send_lag_seconds_bucket" in body
    assert (await asyncio.to_thread(get, "/nowhere"))[0] == 404


async def test_origin_allow_list(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"], allowed_origins=["https://radar.example"])
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(url(app, "/live/tiny"), origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    for origin in ("https://radar.example", None):  # tools that send no Origin are allowed
        async with connect(url(app, "/live/tiny"), origin=origin) as ws:
            assert (await recv(ws))["type"] == "hello"


async def test_two_servers_with_one_epoch_play_the_same_tick_at_the_same_moment(
    start_app, write_tiny
):
    write_tiny()
    epoch = time.time() - 3.0
    first = await start_app(live=["tiny"], loop=True, epoch=epoch)
    second = await start_app(live=["tiny"], loop=True, epoch=epoch)
    async with (
        connect(url(first, "/live/tiny")) as a,
        connect(url(second, "/live/tiny")) as b,
    ):
        await subscribe(a, buffer=0)
        await subscribe(b, buffer=0)
        got_a, got_b = await asyncio.gather(collect(a, 1.5), collect(b, 1.5))
    when_a = {m["seq"]: (t, m["frames"]) for t, m in tick_messages(got_a)}
    when_b = {m["seq"]: (t, m["frames"]) for t, m in tick_messages(got_b)}
    common = sorted(set(when_a) & set(when_b))[1:]  # the first message is the join frame
    assert len(common) >= 8
    for seq in common:
        assert when_a[seq][1] == when_b[seq][1]  # the same frames under the same seq
        assert abs(when_a[seq][0] - when_b[seq][0]) < 0.05
