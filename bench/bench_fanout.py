"""Live fan-out: N subscribers on one 64 tick/s stream, against a bare websockets broadcast.

For each N, ``eeict serve`` runs in its own process and N subscribers connect from client
processes; after the ramp-up, every client counts the frames it gets during the window and the
lag of each ``ticks`` message behind the moment it became due. The same clients then run against
a bare websockets server that ``broadcast()``s the same bytes on the same schedule (the bursts
eeict sends a subscriber with that buffer: 16 frames a message for a buffer of a second or more,
else 8, as ``LiveStream.burst_for``): the ceiling a websockets-based server can reach here.

Lag: a burst of frames [s, s+n) becomes due when frame s+n-1 is ``buffer`` frames ahead of the
playhead, at ``epoch + (s + n - 1 - buffer) / rate``; lag = arrival - due (same host clock), as seen
by the client's event loop (so it includes the client's own queueing). With ``--buffer 0`` this
is the lag of the burst's last frame behind the playhead. A client counts the bursts due inside
the window, so delivered ticks/s is exactly the stream rate when nothing is lost.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import resource
import statistics
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import _support as sup

PATH = f"/live/{sup.STREAM_ID}"
BURST = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000, 2000])
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument("--buffer", type=int, default=64, help="subscriber buffer in frames")
    parser.add_argument("--per-process", type=int, default=700, help="clients per process")
    parser.add_argument("--max-processes", type=int, default=2)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after ramp-up")
    parser.add_argument(
        "--servers", nargs="+", choices=["eeict", "raw"], default=["eeict", "raw"],
        help="which servers to measure (raw = the bare websockets broadcast ceiling)",
    )  # fmt: skip
    parser.add_argument(
        "--server-cmd", nargs="+", metavar="ARG",
        help="command running the eeict CLI instead of `python -m server` (e.g. under a profiler)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the results here")
    sup.add_recording_args(parser)
    parser.add_argument("--raw-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- the ceiling: a bare websockets broadcast server ------------------------------------------


async def raw_server(recording: Path, port: int, buffer: int) -> None:
    """Send every subscriber the same ``ticks`` bytes when due, with broadcast()."""
    from websockets.asyncio.server import broadcast, serve

    from processing.recording import Recording
    from server.protocol import pack, ticks_envelope

    rec = Recording.open(recording)
    rate, count = float(rec.meta["tickrate"]), rec.frame_count
    epoch = time.time()
    subscribers: set[Any] = set()

    async def handler(ws) -> None:
        await ws.send(pack({"type": "hello", "stream": {"epoch": epoch, "rate": rate}}))
        try:
            async for _ in ws:
                if ws not in subscribers:
                    subscribers.add(ws)
                    await ws.send(pack({"type": "subscribed", "buffer": buffer}))
        finally:
            subscribers.discard(ws)

    def process_request(connection, request):
        return None if request.path.startswith("/live/") else connection.respond(200, "ready\n")

    burst = 2 * BURST if buffer >= rate else BURST  # what eeict sends this subscriber

    def frames(seq: int) -> bytes:
        index = seq % count
        if index + burst <= count:
            return rec.frames_bytes(index, index + burst)
        return b"".join(rec.frame_bytes((seq + i) % count) for i in range(burst))

    async with serve(
        handler, "127.0.0.1", port, compression=None, ping_interval=20, ping_timeout=20,
        process_request=process_request,
    ):  # fmt: skip
        seq = 0
        while True:
            delay = epoch + (seq + burst - 1 - buffer) / rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            broadcast(subscribers, ticks_envelope(sup.STREAM_ID, seq, burst, frames(seq)))
            seq += burst


def start_raw(recording: Path, buffer: int) -> sup.ServerProcess:
    port = sup.free_port()
    argv = [
        sys.executable, str(Path(__file__).resolve()), "--raw-server", str(port),
        "--recording", str(recording),
        "--buffer", str(buffer),
    ]  # fmt: skip
    server = sup.ServerProcess(argv, port, "raw")
    server.wait_ready()
    return server


# -- clients -----------------------------------------------------------------------------------


class Subscriber:
    """One client's view of the stream during the measured window."""

    __slots__ = ("client", "epoch", "frames", "gaps", "lags", "next_seq", "rate", "ready", "skips")

    def __init__(self) -> None:
        self.client: sup.LeanClient | None = None
        self.epoch = self.rate = 0.0
        self.frames = self.gaps = self.skips = 0
        self.next_seq: int | None = None
        self.lags = array("d")
        self.ready = asyncio.get_running_loop().create_future()


