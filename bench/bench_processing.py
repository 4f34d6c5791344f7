"""Processing benchmark: demo -> recording time against demoparser2's own parse, sizes, reads.

Each measurement runs in a fresh subprocess so its peak RSS (ru_maxrss) is its own. ``ratio``
is wall time, ``cpu`` the same ratio in CPU seconds (steadier when other jobs share the cores).
Run by hand: `.venv/bin/python bench/bench_processing.py [--json FILE] [--skip-synthetic]`.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ROOT.parent / "shared" / "demos"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """CPU seconds of this process, all threads: steadier than wall time on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_parse(demo: Path) -> dict:
    """demoparser2 alone: the same header, events, grenade and props queries read_demo makes,
    on the same input (the demo with its string tables restored; restoring them is part of
    processing, not of this baseline)."""
    from demoparser2 import DemoParser

    from processing.demo.parse import EVENT_PLAYER_PROPS, EVENTS, GRENADE_TEAM, TICK_PROPS
    from processing.demo.stringtables import restore_string_tables

    with tempfile.TemporaryDirectory() as tmp:
        source = restore_string_tables(demo, Path(tmp))
        start, cpu = time.perf_counter(), _cpu_s()
        parser = DemoParser(str(source))
        parser.parse_header()
        parser.parse_events(EVENTS, player=EVENT_PLAYER_PROPS)
        parser.parse_grenades(extra=[GRENADE_TEAM])
        parser.parse_ticks(TICK_PROPS)
        seconds, cpu = time.perf_counter() - start, _cpu_s() - cpu
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_rss_mb": _peak_mb(),
    }


def measure_process(source: str, out: Path) -> dict:
    """Full processing (read_demo or the generator, then write_recording)."""
    from processing.demo import read_demo
    from processing.recording import write_recording

    if source.startswith("synthetic"):
        from processing.synthetic import generate_match

        start, cpu = time.perf_counter(), _cpu_s()
        match = generate_match(seed=1, rounds=24)
    else:
        start, cpu = time.perf_counter(), _cpu_s()
        match = read_demo(Path(source))
    write_recording(out, match.info, match.frames)
    return {
        "seconds": time.perf_counter() - start,
        "cpu_s": _cpu_s() - cpu,
        "peak_rss_mb": _peak_mb(),
    }


def measure_row_bytes(demo: Path) -> dict:
    """Bytes per player row that processing keeps for the whole demo (numpy columns and the
    alive-player table), apart from demoparser2's answer for one window."""
    from processing.demo.assemble import _Builder
    from processing.demo.parse import parse_demo

    builder = _Builder(parse_demo(demo))
    rows = len(builder.players.sid)
    kept = sum(v.nbytes for v in builder.players.cols.values())
    kept += sum(v.nbytes for v in builder.table.columns)
    kept += builder.players.sid.nbytes + builder.players.name.nbytes
    kept += builder.players.row_frame.nbytes
    lists = {id(v): sys.getsizeof(v) for v in builder.players.cols["items"].tolist()}
    kept += sum(lists.values())  # item lists are shared between rows where they are equal
    return {"rows": rows, "bytes_per_row": kept / rows, "peak_rss_mb": _peak_mb()}


def measure_sizes_and_reads(recording: Path, ranges: int) -> dict:
    """Recording size vs one-JSON-line-per-frame, and cold random 1 s range reads."""
    from processing.recording import Recording

    rec = Recording.open(recording)
    json_bytes = player_ticks = 0
    step = 4096
    for start in range(0, rec.frame_count, step):
        for frame in rec.frames(start, start + step):
            json_bytes += len(json.dumps(frame, ensure_ascii=False).encode()) + 1
            player_ticks += len(frame["players"])
    per_second = max(1, round(rec.meta["tickrate"]))
    rng = random.Random(1)
    times = []
    for _ in range(ranges):
        a = rng.randrange(max(1, rec.frame_count - per_second))
        rec._cache.clear()  # cold chunk cache: every read decompresses
        t = time.perf_counter()
        rec.frames_bytes(a, a + per_second)
        times.append(time.perf_counter() - t)
    return {
        "recording_bytes": recording.stat().st_size,
        "json_bytes": json_bytes,
        "frames": rec.frame_count,
        "player_ticks": player_ticks,
        "range_read_median_ms": statistics.median(times) * 1000,
        "range_read_p99_ms": sorted(times)[int(0.99 * (len(times) - 1))] * 1000,
        "peak_rss_mb": _peak_mb(),
    }


