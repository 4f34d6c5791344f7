"""Idle connections: server memory per open WebSocket that is connected but not subscribed.

``eeict serve`` runs in its own process; client processes open ``--connections`` WebSockets to
a live stream path, read the ``hello`` and then only answer pings. Server RSS is read from
/proc before the first connection and once all are open; the difference divided by the number
of connections is the cost of one idle connection. Client process i connects from loopback
address 127.0.0.(2 + i), so each has its own ephemeral ports.

Every connection is a file descriptor in the server: the benchmark raises RLIMIT_NOFILE to
--connections plus a margin and stops with what to change when the hard limit is lower.

    python bench/bench_idle.py --connections 50000 --processes 4
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import _support as sup

PATH = f"/live/{sup.STREAM_ID}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument(
        "--processes", type=int, default=4, help="client processes (one loopback address each)"
    )
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before reading RSS")
    parser.add_argument("--json", type=Path, help="write the results here")
    sup.add_recording_args(parser)
    return parser.parse_args(argv)


def client_worker(port: int, count: int, host: str, ready_q, done) -> None:
    sup.die_with_parent(mp.parent_process().pid)  # or it would wait for ``done`` forever
    sup.raise_nofile(count + 1024)
    sup.run_async(_clients(port, count, host, ready_q, done))


async def _clients(port: int, count: int, host: str, ready_q, done) -> None:
    gate = asyncio.Semaphore(64)
    clients = []
    failed = 0

    async def connect() -> None:
        nonlocal failed
        hello = asyncio.get_running_loop().create_future()

        def on_message(client, message: dict[str, Any], size: int, now: float) -> None:
            if message.get("type") == "hello" and not hello.done():
                hello.set_result(None)

        async with gate:
            try:
                client = await sup.open_lean(port, PATH, on_message, host)
                await asyncio.wait_for(hello, 30)
                clients.append(client)
            except (OSError, TimeoutError, ConnectionError):
                failed += 1

    await asyncio.gather(*(connect() for _ in range(count)))
    ready_q.put((len(clients), failed))
    while not done.is_set():  # noqa: ASYNC110 - a multiprocessing Event, nothing to await
        await asyncio.sleep(0.1)
    ready_q.put(sum(1 for c in clients if c.lost))
    for client in clients:
        client.transport.abort()


def run(args: argparse.Namespace) -> dict[str, Any]:
    wanted = args.connections + 1024
    limit = sup.raise_nofile(wanted)  # the server process inherits it
    if limit < wanted:
        raise SystemExit(
            f"open files are limited to {limit} (hard limit), {wanted} needed: raise it "
            "(ulimit -Hn as root, LimitNOFILE= for systemd, --ulimit nofile= for docker)"
        )
    recording = sup.resolve_recording(args)
    server = sup.start_eeict(recording, ["--max-connections", str(args.connections + 100)])
    ctx = mp.get_context("fork")
    ready_q, done = ctx.Queue(), ctx.Event()
    shares = [
        args.connections // args.processes + (i < args.connections % args.processes)
        for i in range(args.processes)
    ]
    workers = [
        ctx.Process(
            target=client_worker,
            args=(server.port, n, f"127.0.0.{2 + i}", ready_q, done),
            daemon=True,
        )
        for i, n in enumerate(shares)
    ]
    dropped = None
    try:
        time.sleep(args.settle)
        before = sup.memory_kb(server.pid)
        started = time.time()
        for worker in workers:
            worker.start()
        counts = sup.collect(ready_q, workers, 300)
        open_s = time.time() - started
        time.sleep(args.settle)
        after = sup.memory_kb(server.pid)
        metrics = _metric(server, "eeict_open_connections")
        done.set()
        dropped = sum(sup.collect(ready_q, workers, 60))
    finally:
        done.set()
        sup.stop_workers(workers, 10 if dropped is not None else 0)  # on an error, at once
        server.stop()
    connected = sum(c for c, _ in counts)
    per_conn = (after["VmRSS"] - before["VmRSS"]) / connected if connected else float("nan")
    anon = (after["RssAnon"] - before["RssAnon"]) / connected if connected else float("nan")
    result = {
        "benchmark": "idle",
        "recording": str(recording),
        "connections": args.connections,
        "connected": connected,
        "failed": sum(f for _, f in counts),
        "dropped_before_end": dropped,
        "server_open_connections": metrics,
        "open_s": round(open_s, 1),
        "rss_before_mb": before["VmRSS"] / 1024,
        "rss_after_mb": after["VmRSS"] / 1024,
        "kb_per_connection": per_conn,
        "anon_kb_per_connection": anon,
    }
    result["rows"] = [
        sup.row("idle connections open (of requested)", f"{connected:,} / {args.connections:,}",
                "", "all", connected == args.connections),
        sup.row("time to open them all", result["open_s"], "s"),
        sup.row("server RSS before / after",
                f"{result['rss_before_mb']:.0f} / {result['rss_after_mb']:.0f}", "MB"),
        sup.row("server RSS per idle connection", round(per_conn, 1), "KB", "<= 16",
                per_conn <= 16),
    ]  # fmt: skip
    return result


def _metric(server: sup.ServerProcess, name: str) -> float | None:
    import urllib.request

    with urllib.request.urlopen(server.url("/metrics"), timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sup.exit_on_sigterm()
    result = run(args)
    sup.print_table(f"idle connections ({args.connections:,})", result["rows"])
    sup.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
