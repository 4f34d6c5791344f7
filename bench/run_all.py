"""Run every benchmark in bench/ and print one markdown table of the results.

Each benchmark runs as its own process with ``--json``; a benchmark that fails is reported in
the table (with the end of its output) and the others still run. One that runs past
``--timeout`` gets SIGTERM (it stops its server and client processes), then SIGKILL after
a grace period.

Options for one benchmark go in its ``--<name>-args`` (e.g. ``--fanout-args="--clients 100"``);
the recording options after ``--`` (``-- --recording x.eeict`` or ``-- --fake-frames N``) go to
every server benchmark (fanout, idle, replay).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _support as sup

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "processing": ("bench_processing.py", "Processing (demo / generated match to recording)"),
    "fanout": ("bench_fanout.py", "Live fan-out (one 64 tick/s stream)"),
    # Replay before idle: right after idle's thousands of sockets close, a full-match fetch
    # measured 62% of raw TCP where alone it measures 80-96%.
    "replay": ("bench_replay.py", "Replay sessions (full generated match)"),
    "idle": ("bench_idle.py", "Idle connections"),
    "ingest": ("bench_ingest.py", "Live matches (GSI capture ingest)"),
}
RECORDING_OPTIONS = {"fanout", "idle", "replay"}  # the ones taking --recording/--fake-frames
GRACE = 40.0  # seconds a timed-out benchmark gets to stop its servers (each takes up to 15 s)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS),
        help="benchmarks to run (default: all; processing only if bench_processing.py exists)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per benchmark")
    for name, (script, _) in BENCHMARKS.items():
        parser.add_argument(
            f"--{name}-args", type=shlex.split, default=[], metavar="ARGS",
            help=f"options for {script} only, one string (see its --help)",
        )  # fmt: skip
    parser.add_argument(
        "extra", nargs="*", metavar="-- RECORDING-OPTIONS",
        help="--recording FILE or --fake-frames N, for every server benchmark",
    )  # fmt: skip
    args = parser.parse_args(argv)
    recording = argparse.ArgumentParser(prog=f"{parser.prog} ... --", add_help=False)
    sup.add_recording_args(recording)
    recording.parse_args(args.extra)  # exits with a clear error on any other option
    return args


def machine() -> str:
    total_kb = int(Path("/proc/meminfo").read_text().split()[1])
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line),
        platform.machine(),
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), {total_kb / 1024**2:.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def run_one(name: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    script, _ = BENCHMARKS[name]
    out = folder / f"{name}.json"
    argv = [sys.executable, str(HERE / script), "--json", str(out), *getattr(args, f"{name}_args")]
    if name in RECORDING_OPTIONS:
        argv += args.extra
    print(f"== {name}: {shlex.join(argv[1:])}", file=sys.stderr, flush=True)
    started = time.monotonic()
    # Its own process group, so that a timeout reaches its client processes too.
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=functools.partial(sup.die_with_parent, os.getpid()),
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=args.timeout)
        failure = None if proc.returncode == 0 else f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        output = stop_group(proc)
        failure = f"timed out after {args.timeout:.0f} s"
    except BaseException:  # Ctrl-C or SIGTERM: the new session does not get them by itself
        stop_group(proc)
        raise
    tail = output[-1500:]
    elapsed = time.monotonic() - started
    if failure is None and out.exists():
        result = json.loads(out.read_text())
        result["elapsed_s"] = round(elapsed, 1)
        return result
    return {"benchmark": name, "error": failure or "no JSON written", "output": tail}


def stop_group(proc: subprocess.Popen) -> str:
    """SIGTERM a benchmark's process group, SIGKILL it after GRACE seconds; its output."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.communicate(timeout=GRACE)[0]
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate()[0]


def rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The result's table rows; for a benchmark without ``rows``, its top-level numbers."""
    if "rows" in result:
        return result["rows"]
    return [
        sup.row(key, value, "")
        for key, value in result.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and key != "elapsed_s"
    ]


def records_table(title: str, records: list[dict[str, Any]]) -> list[str]:
    """A benchmark that reports one record per input gets its own table, one line each."""
    columns = list(dict.fromkeys(key for record in records for key in record))
    lines = ["", f"{title}:", "", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for record in records:
        cells = [sup.format_value(record[c]) if c in record else "" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(results: dict[str, dict[str, Any]]) -> str:
    now = datetime.datetime.now().astimezone().isoformat(timespec="minutes")
    lines = [f"Run {now} on {machine()}.", "", "| benchmark | metric | value | goal | |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip
    extra: list[str] = []
    for name, result in results.items():
        title = BENCHMARKS[name][1]
        if "error" in result:
            lines.append(f"| {title} | **failed**: {result['error']} | | | |")
            continue
        if "records" in result:
            extra += records_table(title, result["records"])
            estimate = result.get("full_match") or {}
            if estimate:
                shown = ", ".join(f"{k} {sup.format_value(v)}" for k, v in estimate.items())
                extra += ["", f"{title}, a full match: {shown}"]
            continue
        for r in rows_of(result):
            verdict = "" if r["ok"] is None else ("ok" if r["ok"] else "**missed**")
            value = f"{sup.format_value(r['value'])} {r['unit']}".strip()
            lines.append(f"| {title} | {r['metric']} | {value} | {r['goal']} | {verdict} |")
    return "\n".join(lines + extra) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sup.exit_on_sigterm()
    names = [
        n for n in args.only if n != "processing" or (HERE / BENCHMARKS["processing"][0]).exists()
    ]
    with tempfile.TemporaryDirectory(prefix="eeict-bench-") as folder:
        results = {name: run_one(name, args, Path(folder)) for name in names}
    for result in results.values():
        if "error" in result:
            print(f"{result['benchmark']} failed:\n{result['output']}", file=sys.stderr)
    sup.write_json(args.json, {"machine": machine(), "results": results})  # kept if a table fails
    table = markdown(results)
    print(table)
    if args.out is not None:
        args.out.write_text(table)
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
