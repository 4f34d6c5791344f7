"""Replay sessions on a full match: seek latency, full-match fetch speed, memory of 10 replays.

``eeict serve`` runs in its own process with the recording in its folder. Three measurements:

* seek: on ``/replay/<id>`` the client sends ``seek {tick}`` for random ticks, one at a time,
  and times each until the ``ticks`` message of the new generation arrives;
* fetch: the whole match with ``fetch``, credit granted in chunks as frames arrive, against a
  plain asyncio TCP server (its own process) writing the same frame bytes in 256-frame chunks
  (read from the recording the same way, so both pay for chunk decompression);
* memory: server RSS while 10 clients play from different points at 1x to 8x.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _support as sup

from server.rate_limit import REQUESTS_PER_S

PATH = f"/replay/{sup.STREAM_ID}"
CHUNK = 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeks", type=int, default=200)
    parser.add_argument("--fetch-runs", type=int, default=3, help="full-match fetches per server")
    parser.add_argument("--credit", type=int, default=4096, help="fetch credit per grant, frames")
    parser.add_argument("--replays", type=int, default=10, help="concurrent playing clients")
    parser.add_argument("--replay-seconds", type=float, default=15.0)
    parser.add_argument("--json", type=Path, help="write the results here")
    sup.add_recording_args(parser)
    parser.add_argument("--raw-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


class Session:
    """A replay connection: routes messages to whoever waits for them."""

    def __init__(self) -> None:
        self.client: sup.LeanClient | None = None
        self.hello: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiter: asyncio.Future[float] | None = None
        self.gen = 0  # of the last state message; a seek's frames carry a newer one
        self.seek_from: int | None = None  # gen before the seek being timed
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.frames = 0
        self.bytes = 0
        self.on_ticks = None  # handler of fetched frames

    def on_message(self, client, msg: dict[str, Any], size: int, now: float) -> None:
        kind = msg.get("type")
        if kind == "ticks":
            self.frames += msg["count"]
            self.bytes += size
            if self.on_ticks is not None and "fetch" in msg:
                self.on_ticks(msg, size)
            elif self.seek_from is not None and msg.get("gen") == self.gen > self.seek_from:
                self.waiter.set_result(now)
        elif kind == "state":
            self.gen = msg["gen"]
            if not self.opened.done():
                self.opened.set_result(None)
        elif kind == "hello":
            self.hello.set_result(msg)
        elif kind == "fetch_end" and self.waiter and not self.waiter.done():
            self.waiter.set_result(now)
        elif kind == "error" and self.waiter and not self.waiter.done():
            self.waiter.set_exception(RuntimeError(f"server error: {msg}"))

    async def open(self, port: int) -> Session:
        self.client = await sup.open_lean(port, PATH, self.on_message)
        await asyncio.wait_for(self.opened, 10)  # hello, then the session's first state
        return self

    def request(self, message: dict[str, Any]) -> asyncio.Future[float]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.client.send(message)
        return self.waiter


async def seek_latencies(port: int, count: int) -> list[float]:
    """``count`` seeks one after another, each timed until its first frame, paced under the
    server's per-connection request rate (server/rate_limit.py)."""
    session = await Session().open(port)
    stream = session.hello.result()["stream"]
    rng = random.Random(1)
    latencies = []
    spacing = 1.0 / (REQUESTS_PER_S - 5)
    for _ in range(count):
        tick = rng.randint(stream["first_tick"], stream["last_tick"])
        if latencies:
            await asyncio.sleep(max(0.0, spacing - latencies[-1]))
        sent = time.time()
        session.seek_from = session.gen  # the first ticks of the next state's gen ends the wait
        arrived = await asyncio.wait_for(session.request({"type": "seek", "tick": tick}), 10)
        session.seek_from = None
        latencies.append(arrived - sent)
    session.client.transport.close()
    return latencies


