"""Range reads straight from a recording, in this process: what a replay or fetch pays per read.

Three measurements on one recording (default: the generated match):

* cold: random 1 s ranges with the chunk cache emptied first, so each read loads and
  decompresses one or two chunks;
* warm: the same ranges again with the cache kept (as a session playing on reads them);
* scan: every frame in 256-frame reads, front to back (what a full-match fetch reads).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _support as sup

SCAN_CHUNK = 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranges", type=int, default=2000, help="random 1 s ranges to read")
    parser.add_argument("--scans", type=int, default=3, help="full front-to-back reads")
    parser.add_argument("--json", type=Path, help="write the results here")
    sup.add_recording_args(parser)
    return parser.parse_args(argv)


def _timed_ranges(rec, starts: list[int], per_second: int, cold: bool) -> list[float]:
    times = []
    for start in starts:
        if cold:
            rec._cache.clear()
        began = time.perf_counter()
        rec.frames_bytes(start, start + per_second)
        times.append(time.perf_counter() - began)
    return times


def _scan_seconds(rec) -> float:
    began = time.perf_counter()
    for start in range(0, rec.frame_count, SCAN_CHUNK):
        rec.frames_bytes(start, start + SCAN_CHUNK)
    return time.perf_counter() - began


def run(args: argparse.Namespace) -> dict[str, Any]:
    from processing.recording import Recording

    path = sup.resolve_recording(args)
    began = time.perf_counter()
    rec = Recording.open(path)
    open_ms = 1000 * (time.perf_counter() - began)
    per_second = max(1, round(rec.meta["tickrate"]))
    rng = random.Random(1)
    starts = [rng.randrange(max(1, rec.frame_count - per_second)) for _ in range(args.ranges)]
    cold = [1000 * t for t in _timed_ranges(rec, starts, per_second, cold=True)]
    warm = [1000 * t for t in _timed_ranges(rec, sorted(starts), per_second, cold=False)]
    scans = [_scan_seconds(rec) for _ in range(args.scans)]
    scan_s = statistics.median(scans)
    result = {
        "benchmark": "reads",
        "recording": str(path),
        "frames": rec.frame_count,
        "open_ms": open_ms,
        "cold_p50_ms": statistics.median(cold),
        "cold_p99_ms": sup.percentile(cold, 99),
        "warm_p50_ms": statistics.median(warm),
        "scan_s": scans,
    }
    result["rows"] = [
        sup.row("open (header, metadata, index)", round(open_ms, 2), "ms"),
        sup.row(f"cold 1 s range read p50 / p99 ({args.ranges} reads)",
                f"{result['cold_p50_ms']:.3f} / {result['cold_p99_ms']:.3f}", "ms"),
        sup.row("warm 1 s range read p50 (sorted starts, cache kept)",
                round(result["warm_p50_ms"], 4), "ms"),
        sup.row(f"all {rec.frame_count:,} frames in {SCAN_CHUNK}-frame reads "
                f"(median of {args.scans})",
                f"{scan_s:.2f} s, {rec.frame_count / scan_s:,.0f} frames/s", ""),
    ]  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    sup.print_table("range reads from a recording", result["rows"])
    sup.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
