#!/usr/bin/env python3
"""Load test a live stream: N subscribers, delivered frames/s, seq gaps, lag percentiles, errors.

Each client connects (at --ramp connections/s), subscribes with --buffer seconds and counts
what arrives. The lag of a frame is its arrival time minus its play time, ``epoch + seq /
rate``, on the server's clock (offset from ``hello.server_time``, so the hello's one-way delay is
not counted): negative means it came early, which is what the buffer is for; a positive lag is a
frame the viewer would have missed. The current frame sent on subscribe (and after a skip) is
left out: it is due by definition. A seq gap is a frame that never came without a ``skip``
saying so. A connection that ends before --duration is a failure.

Clients ask for compressed bursts (``--encoding deflate``, the default) and read only the
envelope of each ``ticks`` message (seq and count come before the data), never inflating or
decoding frames; WebSocket frames are parsed in C by picows. So one process on one core holds
many thousands of subscribers (docs/performance.md); more than --per-process clients are
spread over processes, each with its own event loop, and their results merged. Everything stops
by itself after --duration plus a few seconds.

    python client_examples/loadtest.py --url ws://127.0.0.1:8080 --stream generated -n 2000
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
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import msgpack
from picows import WSFrame, WSInvalidStatusError, WSListener, WSMsgType, WSTransport, ws_connect

BINARY, CLOSE = WSMsgType.BINARY, WSMsgType.CLOSE

GRACE_S = 5.0  # after --duration: time to close sockets before everything is cancelled
SLOW_READ_S = 1.0  # a slow client reads one message a second
TICKS = b"\xa4type\xa5ticks"  # how a ticks message goes on after its map header
FRAMES_KEY = b"\xa6frames"
COUNT_KEY = b"\xa5count"


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
    gap_frames: int = 0  # frames whose seq never came, with no skip saying so
    repeated_frames: int = 0  # frames whose seq came again or out of order
    late_frames: int = 0
    paced_frames: int = 0  # frames after each client's initial buffer fill
    client_seconds: float = 0.0  # summed over clients: time since each one's first frames
    cpu_seconds: float = 0.0  # of the load generator's own processes
    steady_cpu_seconds: float = 0.0  # from the last connection to the deadline
    steady_messages: int = 0  # received in that time
    errors: Counter[str] = field(default_factory=Counter)  # connect failures, error messages
    disconnects: Counter[str] = field(default_factory=Counter)  # by close code, before the end
    lag_ms: Counter[int] = field(default_factory=Counter)

    def merge(self, other: Results) -> None:
        for name, value in vars(other).items():
            if isinstance(value, Counter):
                getattr(self, name).update(value)
            else:
                setattr(self, name, getattr(self, name) + value)

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
        "--encoding", choices=("deflate", "none"), default="deflate",
        help="ask for compressed bursts (default) or today's plain frames",
    )  # fmt: skip
    parser.add_argument("--fields", help="ask for these fields only (see docs/protocol.md)")
    parser.add_argument("--every", type=int, default=1, help="ask for every Nth frame")
    parser.add_argument(
        "--slow", type=float, default=0.0, help="fraction of clients that read slowly (0..1)"
    )
    parser.add_argument(
        "--per-process", type=int, default=10000,
        help="clients per worker process (default 10000: one process holds that on one core)",
    )  # fmt: skip
    parser.add_argument(
        "--processes", type=int, default=0,
        help="worker processes (default: clients / --per-process, at most the CPU count)",
    )  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    parser.add_argument(
        "--max-error-rate", type=float, default=0.0,
        help="exit 1 when more than this fraction of clients failed (default 0)",
    )  # fmt: skip
    parser.add_argument("--token", default="", help="bearer token when the server has one")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.ramp <= 0 or args.duration <= 0 or not 0 <= args.slow <= 1:
        parser.error("need --clients >= 1, --ramp > 0, --duration > 0, 0 <= --slow <= 1")
    if args.every < 1 or args.per_process < 1:
        parser.error("--every and --per-process must be at least 1")
    return args


def stream_url(args: argparse.Namespace) -> str:
    query = {}
    if args.encoding != "none":
        query["encoding"] = args.encoding
    if args.fields:
        query["fields"] = args.fields
    if args.every > 1:
        query["every"] = str(args.every)
    suffix = f"?{urlencode(query)}" if query else ""
    return f"{args.url.rstrip('/')}/live/{args.stream}{suffix}"


# -- reading envelopes -----------------------------------------------------------------------

# A msgpack unsigned int by its first byte: (struct of the value, bytes it takes in all).
UINTS = {0xCC: (struct.Struct(">B"), 2), 0xCD: (struct.Struct(">H"), 3)}
UINTS |= {0xCE: (struct.Struct(">I"), 5), 0xCF: (struct.Struct(">Q"), 9)}
SEQ_WIDTHS = {0xCD: UINTS[0xCD], 0xCE: UINTS[0xCE]}  # the seqs of a running stream
ARRAYS = {0xDC: struct.Struct(">H"), 0xDD: struct.Struct(">I")}
MAX_COUNT = 1023  # frames of one burst in the lag histogram's key (the server sends <= 256)
HEAD = 64  # bytes of a message copied to read its envelope; seq and count come well before


def read_uint(data: bytes, at: int) -> tuple[int, int]:
    """A msgpack unsigned int at ``at``: (value, offset after it); ValueError if it is not one."""
    first = data[at]
    if first < 0x80:
        return first, at + 1
    if first not in UINTS:
        raise ValueError(f"not an unsigned int: 0x{first:02x}")
    kind, size = UINTS[first]
    return kind.unpack_from(data, at + 1)[0], at + size


def read_array_header(data: bytes, at: int) -> int:
    first = data[at]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F
    if first not in ARRAYS:
        raise ValueError(f"not an array: 0x{first:02x}")
    return ARRAYS[first].unpack_from(data, at + 1)[0]


def ticks_seq_count(head: bytes, prefix: bytes) -> tuple[int, int] | None:
    """(seq, frame count) of a live ``ticks`` message from its first bytes, or None when it is
    not one that starts with ``prefix`` (type, stream and the seq key, after the map header).

    Compressed messages carry ``count`` right after ``seq``; plain ones their ``frames`` array.
    """
    if not head.startswith(prefix, 1):
        return None
    seq, at = read_uint(head, 1 + len(prefix))
    if head.startswith(COUNT_KEY, at):
        return seq, read_uint(head, at + len(COUNT_KEY))[0]
    if head.startswith(FRAMES_KEY, at):
        return seq, read_array_header(head, at + len(FRAMES_KEY))
    return None


def ticks_prefix(stream: str) -> bytes:
    """What every ticks message of ``stream`` starts with after its map header."""
    return TICKS + msgpack.packb("stream") + msgpack.packb(stream) + msgpack.packb("seq")


def envelope(data: bytes | memoryview) -> tuple[dict[str, Any], int]:
    """Any message's fields before ``frames`` or ``data`` and its frame count (the slow path:
    msgpack decodes the envelope, skipping the frames)."""
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    fields: dict[str, Any] = {}
    for _ in range(unpacker.read_map_header()):
        key = unpacker.unpack()
        if key == "frames":
            return fields, unpacker.read_array_header()
        if key == "data":
            break
        fields[key] = unpacker.unpack()
    return fields, fields.get("count", 0)


# -- one client ------------------------------------------------------------------------------


class Subscriber(WSListener):
    """One live subscriber: answers hello with subscribe and counts every message's envelope.

    picows calls ``on_ws_frame`` with each WebSocket frame parsed in C; the server sends each
    message as one frame (continuation frames of a fragmented one are only counted as bytes).
    The per-message path is the load generator's whole cost at 10,000 clients: it copies the
    first HEAD bytes and does a few comparisons and additions, nothing per frame.
    """

    def __init__(self, run: Run, slow: bool) -> None:
        self.run = run
        self.results = run.results
        self.bursts = run.bursts
        self.every = run.every
        self.slow = slow
        self.transport: WSTransport | None = None
        self.prefix = b"\0"  # of this stream's ticks messages (known after hello)
        self.seq_at = HEAD  # where their seq starts
        self.rate = 64.0
        self.clock = 0.0  # our clock plus this gives the server's playhead time minus epoch
        self.buffer = 0
        self.current_next = True  # the next frame is the current one (subscribe, skip): due
        self.expected: int | None = None  # next seq; None until the first ticks message
        self.first_arrival: float | None = None
        self.paced_from = 1 << 62  # first seq after the initial buffer fill
        self.ended = False  # the stream said end
        self.failed = False
        self.disconnect: str | None = None  # close code when the server closed first

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.results.connected += 1

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        results = self.results
        results.bytes += frame.payload_size
        if frame.msg_type != BINARY:
            if frame.msg_type == CLOSE:
                self.on_close(transport, frame.get_close_code())
            return  # continuation frames, pongs, text: nothing more to count
        arrival = time.time()
        results.messages += 1
        head = frame.get_payload_as_memoryview()[:HEAD].tobytes()
        at = self.seq_at  # the common case inline: a 2- or 4-byte seq, then a small count
        width = SEQ_WIDTHS.get(head[at]) if len(head) > at + 11 else None
        count = -1
        if width is not None and head.startswith(self.prefix, 1):
            kind, after = width
            if head.startswith(COUNT_KEY, at + after) and head[at + after + 6] < 0x80:
                seq, count = kind.unpack_from(head, at + 1)[0], head[at + after + 6]
        if count < 0:
            parsed = ticks_seq_count(head, self.prefix)
            if parsed is None:
                fields, count = envelope(frame.get_payload_as_memoryview())
                if fields.get("type") != "ticks":
                    self.on_message(fields, arrival)
                    return
                parsed = fields["seq"], count
            seq, count = parsed
        every = self.every
        if seq != self.expected:
            self.unexpected(seq, count)
        self.expected = seq + count * every
        results.frames += count
        if self.current_next or seq < self.paced_from or count > MAX_COUNT:
            self.first_frames(seq, count, arrival)
        else:
            results.paced_frames += count
            key = round((arrival + self.clock - seq / self.rate) * 1e4) * 1024 + count
            self.bursts[key] = self.bursts.get(key, 0) + 1
        if self.slow:
            underlying = transport.underlying_transport
            underlying.pause_reading()
            asyncio.get_running_loop().call_later(SLOW_READ_S, _resume, underlying)

    def unexpected(self, seq: int, count: int) -> None:
        """A message that does not continue the last one: the first, a gap, or a repeat."""
        if self.expected is None:
            return
        if seq > self.expected:
            self.results.gap_frames += (seq - self.expected) // self.every
        else:
            self.results.repeated_frames += count

    def first_frames(self, seq: int, count: int, arrival: float) -> None:
        """Frames right after subscribe or skip: the current frame is due already (no lag),
        the buffer fill comes at once (not paced)."""
        every = self.every
        if self.first_arrival is None:
            self.first_arrival = arrival
            self.paced_from = seq + every * (1 + self.buffer // every)
        first = 1 if self.current_next else 0
        self.current_next = False
        last = seq + (count - 1) * every
        self.results.paced_frames += max(0, min(count, (last - self.paced_from) // every + 1))
        for start in range(seq + first * every, last + 1, MAX_COUNT * every):
            lag = arrival + self.clock - start / self.rate
            key = round(lag * 1e4) * 1024 + min(MAX_COUNT, (last - start) // every + 1)
            self.bursts[key] = self.bursts.get(key, 0) + 1

    def on_message(self, fields: dict[str, Any], arrival: float) -> None:
        results = self.results
        kind = fields.get("type")
        if kind == "hello":
            stream = fields["stream"]
            self.rate = float(stream["rate"])
            self.run.step_ms = 1000 * self.every / self.rate
            self.clock = fields["server_time"] - arrival - float(stream["epoch"])
            self.buffer = min(fields["max_buffer"], round(self.run.buffer_s * self.rate))
            self.prefix = ticks_prefix(stream["id"])
            self.seq_at = 1 + len(self.prefix)
            self.transport.send(BINARY, msgpack.packb({"type": "subscribe", "buffer": self.buffer}))
        elif kind == "skip":
            results.skips += 1
            results.skipped_frames += fields["skipped"] or 0  # nil: not countable
            self.current_next, self.expected = True, fields["to_seq"]
        elif kind == "error":
            results.errors[str(fields.get("code"))] += 1
            self.failed = True
        elif kind == "end":
            self.ended = True

    def on_close(self, transport: WSTransport, code: int) -> None:
        if not self.ended and not self.run.stopping:
            self.disconnect = str(code)
        transport.send_close(code)
        transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not (self.ended or self.run.stopping) and self.disconnect is None:
            self.disconnect = "no_close_frame"
        self.run.closed(self)


def _resume(transport: asyncio.Transport) -> None:
    if not transport.is_closing():
        transport.resume_reading()


# -- one process -----------------------------------------------------------------------------


class Run:
    """One process's clients and what they counted; knows when to stop them."""

    def __init__(self, args: argparse.Namespace, count: int) -> None:
        self.url = stream_url(args)
        self.headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
        self.buffer_s = args.buffer
        self.every = args.every
        self.deadline = time.time() + args.duration
        self.results = Results(clients=count)
        # Bursts by lag of their first counted frame (0.1 ms) * 1024 + their frames: how many.
        self.bursts: dict[int, int] = {}
        self.step_ms = 1000 / 64  # between the play times of a message's frames (after hello)
        self.stopping = False
        self.open: set[Subscriber] = set()
        self.all_closed = asyncio.Event()

    async def client(self, slow: bool) -> None:
        """Connect one subscriber; failures to connect are counted, not raised."""
        results = self.results
        try:
            _, listener = await ws_connect(
                lambda: Subscriber(self, slow), self.url, extra_headers=self.headers,
                websocket_handshake_timeout=10,
            )  # fmt: skip
        except WSInvalidStatusError as exc:
            status = int(exc.response.status) if exc.response is not None else "unknown"
            results.errors[f"http_{status}"] += 1
            results.failed += 1
            return
        except Exception as exc:  # OSError, TimeoutError, a refused handshake...
            results.errors[type(exc).__name__] += 1
            results.failed += 1
            return
        self.open.add(listener)
        if self.stopping:
            self.close(listener)

    def closed(self, listener: Subscriber) -> None:
        """A connection ended: what it saw goes into the results."""
        results = self.results
        self.open.discard(listener)
        if listener.disconnect is not None:
            results.disconnects[listener.disconnect] += 1
        results.failed += listener.failed or listener.disconnect is not None
        if listener.first_arrival is not None:
            end = min(time.time(), self.deadline)
            results.client_seconds += max(0.0, end - listener.first_arrival)
        if self.stopping and not self.open:
            self.all_closed.set()

    def close(self, listener: Subscriber) -> None:
        if listener.transport is not None and not listener.transport.is_disconnected:
            listener.transport.send_close()
            listener.transport.disconnect()

    async def stop(self) -> None:
        """At the deadline: close every socket, wait for them to go (at most GRACE_S)."""
        self.stopping = True
        open_now = list(self.open)
        if not open_now:
            return
        for listener in open_now:
            self.close(listener)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_closed.wait(), GRACE_S)

    def finish(self) -> Results:
        """Spread each burst's lag over its frames (frames of a burst are ``step_ms`` apart)."""
        results = self.results
        for key, times in self.bursts.items():
            first_ms, count = (key >> 10) / 10, key & 1023
            for i in range(count):
                lag_ms = first_ms - i * self.step_ms
                results.lag_ms[round(lag_ms)] += times
                results.late_frames += times if lag_ms > 0 else 0
        return results


