#!/usr/bin/env python3
"""Viewers per machine: eeict with compressed and plain bursts against the raw write ceiling.

One command, one run, one table: ``eeict serve`` with N subscribers of its 64 tick/s stream
asking for deflate bursts, the same server with plain frames at M subscribers, and the raw
broadcaster of bench/bench_loadtest.py (handshake, hello, then the same compressed ``ticks``
frame written to every socket every 8 frames: the floor of any server) at N subscribers. The
subscribers are client_examples/loadtest.py processes (picows, envelope only, never inflating),
on the same two cores as the server. Server CPU comes from /proc over the steady part of each
load test (after the ramp), and frames per server CPU-second counts every tick to every connected
client, which is what was delivered when the table says nothing was lost. A smaller run per
recording in --demos gives the bytes per subscriber-second with and without compression.

    python bench/bench_viewers.py                       # 10,000 deflate, 5,000 plain, raw
    python bench/bench_viewers.py -n 2000 --plain 1000 --duration 20 --demos /tmp/recs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _support as sup

ROOT = Path(__file__).resolve().parents[1]
LOADTEST = ROOT / "client_examples" / "loadtest.py"
BROADCASTER = Path(__file__).resolve().parent / "bench_loadtest.py"
RATE = 64.0  # the stream's ticks per second
SETTLE_S = 3.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--clients", type=int, default=10000, help="deflate subscribers")
    parser.add_argument("--plain", type=int, default=5000, help="plain-frame subscribers")
    parser.add_argument("--duration", type=float, default=50.0, help="load test seconds")
    parser.add_argument("--ramp", type=float, default=500.0, help="connections per second")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--burst", type=int, default=8, help="frames per live message (eeict --burst, raw alike)"
    )
    parser.add_argument(
        "--demos", type=Path,
        help="folder of processed recordings: bytes per subscriber-second on each (100 clients)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the results here")
    sup.add_recording_args(parser)
    return parser.parse_args(argv)


def loadtest(port: int, clients: int, encoding: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        report = Path(out.name)
    command = [sys.executable, str(LOADTEST), "--url", f"ws://127.0.0.1:{port}"]
    command += ["--stream", sup.STREAM_ID, "-n", str(clients), "--ramp", str(args.ramp)]
    command += ["--duration", str(args.duration), "--encoding", encoding, "--json", str(report)]
    command += ["--processes", str(min(args.processes, max(1, clients // 500)))]
    try:
        subprocess.run(command, check=False, stdout=subprocess.DEVNULL, timeout=args.duration + 120)
        return json.loads(report.read_text())
    finally:
        report.unlink(missing_ok=True)


def measure(
    name: str, server_pid: int, port: int, clients: int, encoding: str, args: argparse.Namespace
) -> dict[str, Any]:
    print(f"{name}: {clients} subscribers, {encoding} ...", file=sys.stderr, flush=True)
    load0 = os.getloadavg()[0]
    steady: dict[str, float] = {}
    window = threading.Thread(target=steady_cpu, args=(server_pid, clients, args, steady))
    window.start()
    summary = loadtest(port, clients, encoding, args)
    window.join()
    cpu, wall = steady["cpu_s"], steady["wall_s"]
    delivered = summary["connected"] * RATE * wall  # every tick, when nothing was lost
    return {
        "server": name,
        "encoding": encoding,
        "clients": clients,
        "connected": summary["connected"],
        "frames": summary["frames"],
        "frames_per_s_per_client": summary["frames_per_s_per_client"],
        "bytes_per_client_s": summary["bytes_per_client_s"],
        "lag_ms": summary["lag_ms"],
        "lost": summary["gap_frames"] + summary["skipped_frames"] + summary["failed_clients"],
        "gap_frames": summary["gap_frames"],
        "skips": summary["skips"],
        "failed_clients": summary["failed_clients"],
        "errors": summary["errors"],
        "disconnects": summary["disconnects"],
        "steady_window_s": round(wall, 1),
        "server_cpu_s": round(cpu, 2),
        "server_core_share": round(cpu / wall, 3),
        "frames_per_server_cpu_s": round(delivered / cpu) if cpu else 0,
        "loadtest_cpu_s": summary["loadtest_cpu_s"],
        "server_rss_mb": round(steady["rss_kb"] / 1024),
        "load_avg_1m_before": round(load0, 2),
    }


def steady_cpu(pid: int, clients: int, args: argparse.Namespace, out: dict[str, float]) -> None:
    """Server CPU over the steady part of a load test: from SETTLE_S after the ramp ends to
    SETTLE_S before the clients stop (the handshakes are not what this measures)."""
    start = time.monotonic() + clients / args.ramp + SETTLE_S
    stop = time.monotonic() + args.duration - SETTLE_S
    time.sleep(max(0.0, start - time.monotonic()))
    cpu0, wall0 = sup.cpu_seconds(pid), time.monotonic()
    time.sleep(max(0.0, stop - time.monotonic()))
    out["cpu_s"], out["wall_s"] = sup.cpu_seconds(pid) - cpu0, time.monotonic() - wall0
    out["rss_kb"] = sup.memory_kb(pid)["VmRSS"]


def with_eeict(recording: Path, clients: int, encoding: str, args) -> dict[str, Any]:
    server = sup.start_eeict(recording, ["--burst", str(args.burst)])
    try:
        return measure("eeict", server.pid, server.port, clients, encoding, args)
    finally:
        server.stop()


def with_raw(recording: Path, clients: int, args) -> dict[str, Any]:
    port = sup.free_port()
    command = [sys.executable, str(BROADCASTER), "--serve", str(port), "--recording"]
    command += [str(recording), "--encoding", "deflate", "--burst", str(args.burst)]
    raw = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 30
        while not _listening(port):
            if time.monotonic() > deadline or raw.poll() is not None:
                raise RuntimeError("the raw broadcaster did not start")
            time.sleep(0.1)
        return measure("raw", raw.pid, port, clients, "deflate", args)
    finally:
        raw.terminate()
        raw.wait(10)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    sup.raise_nofile(args.clients + 4096)
    recording = sup.resolve_recording(args)
    runs = [
        with_eeict(recording, args.clients, "deflate", args),
        with_eeict(recording, args.plain, "none", args),
        with_raw(recording, args.clients, args),
    ]
    demos = []
    for path in sorted(args.demos.glob("*.eeict")) if args.demos else ():
        small = argparse.Namespace(**{**vars(args), "duration": min(args.duration, 10.0)})
        pair = [with_eeict(path, 100, encoding, small) for encoding in ("deflate", "none")]
        demos.append({"recording": path.stem, "runs": pair})
    return {
        "benchmark": "viewers",
        "recording": str(recording),
        "duration_s": args.duration,
        "burst": args.burst,
        "runs": runs,
        "demos": demos,
        "rows": table_rows(runs, demos),
    }


def table_rows(runs: list[dict[str, Any]], demos: list[dict[str, Any]]) -> list[dict]:
    deflate, plain, raw = runs
    rows = []
    for r in runs:
        name = f"{r['server']} {r['encoding']}, {r['clients']} subs"
        complete = r["connected"] == r["clients"] and r["lost"] == 0
        goal = r["server"] == "eeict"
        rows.append(
            sup.row(
                f"{name}: ticks/s per client, lost",
                f"{r['frames_per_s_per_client']} / {r['lost']}",
                "", "64 / 0" if goal else "", complete if goal else None,
            )
        )  # fmt: skip
        lag = r["lag_ms"]
        rows.append(
            sup.row(
                f"{name}: lag p50 / p99 (ms)", f"{lag['p50']} / {lag['p99']}", "ms",
                "p99 <= 100" if goal else "", lag["p99"] <= 100 if goal else None,
            )
        )  # fmt: skip
        rows.append(
            sup.row(
                f"{name}: server CPU (core share) / RSS; load generator CPU-s",
                f"{100 * r['server_core_share']:.0f}% / {r['server_rss_mb']} MB; "
                f"{r['loadtest_cpu_s']}", "",
            )
        )  # fmt: skip
        rows.append(
            sup.row(f"{name}: frames per server CPU-second", r["frames_per_server_cpu_s"], "")
        )
    ceiling = raw["frames_per_server_cpu_s"]
    ratio = 100 * deflate["frames_per_server_cpu_s"] / ceiling if ceiling else 0.0
    rows.append(
        sup.row("eeict deflate frames per server CPU-second as % of raw", round(ratio, 1), "%",
                ">= 90", ratio >= 90)
    )  # fmt: skip
    rows.append(bytes_row("generated match", deflate, plain))
    for demo in demos:
        rows.append(bytes_row(demo["recording"], *demo["runs"]))
    return rows


def bytes_row(name: str, deflate: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    share = deflate["bytes_per_client_s"] / plain["bytes_per_client_s"]
    value = f"{deflate['bytes_per_client_s']} / {plain['bytes_per_client_s']} = 1/{1 / share:.1f}"
    return sup.row(f"{name}: bytes per subscriber-second, deflate / plain", value, "",
                   "<= 1/10", share <= 0.1)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sup.exit_on_sigterm()
    result = run(args)
    title = f"viewers, {args.duration:.0f} s load tests, bursts of {args.burst} frames"
    sup.print_table(title, result["rows"])
    sup.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