def client_worker(port: int, count: int, buffer: int, window, ready_q, result_q) -> None:
    sup.die_with_parent(mp.parent_process().pid)  # or it would wait for ``window`` forever
    sup.raise_nofile(20000)
    result_q.put(sup.run_async(_clients(port, count, buffer, window, ready_q)))


async def _clients(port: int, count: int, buffer: int, window, ready_q) -> dict[str, Any]:
    start, stop = math.inf, math.inf  # the window, known once every process is ready

    def handler(sub: Subscriber):
        def on_message(client, msg: dict[str, Any], size: int, now: float) -> None:
            kind = msg.get("type")
            if kind == "ticks":
                seq, n = msg["seq"], msg["count"]
                due = sub.epoch + (seq + n - 1 - buffer) / sub.rate
                if start <= due < stop:
                    sub.frames += n
                    sub.lags.append(now - due)
                    if sub.next_seq is not None and seq > sub.next_seq:
                        sub.gaps += seq - sub.next_seq
                sub.next_seq = seq + n
                if not sub.ready.done():
                    sub.ready.set_result(None)
            elif kind == "hello":
                sub.epoch, sub.rate = msg["stream"]["epoch"], msg["stream"]["rate"]
                client.send({"type": "subscribe", "buffer": buffer})
            elif kind == "skip":
                sub.skips += 1
                sub.next_seq = msg["to_seq"]

        return on_message

    gate = asyncio.Semaphore(32)
    failed = 0

    async def connect() -> Subscriber | None:
        nonlocal failed
        sub = Subscriber()
        async with gate:
            try:
                sub.client = await sup.open_lean(port, PATH, handler(sub))
                await asyncio.wait_for(sub.ready, 20)
            except (OSError, TimeoutError, ConnectionError):
                failed += 1
                return None
        return sub

    subs = [s for s in await asyncio.gather(*(connect() for _ in range(count))) if s]
    ready_q.put(len(subs))
    while window[1] == 0:  # noqa: ASYNC110 - set by the parent process, nothing to await
        await asyncio.sleep(0.05)
    start, stop = window[0], window[1]
    await asyncio.sleep(max(0.0, start - time.time()))
    cpu0 = _own_cpu()
    await asyncio.sleep(max(0.0, stop - time.time()))
    cpu1 = _own_cpu()
    await asyncio.sleep(1.0)  # bursts due before ``stop`` that are still on their way
    lags = array("d")
    for sub in subs:
        lags.extend(sub.lags)
    result = {
        "connected": len(subs),
        "failed": failed,
        "frames": [s.frames for s in subs],
        "lags": lags,
        "gaps": sum(s.gaps for s in subs),
        "skips": sum(s.skips for s in subs),
        "closed": sum(1 for s in subs if s.client.lost),
        "cpu_s": cpu1 - cpu0,
    }
    for sub in subs:
        sub.client.transport.abort()
    return result


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- one measurement ---------------------------------------------------------------------------


