#!/usr/bin/env python3
"""Bytes per subscriber-second of a live stream: compressed bursts against today's plain ones.

Builds every aligned live burst of each recording exactly as a LiveStream does
(``LiveStream.burst_bytes``: the ``ticks`` message, plain or deflate at the live level) and adds
each message's WebSocket frame header: the bytes one subscriber receives for the whole
recording, divided by its play time at its tick rate. Deterministic (no sockets, no timing);
the hello and the join message are left out, they are paid once per connection, not per second.

    python bench/bench_bytes.py --demos /tmp/recs          # the generated match + each demo
    python bench/bench_bytes.py --bursts 8 16 --json bytes.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import _support as sup
from tqdm import tqdm

from processing.recording import Recording
from server.metrics import Metrics
from server.protocol import frame_header
from server.streams.encoding import DEFLATE, PLAIN, ConnectionOptions
from server.streams.live import LiveStream
from server.streams.timeline import Timeline

DEFLATED = ConnectionOptions(encoding=DEFLATE)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demos", type=Path, help="a folder of processed recordings (.eeict)")
    parser.add_argument("--bursts", type=int, nargs="+", default=[8, 16], help="frames per burst")
    parser.add_argument("--json", type=Path, help="write the results here")
    sup.add_recording_args(parser)
    return parser.parse_args(argv)


def stream_of(path: Path, burst: int) -> tuple[LiveStream, int, float]:
    recording = Recording.open(path)
    timeline = Timeline(recording, epoch=0.0)
    stream = LiveStream("bench", timeline, Metrics(), burst=burst)
    return stream, recording.frame_count, float(recording.meta["tickrate"])


def measure(path: Path, burst: int) -> dict[str, Any]:
    stream, count, rate = stream_of(path, burst)
    totals = {}
    for name, options in (("plain", PLAIN), ("deflate", DEFLATED)):
        total = 0
        for start in range(0, count - count % burst, burst):
            data, _ = stream.burst_bytes(start, start + burst, options)
            total += len(frame_header(len(data))) + len(data)
        totals[name] = total
    seconds = (count - count % burst) / rate
    plain, deflate = totals["plain"] / seconds, totals["deflate"] / seconds
    return {
        "recording": path.stem,
        "burst": burst,
        "plain_bytes_per_s": round(plain),
        "deflate_bytes_per_s": round(deflate),
        "share": deflate / plain,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    paths = [sup.resolve_recording(args)]
    paths += sorted(args.demos.glob("*.eeict")) if args.demos else []
    jobs = [(path, burst) for path in paths for burst in args.bursts]
    results = [measure(path, burst) for path, burst in tqdm(jobs, desc="recordings", unit="run")]
    rows = [
        sup.row(
            f"{r['recording']}, bursts of {r['burst']}: bytes/s deflate / plain",
            f"{r['deflate_bytes_per_s']:,} / {r['plain_bytes_per_s']:,} = 1/{1 / r['share']:.1f}",
            "", "<= 1/10", r["share"] <= 0.1,
        )
        for r in results
    ]  # fmt: skip
    return {"benchmark": "bytes", "results": results, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    sup.print_table("bytes per subscriber-second (live bursts)", result["rows"])
    sup.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
