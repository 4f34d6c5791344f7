"""What a hostile client tries against the server's HTTP and WebSocket ports, one test each.

Each answer must be a clear error to the sender while the server and other clients go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import msgpack
import pytest
import websockets
from conftest import tiny_frames, until
from websockets.asyncio.client import connect

from server.config import ConfigError, ServerConfig, validate

pytestmark = pytest.mark.timeout(90)


def ws_url(app, path: str) -> str:
    return f"ws://127.0.0.1:{app.port}{path}"


async def recv(ws) -> dict:
    return msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5.0))


def http(app, path: str, headers: dict | None = None, method: str = "GET"):
    request = urllib.request.Request(
        f"http://127.0.0.1:{app.http_port}{path}", headers=headers or {}, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def raw_request(port: int, head: bytes) -> int:
    """Send a hand-made request head; return the status code of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    return int(answer.split(b" ", 2)[1])


async def test_odd_http_requests_get_4xx_never_500(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"], token="s3cret")
    heads = {
        "NUL in the path": (b"GET /recordings/a\x00b/file HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        "escaped NUL": (
            b"GET /recordings/a%00b/file?token=s3cret HTTP/1.1\r\nHost: x\r\n\r\n",
            404,
        ),
        "two Range headers": (
            b"GET /recordings/tiny/file?token=s3cret HTTP/1.1\r\nHost: x\r\n"
            b"Range: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n",
            400,
        ),
        "two Authorization headers": (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer s3cret\r\nAuthorization: Bearer other\r\n\r\n",
            400,
        ),
    }
    for what, (head, expected) in heads.items():
        status = await asyncio.to_thread(raw_request, app.http_port, head)
        assert status == expected, (what, status)
    two_upgrades = (
        b"GET /live/tiny?token=s3cret HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
        b"dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    status = await asyncio.to_thread(raw_request, app.port, two_upgrades)
    assert 400 <= status < 500
    assert (await asyncio.to_thread(http, app, "/healthz"))[0] == 200


async def test_a_long_stream_name_closes_4004_with_a_reason_that_fits(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"])
    async with connect(ws_url(app, "/live/" + "x" * 300)) as ws:
        error = await recv(ws)
        assert error["code"] == "unknown_stream"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd.code == 4004 and len(closed.value.rcvd.reason.encode()) <= 123


async def test_cors_only_for_configured_origins(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"], allowed_origins=["https://radar.example"])
    _, headers, _ = await asyncio.to_thread(
        http, app, "/streams", {"Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in headers and "Origin" in headers["Vary"]
    _, headers, _ = await asyncio.to_thread(
        http, app, "/streams", {"Origin": "https://radar.example"}
    )
    assert headers["Access-Control-Allow-Origin"] == "https://radar.example"
    status, headers, _ = await asyncio.to_thread(
        http, app, "/recordings", {"Origin": "https://radar.example"}, "OPTIONS"
    )
    assert status == 204 and "Authorization" in headers["Access-Control-Allow-Headers"]
    for path, method, expected in (("/no/such/route", "GET", 404), ("/healthz", "POST", 405)):
        for origin in ("https://radar.example", "https://evil.example"):  # aiohttp's own errors
            status, headers, _ = await asyncio.to_thread(
                http, app, path, {"Origin": origin}, method
            )
            assert status == expected and "Origin" in headers.get("Vary", ""), (path, origin)
            allowed = headers.get("Access-Control-Allow-Origin")
            assert allowed == (origin if "radar" in origin else None), (path, origin)


async def test_the_catalogs_need_the_token_and_probes_do_not(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"], token="s3cret")
    for path in ("/streams", "/recordings", "/metrics", "/recordings/tiny/file"):
        assert (await asyncio.to_thread(http, app, path))[0] == 401, path
        assert (await asyncio.to_thread(http, app, f"{path}?token=s3cret"))[0] == 200, path
    for path in ("/healthz", "/readyz", "/"):
        assert (await asyncio.to_thread(http, app, path))[0] == 200, path


def test_a_public_address_without_a_token_is_refused_at_start_up(tmp_path):
    with pytest.raises(ConfigError, match="--token"):
        validate(ServerConfig(host="0.0.0.0"))
    validate(ServerConfig(host="0.0.0.0", token="t"))
    validate(ServerConfig(host="0.0.0.0", allow_open=True))
    run = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and "--token" in run.stderr


async def test_a_flood_of_requests_is_rate_limited_and_the_session_goes_on(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"], loop=True)
    async with connect(ws_url(app, "/live/tiny")) as ws:
        await recv(ws)  # hello
        for n in range(400):
            await ws.send(msgpack.packb({"type": "ping", "id": n}))
        answers = []
        with contextlib.suppress(TimeoutError):
            while True:
                answers.append(msgpack.unpackb(await asyncio.wait_for(ws.recv(), 1.0)))
        pongs = [m["id"] for m in answers if m["type"] == "pong"]
        errors = [m["code"] for m in answers if m["type"] == "error"]
        assert pongs[:100] == list(range(100))  # the burst is served in order
        assert 100 <= len(pongs) < 400 and errors and set(errors) == {"rate_limited"}
        await asyncio.sleep(1.0)
        await ws.send(msgpack.packb({"type": "subscribe", "buffer": 8}))
        while (await recv(ws))["type"] != "ticks":
            pass
    assert app.metrics.protocol_errors["rate_limited"] > 0


async def test_pipelined_legacy_requests_each_get_a_burst(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"], loop=True)
    async with connect(ws_url(app, "/demodata")) as ws:
        for _ in range(50):  # sent back to back, before reading anything
            await ws.send(json.dumps({"request": "more ticks"}))
        # 1 unasked + 50 asked bursts of 16: 12.75 s of frames, so the last ones are held
        # until the client is less than 10 s ahead, and still sent.
        ticks = [json.loads(await asyncio.wait_for(ws.recv(), 15))["tick"] for _ in range(816)]
        with pytest.raises(TimeoutError):  # then nothing more
            await asyncio.wait_for(ws.recv(), 0.5)
    assert ticks == list(range(ticks[0], ticks[0] + 816))


async def test_deeply_nested_json_on_demodata_gets_an_error(start_app, write_tiny):
    write_tiny()
    app = await start_app(live=["tiny"], loop=True)
    async with connect(ws_url(app, "/demodata")) as ws:
        await ws.send("[" * 16_000 + "]" * 16_000)  # deeper than json can parse, under 32 KiB
        while True:
            message = await asyncio.wait_for(ws.recv(), 5)
            if message.startswith('{"error"'):
                break
        assert json.loads(message)["error"] == "bad_request"
        await ws.send(json.dumps({"request": "more ticks"}))  # and it still serves
        assert "tick" in json.loads(await asyncio.wait_for(ws.recv(), 5))


def write_incompressible(folder, name: str, megabytes: int) -> None:
    """A recording of about ``megabytes`` MB (random padding defeats its compression)."""
    import random

    from conftest import tiny_frames

    from processing.recording import write_recording
    from processing.source import SourceInfo

    rng = random.Random(1)
    frames = tiny_frames(megabytes * 256)
    for frame in frames:
        frame["pad"] = rng.randbytes(4096)
    info = SourceInfo("de_mirage", 64, f"{name}.dem", "0" * 64, "test")
    write_recording(folder / f"{name}.eeict", info, frames)


async def test_concurrent_downloads_are_bounded_and_health_answers(start_app, tmp_path):
    write_incompressible(tmp_path, "big", megabytes=24)  # more than the socket buffers hold
    app = await start_app(live=["big"], max_downloads=2)
    head = b"GET /recordings/big/file HTTP/1.1\r\nHost: x\r\n\r\n"
    stalled = []
    for _ in range(2):  # two clients that ask and never read: they hold the two slots
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
        sock.connect(("127.0.0.1", app.http_port))
        sock.sendall(head)
        stalled.append(sock)
    try:
        for _ in range(100):
            if app.downloads.active == 2:
                break
            await asyncio.sleep(0.05)
        status, headers, _ = await asyncio.to_thread(http, app, "/recordings/big/file")
        assert status == 503 and headers["Retry-After"]
        assert (await asyncio.to_thread(http, app, "/healthz"))[0] == 200
    finally:
        for sock in stalled:
            sock.close()
    for _ in range(100):  # the slots come back when those clients go
        if app.downloads.active == 0:
            break
        await asyncio.sleep(0.05)
    status, _, body = await asyncio.to_thread(http, app, "/recordings/big/file")
    assert status == 200 and body == (tmp_path / "big.eeict").read_bytes()


async def test_a_download_whose_client_never_reads_frees_its_slot(start_app, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="server.http_app")
    write_incompressible(tmp_path, "big", megabytes=24)  # more than the socket buffers hold
    app = await start_app(live=["big"], max_downloads=1)
    app.downloads.send_timeout = 1.0
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", app.http_port))
    try:
        stalled.sendall(b"GET /recordings/big/file HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: app.downloads.active == 1, 10, "the stalled download to start")
        status, _, _ = await asyncio.to_thread(http, app, "/recordings/big/file")
        assert status == 503  # its one slot is held...
        await until(lambda: app.downloads.active == 0, 15, "the stalled download's slot")
    finally:
        stalled.close()
    status, _, body = await asyncio.to_thread(http, app, "/recordings/big/file")  # ...not for good
    assert status == 200 and body == (tmp_path / "big.eeict").read_bytes()
    assert "the client took nothing for 1 s; closed" in caplog.text
    assert not [r for r in caplog.records if r.exc_info], "no traceback"


async def test_a_download_never_follows_a_file_swapped_for_a_symlink(
    start_app, write_tiny, tmp_path
):
    write_tiny("tiny", count=200)
    write_tiny("rep", count=200)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"TOP SECRET " * 1000)
    app = await start_app(live=["tiny"])
    link = tmp_path / ".swap"
    link.symlink_to(outside / "secret")
    os.replace(link, tmp_path / "rep.eeict")  # the listed file is now a link out of the folder
    status, _, body = await asyncio.to_thread(http, app, "/recordings/rep/file")
    assert status == 409 and b"SECRET" not in body
    answer = json.loads(body)
    assert answer["error"] == "recording_changed" and "retry" in answer["message"]
    await until(lambda: "rep.eeict" in app.catalog.refused, 10, "the rescan")
    status, _, body = await asyncio.to_thread(http, app, "/recordings/rep/file")
    assert status == 404 and b"SECRET" not in body
    fd = os.open(tmp_path / "tiny.eeict", os.O_WRONLY)  # changed in place: not sent either
    os.pwrite(fd, b"\0" * 10, 100)
    os.close(fd)
    status, _, body = await asyncio.to_thread(http, app, "/recordings/tiny/file")
    assert status == 409 and json.loads(body)["error"] == "recording_changed"


def raw_upgrade(port: int, path: bytes) -> bytes:
    """A WebSocket upgrade to ``path`` sent by hand; everything the server sends until it closes."""
    head = (
        b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while data := sock.recv(4096):
                answer += data
                frames = answer.partition(b"\r\n\r\n")[2]
                at = frames.find(b"\x88")  # the close frame (the error before it is shorter)
                if at >= 0 and len(frames) >= at + 2 and len(frames) >= at + 2 + frames[at + 1]:
                    break
    return answer


async def test_a_nul_in_a_websocket_path_is_an_unknown_stream(start_app, write_tiny, caplog):
    write_tiny()
    app = await start_app(live=["tiny"])
    caplog.clear()  # what starting logs
    for path in (b"/live/a\x00b", b"/replay/a\x00b", b"/live/a%00b", b"/replay/a%00b",
                 b"/demodata?stream=a%00b"):  # fmt: skip
        answer = await asyncio.to_thread(raw_upgrade, app.port, path)
        head, _, frames = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), (path, head)
        assert b"unknown_stream" in frames and b"\x88" in frames, (path, frames)
        close = frames[frames.index(b"\x88") :]
        assert int.from_bytes(close[2:4], "big") == 4004, (path, close)
    async with connect(ws_url(app, "/live/tiny")) as ws:  # the server goes on
        assert (await recv(ws))["type"] == "hello"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


class Client:
    """A WebSocket client reading in the background: messages (decoded), and the close code
    and reason once it is closed."""

    def __init__(self, ws, text: bool = False) -> None:
        self.ws, self.text = ws, text
        self.messages: list = []
        self.closed: tuple[int | None, str | None] | None = None
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for data in self.ws:
                self.messages.append(json.loads(data) if self.text else msgpack.unpackb(data))
        self.closed = (self.ws.close_code, self.ws.close_reason)

    def seqs(self, after: int = 0) -> list[int]:
        return [
            m["seq"] + i
            for m in self.messages[after:]
            if m.get("type") == "ticks"
            for i in range(len(m["frames"]))
        ]

    def frames(self, after: int = 0) -> list[dict]:
        return [f for m in self.messages[after:] if m.get("type") == "ticks" for f in m["frames"]]


def _other_version(folder, first_tick: int) -> Path:
    """A valid recording unlike the served ones (other size and ticks), outside the folder."""
    from processing.recording import write_recording
    from processing.source import SourceInfo

    frames = tiny_frames(1000, first_tick=first_tick)
    for frame in frames:
        frame["players"].append(dict(frame["players"][0], sid=2, name="p2"))
    path = folder / f"v{first_tick}.eeict"
    write_recording(path, SourceInfo("de_mirage", 64, "v.dem", "0" * 64, "test"), frames)
    return path


@pytest.mark.parametrize("replacement", ["valid", "garbage"])
async def test_a_recording_overwritten_in_place_ends_only_its_own_clients(
    start_app, write_tiny, tmp_path, caplog, replacement
):
    for name in ("match", "rep", "other"):
        write_tiny(name, count=3000)
    spare = tmp_path.parent / f"{tmp_path.name}-spare"
    spare.mkdir()
    valid = _other_version(spare, first_tick=50_000)
    garbage = spare / "garbage"
    garbage.write_bytes(b"\0" * 200_000)
    app = await start_app(live=["match", "other"], loop=True)
    ws = {
        name: await connect(ws_url(app, path))
        for name, path in (("live", "/live/match"), ("legacy", "/demodata?stream=match"),
                           ("replay", "/replay/rep"), ("other", "/live/other"),
                           ("other_replay", "/replay/other"))
    }  # fmt: skip
    clients = {name: Client(sock, text=name == "legacy") for name, sock in ws.items()}
    try:
        for name in ("live", "other"):
            await ws[name].send(msgpack.packb({"type": "subscribe", "buffer": 16}))
        for name, speed in (("replay", 4), ("other_replay", 1)):  # other: 47 s, never ends here
            await ws[name].send(msgpack.packb({"type": "speed", "value": speed}))
            await ws[name].send(msgpack.packb({"type": "play"}))

        async def ask_for_more() -> None:  # the old client's pace: 16 ticks at a time
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    await ws["legacy"].send(json.dumps({"request": "more ticks"}))
                    await asyncio.sleep(0.25)

        asking = asyncio.create_task(ask_for_more())
        await until(lambda: all(len(c.messages) > 20 for c in clients.values()), 10, "streaming")
        marks = {name: len(c.messages) for name, c in clients.items()}
        source = valid if replacement == "valid" else garbage
        for name in ("match", "rep"):  # what cp does: truncate, then write over the same file
            shutil.copyfile(source, tmp_path / f"{name}.eeict")

        replay = clients["replay"]
        await until(lambda: replay.closed is not None, 10, "the replay's close")
        assert replay.closed[0] == 4010 and "changed" in replay.closed[1]
        assert [m["code"] for m in replay.messages if m["type"] == "error"] == [
            "recording_unreadable"
        ]
        live, legacy = clients["live"], clients["legacy"]
        if replacement == "valid":  # played on from the new file, on the same clock
            await until(lambda: live.closed is not None, 10, "the live subscriber's close")
            assert live.closed[0] == 1012 and "replaced" in live.closed[1]  # reconnect, resume
            last = live.seqs()[-1]
            async with connect(ws_url(app, "/live/match")) as again:
                await recv(again)
                await again.send(msgpack.packb({"type": "subscribe", "resume_seq": last + 1}))
                resumed = Client(again)
                await until(lambda: len(resumed.seqs()) > 64, 10, "the resumed subscription")
            seqs = resumed.seqs()
            assert seqs == list(range(last + 1, last + 1 + len(seqs)))  # nothing lost or twice
            assert all(f["tick"] >= 50_000 and len(f["players"]) == 2 for f in resumed.frames())
            await until(lambda: legacy.messages[-1].get("tick", 0) >= 50_000, 10, "legacy frames")
            assert legacy.closed is None  # the old client just goes on
        else:  # stopped: its clients are told why
            for client in (live, legacy):
                await until(lambda c=client: c.closed is not None, 10, "the live clients' close")
                assert client.closed[0] == 4010, client.closed
            assert legacy.messages[-1]["error"] == "recording_unreadable"
        for name in ("other", "other_replay"):  # everyone else carries on
            count = len(clients[name].seqs(marks[name]))
            await until(lambda n=name, c=count: len(clients[n].seqs(marks[n])) > c + 64, 10, name)
            assert clients[name].closed is None
        seqs = clients["other"].seqs()
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert app.ready and not app.failed
        assert (await asyncio.to_thread(http, app, "/readyz"))[0] == 200
        assert (await asyncio.to_thread(http, app, "/streams"))[0] == 200

        if replacement == "garbage":  # a valid file again: the stream resumes
            shutil.copyfile(valid, tmp_path / "match.eeict")
            async with connect(ws_url(app, "/live/match")) as again:
                await recv(again)
                await asyncio.sleep(4.0)  # past the stream's next look at its file
                await again.send(msgpack.packb({"type": "subscribe", "buffer": 16}))
                while (message := await recv(again))["type"] != "ticks":
                    pass
                assert message["frames"][0]["tick"] >= 50_000
    finally:
        asking.cancel()
        for sock in ws.values():
            await sock.close()
    assert not [r for r in caplog.records if r.exc_info], "no traceback in the log"
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert ("was replaced; playing the new one" if replacement == "valid" else "stopped") in logged


async def test_client_messages_over_16_kib_get_too_large_and_over_32_kib_close_1009(
    start_app, write_tiny
):
    write_tiny()
    app = await start_app(live=["tiny"], loop=True)
    async with connect(ws_url(app, "/live/tiny"), max_size=None) as ws:
        await recv(ws)  # hello
        for size in (16 * 1024 + 1, 24 * 1024, 32 * 1024):  # refused, the connection stays
            await ws.send(b"\x80" * size)
            error = await recv(ws)
            assert error["code"] == "too_large" and str(size) in error["message"]
        await ws.send(msgpack.packb({"type": "ping", "id": "still here"}))
        assert (await recv(ws))["id"] == "still here"
        await ws.send(b"\x80" * (32 * 1024 + 1))  # websockets' default (1 MiB) would take it
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await recv(ws)
    assert closed.value.rcvd.code == 1009


async def test_a_connection_holds_at_most_one_unread_message(start_app, write_tiny, monkeypatch):
    """A session that stops reading (here: its handler held) makes the server stop reading its
    socket once a message is queued (websockets' default is 16 of up to 1 MiB each)."""
    from server.live_session import LiveSession

    held = asyncio.Event()
    real_apply = LiveSession._apply

    async def slow_apply(self, request):
        await held.wait()
        return await real_apply(self, request)

    monkeypatch.setattr(LiveSession, "_apply", slow_apply)
    write_tiny()
    app = await start_app(live=["tiny"], loop=True)
    async with connect(ws_url(app, "/live/tiny")) as ws:
        await recv(ws)  # hello
        (server_side,) = app._server.connections
        for n in range(6):  # the first is held in the handler, the next one queued
            await ws.send(msgpack.packb({"type": "ping", "id": n}))
        await until(lambda: not server_side.transport.is_reading(), 5, "reading to pause")
        held.set()
        pongs = [(await recv(ws))["id"] for _ in range(6)]
    assert pongs == list(range(6))  # nothing was lost: reading resumed


async def test_an_unexpected_exception_is_answered_internal_error_and_logged_once(
    start_app, write_tiny, monkeypatch, caplog
):
    from server.replay_session import ReplaySession

    def broken_apply(self, request, now):
        raise RuntimeError("a bug met by this request")

    monkeypatch.setattr(ReplaySession, "_apply", broken_apply)
    write_tiny()
    app = await start_app(live=["tiny"])
    async with connect(ws_url(app, "/replay/tiny")) as ws:
        for n in range(3):
            await ws.send(msgpack.packb({"type": "ping", "id": n}))
        errors = []
        while len(errors) < 3:
            message = await recv(ws)
            if message["type"] == "error":
                errors.append(message)
    assert [(e["code"], e["request"]) for e in errors] == [("internal_error", n) for n in range(3)]
    logged = [r for r in caplog.records if r.name == "server.session_errors"]
    assert len(logged) == 1 and logged[0].exc_info and "logged once" in logged[0].getMessage()


async def test_a_server_without_a_token_says_so_in_one_warning(start_app, write_tiny, caplog):
    from server.app import open_server_warning

    write_tiny()
    await start_app(live=["tiny"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if w.startswith("no --token")]) == 1, warnings
    assert "every local user" in warnings[0] and "set --token (EEICT_TOKEN)" in warnings[0]
    caplog.clear()
    await start_app(live=["tiny"], token="s3cret")
    assert not [r for r in caplog.records if "--token" in r.getMessage()]
    public = open_server_warning(ServerConfig(host="0.0.0.0", allow_open=True))
    assert public is not None and "anyone who can reach it (--allow-open)" in public
    assert "0.0.0.0" in public and "\n" not in public


async def test_hostile_recordings_before_and_while_running_are_listed_as_refused(
    start_app, write_tiny, tmp_path
):
    from test_catalog import hostile_files
    from test_recording_hostile import _swap_metadata, valid

    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    write_tiny()
    before = hostile_files(tmp_path, outside)  # bombs, a FIFO, a symlink, bad metadata, ...
    app = await start_app(live=["tiny"])
    assert (await asyncio.to_thread(http, app, "/readyz"))[0] == 200
    status, _, body = await asyncio.to_thread(http, app, "/recordings")
    assert status == 200 and {r["file"] for r in json.loads(body)["refused"]} == before
    later = {  # what made /recordings and /events answer 500 or raise RecursionError
        "roster-bytes.eeict": valid(roster=[{"sid": 1, "name": "p", "team": "T", "x": b"\0"}]),
        "events-bytes.eeict": valid(events=[{"tick": 100, "type": "kill", "killer": b"p"}]),
        "deep.eeict": _swap_metadata(valid(extra="DEEP"), b"\xa4DEEP", b"\x91" * 1000 + b"\xc0"),
        "nan.eeict": valid(extra={"x": float("nan")}),
    }
    for name, data in later.items():
        (tmp_path / f".{name}.tmp").write_bytes(data)
        os.replace(tmp_path / f".{name}.tmp", tmp_path / name)
    await until(lambda: set(later) <= set(app.catalog.refused), 10, "the rescan")
    for path in ("/readyz", "/recordings", "/recordings/tiny/events", "/streams"):
        status, _, body = await asyncio.to_thread(http, app, path)
        assert status == 200, (path, body[:200])
    answer = json.loads((await asyncio.to_thread(http, app, "/recordings"))[2])
    assert [r["id"] for r in answer["recordings"]] == ["tiny"]
    assert {r["file"] for r in answer["refused"]} == before | set(later)
    status, _, _ = await asyncio.to_thread(http, app, "/recordings/deep/events")
    assert status == 404


async def test_a_live_stream_nobody_watches_notices_its_file_overwritten(
    start_app, write_tiny, tmp_path
):
    write_tiny("match", count=3000)
    write_tiny("other", count=300)
    app = await start_app(live=["match", "other"], loop=True)
    shutil.copyfile(tmp_path / "other.eeict", tmp_path / "match.eeict")  # cp, nobody subscribed
    await asyncio.sleep(3.0)  # past the driver's next look at its open file
    async with connect(ws_url(app, "/live/match")) as ws:
        await recv(ws)
        await ws.send(msgpack.packb({"type": "subscribe", "buffer": 16}))
        client = Client(ws)
        await until(lambda: client.closed is not None or len(client.seqs()) > 64, 10, "frames")
        assert client.closed is None  # served the new file: it was replaced, not broken
    assert all(f["tick"] < 400 for f in client.frames())  # tiny_frames(300): ticks 100..399


async def test_replay_and_demodata_sessions_are_capped_apart_from_live_viewers(
    start_app, write_tiny
):
    """Sessions sent at their client's pace may hold ~1 MiB each (docs/deploy.md, "Sizing"):
    past --max-replays one is closed with 1013, live viewers are not counted, and a slot freed
    is taken again."""
    write_tiny()
    app = await start_app(live=["tiny"], loop=True, max_replays=1)
    async with connect(ws_url(app, "/replay/tiny")) as first:
        assert (await recv(first))["type"] == "hello"
        for path in ("/replay/tiny", "/demodata"):
            async with connect(ws_url(app, path)) as refused:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(refused.recv(), 5)
            assert closed.value.rcvd.code == 1013 and "replay" in closed.value.rcvd.reason
        async with connect(ws_url(app, "/live/tiny")) as viewer:
            assert (await recv(viewer))["type"] == "hello"
    await until(lambda: app.paced_sessions == 0, 5, "the first session to end")
    async with connect(ws_url(app, "/demodata")) as again:
        assert json.loads(await asyncio.wait_for(again.recv(), 5))["tick"] > 0
    assert app.metrics.refused["replays_full"] == 2


async def test_a_replay_outbox_is_bounded_by_bytes():
    """Replies wait while the queued ones would pass the limit; an empty outbox takes one
    reply of any size, so a large reply is never stuck."""
    from server.replay_session import Outbox

    outbox = Outbox(100)
    await outbox.put(b"a" * 60)
    waiting = asyncio.create_task(outbox.put(b"b" * 60))  # 120 > 100: waits
    await asyncio.sleep(0.01)
    assert not waiting.done() and outbox.bytes == 60
    assert outbox.get_nowait() == b"a" * 60
    await asyncio.wait_for(waiting, 1)
    assert outbox.bytes == 60 and outbox.get_nowait() == b"b" * 60 and outbox.empty()
    await asyncio.wait_for(outbox.put(b"c" * 500), 1)  # over the limit, into an empty outbox
    assert outbox.bytes == 500
