"""A hostile client at scale: random, truncated and mutated messages on every WebSocket path.

10,000 messages from 24 connections against a real ``eeict serve``, each connection paced
under the request rate limit so that every message reaches the decoders (none is dropped as
``rate_limited``), while a subscriber on another connection keeps receiving: no traceback in
the server's log, every frame the stream's clock made due reaches the subscriber once and in
order, and the server's memory stays bounded. Then 40 downloads that never read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import socket
import time
import urllib.request
from pathlib import Path

import msgpack
import pytest
from server_process import server_process, write_match
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.timeout(180)

MESSAGES = 10_000
CONNECTIONS = 24
PACE = 40.0  # messages a second per connection: under the limit of 50 (bursts of 100)
SUBSCRIBER_BUFFER = 64  # frames the subscriber asks to be ahead: 1 s at the match's 64/s
VALID = [
    {"type": "subscribe", "buffer": 16},
    {"type": "buffer", "ticks": 8},
    {"type": "seek", "tick": 1100},
    {"type": "seek", "time": 2.5},
    {"type": "speed", "value": 2.0},
    {"type": "fetch", "from_tick": 1000, "to_tick": 1200, "credit": 64},
    {"type": "step", "delta": -3},
    {"type": "ping", "id": 1},
]


def http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status


def protocol_errors(http_url: str) -> dict[str, float]:
    """The server's refused-message counters by error code, from /metrics."""
    with urllib.request.urlopen(f"{http_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = r'eeict_protocol_errors_total\{code="([^"]+)"\} (\S+)'
    return {code: float(value) for code, value in re.findall(pattern, text)}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def hostile(rng: random.Random) -> bytes | str:
    """One message of a kind a fuzzer or a careless client sends."""
    kind = rng.randrange(10)
    valid = msgpack.packb(rng.choice(VALID))
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 200))
    if kind == 1:  # truncated
        return valid[: rng.randrange(1, len(valid))]
    if kind == 2:  # flipped bytes
        data = bytearray(valid)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 3:  # nested ~1000 deep inside a field
        return deep(rng.randrange(900, 1100))
    if kind == 4:  # extreme numbers and wrong types in known fields
        value = rng.choice([1e308, -1e308, float("inf"), float("nan"), 2**63, -(2**63), "x", None])
        field = rng.choice(["tick", "time", "round", "value", "buffer", "ticks", "credit"])
        return msgpack.packb({"type": rng.choice(["seek", "speed", "subscribe", "fetch"]),
                              field: value})  # fmt: skip
    if kind == 5:
        return json.dumps({"request": rng.choice(["more ticks", "less", None])})
    if kind == 6:
        return "[" * rng.randrange(1, 5000) + "]" * rng.randrange(0, 5000)
    if kind == 7:  # large
        return msgpack.packb({"type": "ping", "pad": "x" * rng.randrange(10_000, 30_000)})
    if kind == 8:
        return msgpack.packb(rng.choice([[], 5, "type", {"type": 5}, {"id": 1}]))
    return valid


def deep(depth: int) -> bytes:
    """A seek whose ``tick`` is an array nested ``depth`` levels deep (built as bytes)."""
    head = msgpack.packb({"type": "seek", "tick": None})[:-1]  # drop the nil
    return head + b"\x91" * depth + b"\xc0"


async def fuzz_connection(url: str, rng: random.Random, count: int) -> int:
    """Send ``count`` hostile messages at PACE a second, reading answers meanwhile; returns how
    many were sent."""
    sent = 0
    with contextlib.suppress(ConnectionClosed, OSError):
        async with connect(url, max_size=2**22) as ws:

            async def drain() -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for _ in ws:
                        pass

            reader = asyncio.create_task(drain())
            for _ in range(count):
                await ws.send(hostile(rng))
                sent += 1
                await asyncio.sleep(1 / PACE)  # after a stall, never a burst to catch up
            await asyncio.sleep(0.2)
            reader.cancel()
    return sent