async def fetch_match(port: int, credit: int) -> dict[str, float]:
    session = await Session().open(port)
    stream = session.hello.result()["stream"]
    granted = credit

    got = {"frames": 0, "bytes": 0}

    def on_ticks(msg: dict[str, Any], size: int) -> None:
        nonlocal granted
        got["frames"] += msg["count"]
        got["bytes"] += size
        if got["frames"] > granted - max(1, credit // 2):  # credit 1: grant after each frame
            session.client.send({"type": "credit", "frames": credit})
            granted += credit

    session.on_ticks = on_ticks
    started = time.time()
    request = {
        "type": "fetch", "id": 1, "from_tick": stream["first_tick"],
        "to_tick": stream["last_tick"], "credit": credit,
    }  # fmt: skip
    finished = await asyncio.wait_for(session.request(request), 120)
    session.client.transport.close()
    if got["frames"] != stream["frame_count"]:
        raise RuntimeError(f"fetch got {got['frames']} of {stream['frame_count']} frames")
    return {"seconds": finished - started, **got}


class _Counter(asyncio.Protocol):
    def __init__(self, done: asyncio.Future[int]) -> None:
        self.done, self.bytes = done, 0

    def connection_made(self, transport) -> None:
        transport.write(b"G")

    def data_received(self, data: bytes) -> None:
        self.bytes += len(data)

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(self.bytes)


async def fetch_raw(port: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    started = time.time()
    await loop.create_connection(lambda: _Counter(done), "127.0.0.1", port)
    size = await asyncio.wait_for(done, 120)
    return {"seconds": time.time() - started, "bytes": size}


async def raw_server(recording: Path, port: int) -> None:
    """On each connection's first byte, write every frame's bytes in 256-frame chunks, close."""
    from processing.recording import Recording

    rec = Recording.open(recording)

    async def send_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await reader.read(1):
            for start in range(0, rec.frame_count, CHUNK):
                writer.write(rec.frames_bytes(start, start + CHUNK))
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(send_all, "127.0.0.1", port)
    await server.serve_forever()


def start_raw(recording: Path) -> sup.ServerProcess:
    port = sup.free_port()
    argv = [
        sys.executable, str(Path(__file__).resolve()), "--raw-server", str(port),
        "--recording", str(recording),
    ]  # fmt: skip
    server = sup.ServerProcess(argv, port, "raw-tcp")

    def accepts() -> bool:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True

    server.wait_until(accepts, 30)
    return server


async def replay_memory(server: sup.ServerProcess, count: int, seconds: float) -> dict[str, Any]:
    sessions = [await Session().open(server.port) for _ in range(count)]
    stream = sessions[0].hello.result()["stream"]
    first, last = stream["first_tick"], stream["last_tick"]
    speeds = [1 + 7 * i / max(1, count - 1) for i in range(count)]
    for i, (session, speed) in enumerate(zip(sessions, speeds, strict=True)):
        session.client.send({"type": "seek", "tick": first + (last - first) * i // (count + 1)})
        session.client.send({"type": "speed", "value": round(speed, 2)})
        session.client.send({"type": "play"})
    peak: dict[str, int] = {}
    deadline = time.time() + seconds
    while time.time() < deadline:
        await asyncio.sleep(0.25)
        for key, value in sup.memory_kb(server.pid).items():
            peak[key] = max(peak.get(key, 0), value)
    frames = [s.frames for s in sessions]
    for session in sessions:
        session.client.transport.close()
    return {
        "speeds": [round(s, 2) for s in speeds],
        "frames_received": frames,
        "peak_rss_mb": peak["VmRSS"] / 1024,
        "peak_anon_mb": peak["RssAnon"] / 1024,
        "peak_file_mb": peak["RssFile"] / 1024,
    }


async def measure(args: argparse.Namespace, recording: Path) -> dict[str, Any]:
    server = sup.start_eeict(recording)
    try:
        idle_rss = sup.memory_kb(server.pid)["VmRSS"] / 1024
        seeks = await seek_latencies(server.port, args.seeks)
        ours = [await fetch_match(server.port, args.credit) for _ in range(args.fetch_runs)]
        memory = await replay_memory(server, args.replays, args.replay_seconds)
    finally:
        server.stop()
    raw_server_proc = start_raw(recording)
    try:
        raw = [await fetch_raw(raw_server_proc.port) for _ in range(args.fetch_runs)]
    finally:
        raw_server_proc.stop()
    return {"idle_rss_mb": idle_rss, "seeks": seeks, "ours": ours, "raw": raw, "memory": memory}


def run(args: argparse.Namespace) -> dict[str, Any]:
    recording = sup.resolve_recording(args)
    m = sup.run_async(measure(args, recording))
    seek_ms = [1000 * s for s in m["seeks"]]
    ours_s = statistics.median(r["seconds"] for r in m["ours"])
    raw_s = statistics.median(r["seconds"] for r in m["raw"])
    frames = m["ours"][0]["frames"]
    ratio = 100 * raw_s / ours_s
    memory = m["memory"]
    result = {
        "benchmark": "replay",
        "recording": str(recording),
        "frames": frames,
        "seek_p50_ms": sup.percentile(seek_ms, 50),
        "seek_p99_ms": sup.percentile(seek_ms, 99),
        "seek_max_ms": max(seek_ms),
        "fetch_s": [r["seconds"] for r in m["ours"]],
        "fetch_bytes": m["ours"][0]["bytes"],
        "raw_fetch_s": [r["seconds"] for r in m["raw"]],
        "raw_bytes": m["raw"][0]["bytes"],
        "fetch_pct_of_raw": ratio,
        "idle_rss_mb": m["idle_rss_mb"],
        "replay": memory,
    }
    result["rows"] = [
        sup.row(f"seek to first frame p50 / p99 ({args.seeks} seeks)",
                f"{result['seek_p50_ms']:.2f} / {result['seek_p99_ms']:.2f}", "ms",
                "p99 <= 5", result["seek_p99_ms"] <= 5),
        sup.row(f"full-match fetch, {frames:,} frames (median of {args.fetch_runs})",
                f"{ours_s:.2f} s, {frames / ours_s:,.0f} frames/s, "
                f"{result['fetch_bytes'] / ours_s / 1e6:.0f} MB/s", ""),
        sup.row("same bytes over raw TCP", f"{raw_s:.2f} s, "
                f"{result['raw_bytes'] / raw_s / 1e6:.0f} MB/s", ""),
        sup.row("fetch speed as % of raw TCP", round(ratio, 1), "%", ">= 80", ratio >= 80),
        sup.row(f"server RSS, {args.replays} clients playing 1x..8x (peak)",
                round(memory["peak_rss_mb"], 1), "MB", "<= 100", memory["peak_rss_mb"] <= 100),
        sup.row("  of which anonymous / file-backed (mmap)",
                f"{memory['peak_anon_mb']:.0f} / {memory['peak_file_mb']:.0f}", "MB"),
    ]  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.raw_server is not None:
        import uvloop

        uvloop.run(raw_server(args.recording, args.raw_server))
        return 0
    sup.exit_on_sigterm()
    result = run(args)
    sup.print_table("replay on a full match", result["rows"])
    sup.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