def measure(server: sup.ServerProcess, clients: int, args: argparse.Namespace) -> dict[str, Any]:
    procs = min(args.max_processes, max(1, math.ceil(clients / args.per_process)))
    shares = [clients // procs + (i < clients % procs) for i in range(procs)]
    ctx = mp.get_context("fork")
    window = ctx.Array("d", [0.0, 0.0], lock=False)
    ready_q, result_q = ctx.Queue(), ctx.Queue()
    workers = [
        ctx.Process(
            target=client_worker,
            args=(server.port, share, args.buffer, window, ready_q, result_q),
            daemon=True,
        )
        for share in shares
    ]
    ramp_start = time.time()
    results: list[dict[str, Any]] = []
    try:
        for worker in workers:
            worker.start()
        connected = sum(sup.collect(ready_q, workers, 300))
        ramp_s = time.time() - ramp_start
        start = time.time() + args.settle
        window[0], window[1] = start, start + args.duration
        time.sleep(max(0.0, start - time.time()))
        cpu0 = sup.cpu_seconds(server.pid)
        time.sleep(max(0.0, window[1] - time.time()))
        cpu1 = sup.cpu_seconds(server.pid)
        memory = sup.memory_kb(server.pid)
        results = sup.collect(result_q, workers, 120)
    finally:
        sup.stop_workers(workers, 10 if results else 0)  # on an error, at once
    frames = [f for r in results for f in r["frames"]]
    lags = sorted(lag for r in results for lag in r["lags"])
    per_client = [f / args.duration for f in frames]
    return {
        "server": server.name,
        "clients": clients,
        "client_processes": procs,
        "connected": connected,
        "failed": sum(r["failed"] for r in results),
        "ramp_s": round(ramp_s, 1),
        "ticks_per_client_min": min(per_client, default=0.0),
        "ticks_per_client_median": statistics.median(per_client) if per_client else 0.0,
        "frames_per_s": sum(frames) / args.duration,
        "lag_p50_ms": 1000 * sup.percentile(lags, 50),
        "lag_p99_ms": 1000 * sup.percentile(lags, 99),
        "lag_max_ms": 1000 * lags[-1] if lags else float("nan"),
        "missing_frames": sum(r["gaps"] for r in results),
        "skips": sum(r["skips"] for r in results),
        "disconnects": sum(r["closed"] for r in results),
        "server_cpu_pct": 100 * (cpu1 - cpu0) / args.duration,
        "client_cpu_pct": 100 * sum(r["cpu_s"] for r in results) / args.duration,
        "server_rss_mb": memory["VmRSS"] / 1024,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    sup.raise_nofile(20000)
    recording = sup.resolve_recording(args)
    runs = []
    for clients in args.clients:
        for kind in args.servers:
            server = (
                sup.start_eeict(recording, command=args.server_cmd)
                if kind == "eeict"
                else start_raw(recording, args.buffer)
            )
            try:
                print(f"{kind}: {clients} clients ...", file=sys.stderr, flush=True)
                runs.append(measure(server, clients, args))
            finally:
                server.stop()
    return {
        "benchmark": "fanout",
        "recording": str(recording),
        "duration_s": args.duration,
        "buffer": args.buffer,
        "runs": runs,
        "rows": table_rows(runs),
    }


def table_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    by = {(r["server"], r["clients"]): r for r in runs}
    for clients in sorted({r["clients"] for r in runs}):
        ours, raw = by.get(("eeict", clients)), by.get(("raw", clients))
        final = clients == max(r["clients"] for r in runs) and clients >= 2000
        for r in (ours, raw):
            if r is None:
                continue
            name = f"{clients} subs, {'eeict' if r is ours else 'raw broadcast'}"
            complete = r["missing_frames"] == 0 and r["skips"] == 0 and r["disconnects"] == 0
            delivered = r["connected"] == clients and r["ticks_per_client_min"] >= 63 and complete
            rows.append(row_for(f"{name}: ticks/s per client min / median", r, delivered, final))
            rows.append(
                sup.row(
                    f"{name}: lag p50 / p99 (ms)", f"{r['lag_p50_ms']:.1f} / {r['lag_p99_ms']:.1f}",
                    "ms", "p99 <= 100" if final and r is ours else "",
                    r["lag_p99_ms"] <= 100 if final and r is ours else None,
                )
            )  # fmt: skip
            rows.append(
                sup.row(
                    f"{name}: server CPU / RSS",
                    f"{r['server_cpu_pct']:.0f}% / {r['server_rss_mb']:.0f} MB", "", "",
                )
            )  # fmt: skip
        if ours and raw:
            ratio = 100 * ours["frames_per_s"] / raw["frames_per_s"] if raw["frames_per_s"] else 0
            rows.append(
                sup.row(
                    f"{clients} subs: eeict frames/s as % of raw", round(ratio, 1), "%",
                    ">= 80" if final else "", ratio >= 80 if final else None,
                )
            )  # fmt: skip
            # At a fixed 64 tick/s both deliver everything until saturated; the CPU each needs
            # per delivered frame says how far from saturation (and from the ceiling) we are.
            efficiency = 100 * _per_cpu(ours) / _per_cpu(raw) if _per_cpu(raw) else 0
            rows.append(
                sup.row(
                    f"{clients} subs: eeict frames per server CPU-second as % of raw",
                    round(efficiency, 1), "%", ">= 80" if final else "",
                    efficiency >= 80 if final else None,
                )
            )  # fmt: skip
    return rows


def _per_cpu(r: dict[str, Any]) -> float:
    return r["frames_per_s"] / r["server_cpu_pct"] if r["server_cpu_pct"] else 0.0


def row_for(metric: str, r: dict[str, Any], delivered: bool, final: bool) -> dict[str, Any]:
    value = f"{r['ticks_per_client_min']:.1f} / {r['ticks_per_client_median']:.1f}"
    lost = r["missing_frames"] + r["skips"] + r["disconnects"] + (r["clients"] - r["connected"])
    if lost:
        value += f" (missing {r['missing_frames']}, skips {r['skips']}, closed {r['disconnects']})"
    is_ours = r["server"] == "eeict"
    return sup.row(
        metric, value, "ticks/s", "all 64" if final and is_ours else "",
        delivered if final and is_ours else None,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.raw_server is not None:
        import uvloop

        uvloop.run(raw_server(args.recording, args.raw_server, args.buffer))
        return 0
    sup.exit_on_sigterm()
    result = run(args)
    sup.print_table(
        f"live fan-out, {args.duration:.0f} s window, buffer {args.buffer} frames", result["rows"]
    )
    sup.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
