#!/usr/bin/env python3
"""Load test a live stream: N subscribers, delivered frames/s, lag percentiles, errors.

Each client connects (at --ramp connections/s), subscribes with --buffer seconds and counts
what arrives. The lag of a frame is its arrival time minus its play time, ``epoch + seq /
rate``, on the server's clock (offset from ``hello.server_time``, so the hello's one-way delay is
not counted): negative means it came early, which is what the buffer is for; a positive lag is a
frame the viewer would have missed. The current frame sent on subscribe (and after a skip) is
left out: it is due by definition. A connection that ends before --duration is a failure.
Frames are counted from the message header without decoding them, so one process keeps up
with about a thousand clients; more clients are spread over --processes processes, each with
its own asyncio loop, and their results are merged. Everything stops by itself after
--duration plus a few seconds.

    python client_examples/loadtest.py --url ws://127.0.0.1:8080 --stream generated -n 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

CLIENTS_PER_PROCESS = 1000
GRACE_S = 5.0  # after --duration: time to close sockets before everything is cancelled
SLOW_READ_S = 1.0  # a slow client reads one message a second


@dataclass
class Results:
    """Counts from one process; ``merge`` adds another's. Lags are a histogram in ms."""

    clients: int = 0
    connected: int = 0
    failed: int = 0  # clients that saw an error or lost their connection
    frames: int = 0
    messages: int = 0
    bytes: int = 0
    skips: int = 0
    skipped_frames: int = 0
    late_frames: int = 0
    paced_frames: int = 0  # frames after each client's initial buffer fill
    client_seconds: float = 0.0  # summed over clients: time since each one's first frames
    errors: Counter[str] = field(default_factory=Counter)  # connect failures, error messages
    disconnects: Counter[str] = field(default_factory=Counter)  # by close code, before the end
    lag_ms: Counter[int] = field(default_factory=Counter)

    def merge(self, other: Results) -> None:
        for name in ("clients", "connected", "failed", "frames", "messages", "bytes", "skips"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped_frames += other.skipped_frames
        self.late_frames += other.late_frames
        self.paced_frames += other.paced_frames
        self.client_seconds += other.client_seconds
        self.errors.update(other.errors)
        self.disconnects.update(other.disconnects)
        self.lag_ms.update(other.lag_ms)

    def percentile(self, q: float) -> float | None:
        total = sum(self.lag_ms.values())
        if not total:
            return None
        rank, seen = q / 100 * total, 0
        for lag, count in sorted(self.lag_ms.items()):
            seen += count
            if seen >= rank:
                return float(lag)
        return float(max(self.lag_ms))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080", help="server (ws:// or wss://)")
    parser.add_argument("--stream", default="generated", help="live stream id (see /streams)")
    parser.add_argument("-n", "--clients", type=int, default=100, help="subscribers (default 100)")
    parser.add_argument(
        "--ramp", type=float, default=500.0, help="new connections per second (default 500)"
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds from the start (default 10)"
    )
    parser.add_argument(
        "--buffer", type=float, default=1.0, help="each client's buffer, seconds (default 1)"
    )
    parser.add_argument(
        "--slow", type=float, default=0.0, help="fraction of clients that read slowly (0..1)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="worker processes (default: one per 1000 clients, at most the CPU count)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    parser.add_argument(
        "--max-error-rate",
        type=float,
        default=0.0,
        help="exit 1 when more than this fraction of clients failed (default 0)",
    )
    parser.add_argument("--token", default="", help="bearer token when the server has one")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.ramp <= 0 or args.duration <= 0 or not 0 <= args.slow <= 1:
        parser.error("need --clients >= 1, --ramp > 0, --duration > 0, 0 <= --slow <= 1")
    return args


def ticks_header(data: bytes) -> tuple[dict[str, Any], int]:
    """The envelope fields of a server message and its frame count, without decoding frames
    (the server puts ``frames`` last)."""
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    fields: dict[str, Any] = {}
    for _ in range(unpacker.read_map_header()):
        key = unpacker.unpack()
        if key == "frames":
            return fields, unpacker.read_array_header()
        fields[key] = unpacker.unpack()
    return fields, 0


async def client(args: argparse.Namespace, slow: bool, deadline: float, results: Results) -> None:
    """One subscriber until the deadline; everything it sees goes into ``results``."""
    url = f"{args.url.rstrip('/')}/live/{args.stream}"
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    seen = Results()  # this client's own counts, merged at the end
    try:
        async with connect(
            url, additional_headers=headers, compression=None, open_timeout=10, close_timeout=2
        ) as ws:
            seen.connected = 1
            await consume(ws, args, slow, deadline, seen)
    except InvalidStatus as exc:
        seen.errors[f"http_{exc.response.status_code}"] += 1
    except ConnectionClosed as exc:
        seen.disconnects[str(exc.rcvd.code) if exc.rcvd else "no_close_frame"] += 1
    except Exception as exc:  # OSError, TimeoutError, InvalidMessage, a malformed message...
        seen.errors[type(exc).__name__] += 1
    finally:
        seen.failed = int(bool(seen.errors or seen.disconnects))
        results.merge(seen)


@dataclass
class View:
    """One client's view of its stream: the server clock and where steady delivery starts."""

    epoch: float = 0.0
    rate: float = 64.0
    offset: float = 0.0  # server clock minus ours
    buffer: int = 0
    current_next: bool = True  # the next frame is the current one (subscribe, skip): due already
    first_arrival: float | None = None  # of the first ticks message
    paced_from: int = 0  # first seq after the initial buffer fill


async def consume(
    ws: ClientConnection, args: argparse.Namespace, slow: bool, deadline: float, results: Results
) -> None:
    """Read until the deadline; a connection that ends before it without ``end`` is a disconnect
    (1000 and 1001 end ``async for`` quietly)."""
    view = View()
    loop_deadline = asyncio.get_running_loop().time() + deadline - time.time()
    try:
        async with asyncio.timeout_at(loop_deadline):
            ended = await read(ws, args, slow, results, view)
        if not ended:
            results.disconnects[str(ws.close_code)] += 1
    except TimeoutError:
        pass
    finally:
        if view.first_arrival is not None:
            results.client_seconds += max(0.0, min(time.time(), deadline) - view.first_arrival)


async def read(
    ws: ClientConnection, args: argparse.Namespace, slow: bool, results: Results, view: View
) -> bool:
    """Count what arrives until the connection closes; True when the stream sent ``end``."""
    async for data in ws:
        arrival = time.time()
        results.messages += 1
        results.bytes += len(data)
        fields, count = ticks_header(data)
        kind = fields.get("type")
        if kind == "ticks":
            count_ticks(fields["seq"], count, arrival, results, view)
            if slow:
                await asyncio.sleep(SLOW_READ_S)
        elif kind == "hello":
            stream = fields["stream"]
            view.epoch, view.rate = float(stream["epoch"]), float(stream["rate"])
            view.offset = fields["server_time"] - arrival
            view.buffer = min(fields["max_buffer"], round(args.buffer * view.rate))
            await ws.send(msgpack.packb({"type": "subscribe", "buffer": view.buffer}))
        elif kind == "skip":
            results.skips += 1
            results.skipped_frames += fields["skipped"] or 0  # nil: not countable
            view.current_next = True
        elif kind == "error":
            results.errors[str(fields.get("code"))] += 1
        elif kind == "end":
            return True
    return False


def count_ticks(seq: int, count: int, arrival: float, results: Results, view: View) -> None:
    """Frames, their lag, and the frames that count for the paced rate."""
    if view.first_arrival is None:  # the current frame and the buffer arrive at once
        view.first_arrival, view.paced_from = arrival, seq + 1 + view.buffer
    results.frames += count
    results.paced_frames += max(0, min(count, seq + count - view.paced_from))
    first = 0
    if view.current_next:
        view.current_next, first = False, 1
    server_now = arrival + view.offset
    for i in range(first, count):
        lag = server_now - (view.epoch + (seq + i) / view.rate)
        results.lag_ms[round(lag * 1000)] += 1
        results.late_frames += lag > 0


async def run_clients(args: argparse.Namespace, count: int, slow: int, ramp: float) -> Results:
    """``count`` clients (the first ``slow`` of them slow), started at ``ramp`` per second."""
    results = Results(clients=count)
    deadline = time.time() + args.duration
    tasks = []
    for i in range(count):
        if time.time() >= deadline:
            results.errors["not_started_before_deadline"] += count - i
            results.failed += count - i
            break
        tasks.append(asyncio.create_task(client(args, i < slow, deadline, results)))
        await asyncio.sleep(1 / ramp)
    if tasks:
        timeout = max(0.0, deadline - time.time()) + GRACE_S
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return results


def worker(args: argparse.Namespace, count: int, slow: int, ramp: float) -> dict[str, Any]:
    """One process: its own event loop (uvloop when installed) and its share of clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 256)), hard))
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return vars(runner(run_clients(args, count, slow, ramp)))  # plain dict: crosses processes


def shares(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def run(args: argparse.Namespace) -> Results:
    processes = args.processes or min(
        os.cpu_count() or 1, math.ceil(args.clients / CLIENTS_PER_PROCESS)
    )
    processes = max(1, min(processes, args.clients))
    counts = shares(args.clients, processes)
    slows = shares(round(args.clients * args.slow), processes)
    jobs = [(args, n, s, args.ramp / processes) for n, s in zip(counts, slows, strict=True)]
    if processes == 1:
        return Results(**worker(*jobs[0]))
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pending = pool.starmap_async(worker, jobs)
        parts = pending.get(timeout=args.duration + 4 * GRACE_S)
    total = Results()
    for part in parts:
        total.merge(Results(**part))
    return total


def report(args: argparse.Namespace, results: Results, elapsed: float) -> dict[str, Any]:
    return {
        "url": args.url,
        "stream": args.stream,
        "clients": results.clients,
        "connected": results.connected,
        "slow_clients": round(args.clients * args.slow),
        "elapsed_s": round(elapsed, 3),
        "frames": results.frames,
        "frames_per_s": round(results.frames / args.duration, 1),
        "frames_per_s_per_client": round(
            results.paced_frames / max(1e-9, results.client_seconds), 2
        ),
        "messages": results.messages,
        "mbit_per_s": round(results.bytes * 8 / args.duration / 1e6, 2),
        "lag_ms": {f"p{q}": results.percentile(q) for q in (50, 95, 99)},
        "late_frames": results.late_frames,
        "skips": results.skips,
        "skipped_frames": results.skipped_frames,
        "errors": dict(results.errors),
        "disconnects": dict(results.disconnects),
        "failed_clients": results.failed,
        "error_rate": round(results.failed / max(1, results.clients), 4),
    }


def print_table(summary: dict[str, Any]) -> None:
    rows = [(key, value) for key, value in summary.items() if not isinstance(value, dict)]
    rows += [(f"lag {q}", f"{v} ms") for q, v in summary["lag_ms"].items()]
    rows += [(f"error {k}", v) for k, v in summary["errors"].items()]
    rows += [(f"disconnect {k}", v) for k, v in summary["disconnects"].items()]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    results = run(args)
    summary = report(args, results, time.time() - started)
    print_table(summary)
    if args.json == "-":
        print(json.dumps(summary))
    elif args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, indent=1)
    if summary["error_rate"] > args.max_error_rate:
        print(
            f"FAIL: error rate {summary['error_rate']} > --max-error-rate {args.max_error_rate}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