def _child(kind: str, args: list[str]) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON result."""
    cmd = [sys.executable, __file__, "--child", kind, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {args} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_source(name: str, source: str, repeat: int, ranges: int, tmp: Path) -> dict:
    out = tmp / f"{name}.eeict"
    row: dict = {"source": name}
    if not source.startswith("synthetic"):
        parse = [_child("parse", [source]) for _ in range(repeat)]
        row["parse_s"] = min(p["seconds"] for p in parse)
        row["parse_cpu_s"] = min(p["cpu_s"] for p in parse)
        row["parse_peak_rss_mb"] = max(p["peak_rss_mb"] for p in parse)
    process = [_child("process", [source, str(out)]) for _ in range(repeat)]
    row["process_s"] = min(p["seconds"] for p in process)
    row["process_cpu_s"] = min(p["cpu_s"] for p in process)
    row["process_peak_rss_mb"] = max(p["peak_rss_mb"] for p in process)
    if "parse_s" in row:
        row["ratio"] = row["process_s"] / row["parse_s"]
        row["cpu_ratio"] = row["process_cpu_s"] / row["parse_cpu_s"]
    reads = _child("reads", [str(out), str(ranges)])
    row.update({k: v for k, v in reads.items() if k != "peak_rss_mb"})
    row["reader_peak_rss_mb"] = reads["peak_rss_mb"]
    row["size_ratio"] = reads["recording_bytes"] / reads["json_bytes"]
    return row


def _print_table(rows: list[dict]) -> None:
    head = (
        f"{'source':18} {'frames':>7} {'parse s':>8} {'process s':>9} {'ratio':>6} {'cpu':>5} "
        f"{'rec MB':>8} {'json MB':>8} {'size':>6} {'1s read ms':>10} {'peak MB':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        parse = f"{r['parse_s']:8.3f}" if "parse_s" in r else f"{'-':>8}"
        ratio = f"{r['ratio']:6.2f}" if "ratio" in r else f"{'-':>6}"
        ratio += f" {r['cpu_ratio']:5.2f}" if "cpu_ratio" in r else f" {'-':>5}"
        print(
            f"{r['source']:18} {r['frames']:7d} {parse} {r['process_s']:9.3f} {ratio} "
            f"{r['recording_bytes'] / 1e6:8.2f} {r['json_bytes'] / 1e6:8.2f} "
            f"{r['size_ratio']:6.3f} {r['range_read_median_ms']:10.3f} "
            f"{r['process_peak_rss_mb']:8.0f}"
        )


FULL_MATCH_PLAYER_TICKS = 180_000 * 10  # a competitive match: ~180,000 ticks, 10 players
JOB_LIMIT_MB = 2048  # the processing Job's memory limit


def full_match_estimate(rows: list[dict], row_bytes: float | None) -> dict | None:
    """Peak RSS of a full demo's processing, extrapolated from the demos' per-player-tick cost.

    A least-squares line through (player-ticks, peak RSS) of the demos: its intercept is the
    interpreter, libraries and demoparser2's own state, its slope what each player-tick costs
    at peak when the demo is read in one pass. Read in tick windows (parse.WINDOW_TICKS), only
    one window's rows are at that cost; every row is then kept compact (``row_bytes``).
    """
    demos = [r for r in rows if "parse_s" in r]
    if len(demos) < 2:
        return None
    xs = [r["player_ticks"] for r in demos]
    ys = [r["process_peak_rss_mb"] for r in demos]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    base = my - slope * mx
    from processing.demo.parse import WINDOW_TICKS

    window_rows = min(FULL_MATCH_PLAYER_TICKS, WINDOW_TICKS * 10)
    windowed = None
    if row_bytes is not None:
        windowed = base + slope * window_rows + row_bytes * FULL_MATCH_PLAYER_TICKS / 2**20
    return {
        "base_mb": base,
        "kb_per_player_tick": slope * 1024,
        "one_pass_peak_mb": base + slope * FULL_MATCH_PLAYER_TICKS,
        "kept_bytes_per_row": row_bytes,
        "windowed_peak_mb": windowed,
        "job_limit_mb": JOB_LIMIT_MB,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demos", type=Path, default=DEMOS, help="folder of .dem files")
    ap.add_argument("--json", type=Path, help="also write the results to this JSON file")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing; the best is kept")
    ap.add_argument("--ranges", type=int, default=500, help="random 1 s range reads")
    ap.add_argument("--skip-synthetic", action="store_true", help="demos only")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "parse":
            result = measure_parse(Path(rest[0]))
        elif kind == "process":
            result = measure_process(rest[0], Path(rest[1]))
        elif kind == "rows":
            result = measure_row_bytes(Path(rest[0]))
        else:
            result = measure_sizes_and_reads(Path(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return 0

    sources = [(d.stem, str(d)) for d in sorted(args.demos.glob("*.dem"))]
    if not args.skip_synthetic:
        try:
            from processing.synthetic import generate_match  # noqa: F401
        except ImportError:
            print("processing.synthetic.generate_match missing: use --skip-synthetic")
            return 2
        sources.append(("synthetic-24r", "synthetic"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, source in sources:
            repeat = 1 if source == "synthetic" else args.repeat
            rows.append(bench_source(name, source, repeat, args.ranges, Path(tmp)))
            print(f"  done {name}", file=sys.stderr)
    _print_table(rows)
    demos = sorted(args.demos.glob("*.dem"))
    biggest = max(demos, key=lambda d: d.stat().st_size) if demos else None
    row_bytes = _child("rows", [str(biggest)])["bytes_per_row"] if biggest else None
    estimate = full_match_estimate(rows, row_bytes)
    if estimate:
        print(
            f"full match (180,000 ticks x 10 players) from the demos: "
            f"{estimate['base_mb']:.0f} MB + {estimate['kb_per_player_tick']:.2f} KB/player-tick"
            f" = {estimate['one_pass_peak_mb']:.0f} MB in one pass; in tick windows "
            f"({estimate['kept_bytes_per_row']:.0f} B kept per row): "
            f"{estimate['windowed_peak_mb']:.0f} MB (Job limit {JOB_LIMIT_MB} MB)"
        )
    if args.json:
        args.json.write_text(json.dumps({"records": rows, "full_match": estimate}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