async def run_clients(args: argparse.Namespace, count: int, slow: int, ramp: float) -> Results:
    """``count`` clients (the first ``slow`` of them slow), started at ``ramp`` per second."""
    run = Run(args, count)
    started = time.monotonic()
    tasks = set()
    for i in range(count):
        if time.time() >= run.deadline:
            run.results.errors["not_started_before_deadline"] += count - i
            run.results.failed += count - i
            break
        task = asyncio.create_task(run.client(i < slow))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        await asyncio.sleep(max(0.0, started + (i + 1) / ramp - time.monotonic()))
    if tasks:
        await asyncio.wait(tasks, timeout=max(0.0, run.deadline - time.time()))
    cpu, messages = time.process_time(), run.results.messages
    await asyncio.sleep(max(0.0, run.deadline - time.time()))
    run.results.steady_cpu_seconds = time.process_time() - cpu
    run.results.steady_messages = run.results.messages - messages
    for task in list(tasks):  # still connecting at the deadline
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await run.stop()
    return run.finish()


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
    results = runner(run_clients(args, count, slow, ramp))
    results.cpu_seconds = time.process_time()
    return vars(results)  # plain dict: crosses processes


def shares(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def run(args: argparse.Namespace) -> Results:
    processes = args.processes or min(
        os.cpu_count() or 1, math.ceil(args.clients / args.per_process)
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
        "url": stream_url(args),
        "stream": args.stream,
        "encoding": args.encoding,
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
        "bytes_per_client_s": round(results.bytes / max(1e-9, results.client_seconds)),
        "lag_ms": {f"p{q}": results.percentile(q) for q in (50, 95, 99)},
        "late_frames": results.late_frames,
        "gap_frames": results.gap_frames,
        "repeated_frames": results.repeated_frames,
        "skips": results.skips,
        "skipped_frames": results.skipped_frames,
        "loadtest_cpu_s": round(results.cpu_seconds, 2),
        "loadtest_us_per_message": round(
            results.steady_cpu_seconds * 1e6 / max(1, results.steady_messages), 1
        ),
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
