"""GSI ingest benchmark: capture reading, payload -> state per post, frames per second of CPU.

The whole shared capture is read once, then fed to a Framer on a simulated clock at the
capture's pace (each second's posts spread evenly), taking frames after every post as the
server would. Run by hand: `.venv/bin/python bench/bench_gsi.py [--limit N] [--json FILE]`.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CAPTURE = ROOT.parent / "shared" / "gsi" / "full_game_gsi.zip"


def main(argv: list[str] | None = None) -> int:
    from processing.gsi.capture import read_capture
    from processing.gsi.framer import Framer
    from processing.gsi.replay import paced
    from processing.gsi.state import read_state

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--capture", type=Path, default=CAPTURE)
    parser.add_argument("--limit", type=int, help="only the first N payloads")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    payloads = list(read_capture(args.capture, args.limit))
    read_s = time.perf_counter() - start

    start = time.perf_counter()
    for payload in payloads:
        read_state(payload)
    state_s = time.perf_counter() - start

    framer = Framer()
    frames = 0
    schedule = list(paced(payloads))
    first = schedule[0][0]
    start = time.perf_counter()
    for at, payload in schedule:
        framer.add(payload, at - first)
        frames += len(framer.frames(at - first))
    framer_s = time.perf_counter() - start
    result = {
        "payloads": len(payloads),
        "read_ms_per_payload": 1000 * read_s / len(payloads),
        "read_state_ms_per_post": 1000 * state_s / len(payloads),
        "framer_ms_per_post": 1000 * framer_s / len(payloads),
        "frames": frames,
        "frames_per_cpu_second": frames / framer_s,
        "realtime_factor": (schedule[-1][0] - first) / framer_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    for key, value in result.items():
        print(f"{key:24} {value:.2f}" if isinstance(value, float) else f"{key:24} {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