class Watcher:
    """The subscriber: every frame's seq, and its failures kept for the test to raise."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.seqs: list[int] = []
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                message = msgpack.unpackb(await asyncio.wait_for(self.ws.recv(), 0.5))
                assert message["type"] in ("subscribed", "ticks"), message  # no skip, no error
                if message["type"] == "ticks":
                    first = message["seq"]
                    self.seqs.extend(range(first, first + len(message["frames"])))

    async def finish(self) -> list[int]:
        """The seqs received until now; raises whatever failed while it watched."""
        self.stop.set()
        received = len(self.seqs)
        await self.task
        return self.seqs[:received]


async def test_hostile_messages_break_nothing_and_cost_no_frames(tmp_path):
    write_match(tmp_path, "match", count=6000)
    with server_process("--recordings", str(tmp_path), "--live", "match", "--loop") as server:
        base = rss_kb(server.proc.pid)
        async with connect(f"{server.ws_url}/live/match") as subscriber:
            hello = msgpack.unpackb(await subscriber.recv())
            rate = hello["stream"]["rate"]
            burst = 2 * hello["stream"]["burst"]  # for a subscriber a second or more ahead
            subscribe = {"type": "subscribe", "buffer": SUBSCRIBER_BUFFER}
            await subscriber.send(msgpack.packb(subscribe))
            started = time.monotonic()
            watcher = Watcher(subscriber)
            paths = ["/live/match", "/replay/match", "/demodata"]
            rng = random.Random(12)
            per = MESSAGES // CONNECTIONS + 1
            sent = await asyncio.gather(
                *(
                    fuzz_connection(f"{server.ws_url}{paths[n % 3]}", random.Random(rng.random()),
                                    per)
                    for n in range(CONNECTIONS)
                )
            )  # fmt: skip
            await asyncio.sleep(1.0)  # the server catches up with its subscriber
            elapsed = time.monotonic() - started
            got = await watcher.finish()  # raises what failed while it watched
        peak = rss_kb(server.proc.pid)
        errors = await asyncio.to_thread(protocol_errors, server.http_url)
        log = server.log()
    assert sum(sent) >= MESSAGES
    assert errors.get("rate_limited", 0) == 0, errors  # every message reached a decoder
    assert sum(errors.values()) > MESSAGES / 2, errors  # most were refused, one by one
    assert "Traceback" not in log, log[-3000:]
    assert got == list(range(got[0], got[0] + len(got)))  # every frame once, in order
    # The stream's clock made elapsed x rate frames due, and the subscriber is kept its buffer
    # ahead of them: allow a burst of rounding and one second of the server running late.
    expected = elapsed * rate + SUBSCRIBER_BUFFER
    assert expected - rate - burst <= len(got) <= expected + burst, (len(got), expected)
    assert peak - base < 150_000, f"RSS grew {peak - base} kB"


async def test_downloads_that_never_read_keep_memory_bounded(tmp_path):
    from test_server_hardening import write_incompressible

    write_incompressible(tmp_path, "big", megabytes=18)
    args = ("--recordings", str(tmp_path), "--live", "big", "--max-downloads", "8")
    with server_process(*args) as server:
        base = rss_kb(server.proc.pid)
        stalled = []
        try:
            for _ in range(40):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("127.0.0.1", server.http_port))
                sock.sendall(b"GET /recordings/big/file HTTP/1.1\r\nHost: x\r\n\r\n")
                stalled.append(sock)
            await asyncio.sleep(1.0)
            during = rss_kb(server.proc.pid)
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await asyncio.to_thread(http_status, f"{server.http_url}/healthz") == 200
            assert loop.time() - started < 2.0
        finally:
            for sock in stalled:
                sock.close()
    assert during - base < 100_000, f"RSS grew {during - base} kB with 40 stalled downloads"
