#!/usr/bin/env python3
"""How many 64 Hz subscribers one client_examples/loadtest.py process follows, and at what CPU.

The eeict server cannot yet feed 10,000 subscribers on this machine, so this runs the load
generator against a minimal broadcaster instead: it answers the WebSocket handshake and
``hello``, then every burst (8 frames, 125 ms at 64 Hz) writes the same compressed ``ticks``
frame (server/streams/encoding.py, the frames of a real recording) to every socket, the raw
``broadcast()`` floor of a server. Both run as their own processes; their CPU comes from /proc.

    python bench/bench_loadtest.py -n 10000 --duration 60 --recording /tmp/recs/run_1.eeict
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._support import cpu_seconds, free_port, raise_nofile  # noqa: E402
from processing.recording import Recording  # noqa: E402
from server import protocol  # noqa: E402
from server.streams.encoding import encode_ticks  # noqa: E402

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455
RATE = 64.0
BURST = 8
STREAM = "bench"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--clients", type=int, default=10000, help="subscribers")
    parser.add_argument("--duration", type=float, default=60.0, help="loadtest seconds")
    parser.add_argument("--ramp", type=float, default=1000.0, help="connections per second")
    parser.add_argument(
        "--recording", type=Path, help="frames to send (default: the generated match)"
    )
    parser.add_argument("--encoding", choices=("deflate", "none"), default="deflate")
    parser.add_argument("--burst", type=int, default=BURST, help="frames per message")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


class Peer(asyncio.Protocol):
    """One client socket: handshake, hello, then it is in ``peers`` and gets every burst."""

    def __init__(self, peers: set[asyncio.Transport], hello: bytes) -> None:
        self.peers, self.hello, self.head = peers, hello, b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.transport in self.peers:
            return  # subscribe, pongs, close: nothing to act on
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        key = next(
            line.split(b":", 1)[1].strip()
            for line in self.head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + self.hello
        )
        self.peers.add(self.transport)

    def connection_lost(self, exc) -> None:
        self.peers.discard(self.transport)


async def serve(
    port: int, recording: Recording, encoding: str | None, stats: Path, burst: int = BURST
) -> None:
    """Broadcast forever; ``stats`` gets, once a second, how late the bursts went out (after
    the write to the last socket), so the lag the clients see can be told apart from ours."""
    peers: set[asyncio.Transport] = set()
    epoch = time.time()
    stream = {"id": STREAM, "epoch": epoch, "rate": RATE, "burst": burst}

    def hello() -> bytes:
        message = {"type": "hello", "server_time": time.time(), "max_buffer": 1920}
        return protocol.binary_frame(protocol.pack({**message, "stream": stream}))

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Peer(peers, hello()), "127.0.0.1", port, backlog=4096)
    async with server:
        await broadcast(peers, epoch, recording, encoding, stats, burst)


async def broadcast(
    peers: set[asyncio.Transport],
    epoch: float,
    recording: Recording,
    encoding,
    stats: Path,
    burst: int = BURST,
) -> None:
    seq, late_ms, written = 0, [], time.time()
    while True:
        await asyncio.sleep(max(0.0, epoch + seq / RATE - time.time()))
        start = seq % (recording.frame_count - burst)
        frames = recording.frames_bytes(start, start + burst)
        message = encode_ticks({"stream": STREAM, "seq": seq}, burst, frames, encoding)
        frame = protocol.binary_frame(message)
        for transport in list(peers):
            transport.write(frame)
        if peers:
            late_ms.append((time.time() - epoch - seq / RATE) * 1000)
        if time.time() - written > 1 and late_ms:
            write_stats(stats, late_ms)
            written = time.time()
        seq += burst


def write_stats(path: Path, late_ms: list[float]) -> None:
    ordered = sorted(late_ms)
    summary = {f"p{q}": round(ordered[int(q / 100 * (len(ordered) - 1))]) for q in (50, 99)}
    path.write_text(json.dumps(summary))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile(args.clients + 1024)
    if args.recording is None:
        from server.builtin import load_builtin

        args.recording = Path(load_builtin(24).name)
    if args.serve:
        import uvloop

        encoding = None if args.encoding == "none" else args.encoding
        stats = Path(f"/tmp/eeict-bench-broadcaster-{args.serve}.json")
        recording = Recording.open(args.recording)
        uvloop.run(serve(args.serve, recording, encoding, stats, args.burst))
        return 0
    port = free_port()
    command = [sys.executable, __file__, "--serve", str(port), "--recording", str(args.recording)]
    broadcaster = subprocess.Popen([*command, "--encoding", args.encoding])
    try:
        time.sleep(2)
        report = Path(f"/tmp/eeict-bench-loadtest-{port}.json")
        loadtest = [sys.executable, str(ROOT / "client_examples" / "loadtest.py")]
        loadtest += ["--url", f"ws://127.0.0.1:{port}", "--stream", STREAM, "-n", str(args.clients)]
        loadtest += ["--ramp", str(args.ramp), "--duration", str(args.duration)]
        loadtest += ["--encoding", args.encoding, "--json", str(report)]
        server_before = cpu_seconds(broadcaster.pid)
        started = time.monotonic()
        subprocess.run(loadtest, check=False, stdout=subprocess.DEVNULL)
        wall = time.monotonic() - started
        server_cpu = cpu_seconds(broadcaster.pid) - server_before
        summary = json.loads(report.read_text())
        report.unlink()
        stats = Path(f"/tmp/eeict-bench-broadcaster-{port}.json")
        broadcaster_late = json.loads(stats.read_text()) if stats.exists() else None
        stats.unlink(missing_ok=True)
    finally:
        broadcaster.terminate()
        broadcaster.wait(10)
    keys = ("clients", "connected", "frames_per_s_per_client", "bytes_per_client_s", "lag_ms")
    keys += ("gap_frames", "skips", "failed_clients", "errors", "disconnects")
    keys += ("loadtest_cpu_s", "loadtest_us_per_message")
    result = {key: summary[key] for key in keys}
    result |= {"encoding": args.encoding, "wall_s": round(wall, 1)}
    result["loadtest_core_share"] = round(summary["loadtest_cpu_s"] / wall, 2)
    result["broadcaster_core_share"] = round(server_cpu / wall, 2)
    result["broadcaster_late_ms"] = broadcaster_late  # of the last burst written, per burst
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
