"""``eeict process`` and ``eeict inspect``: demos in, recordings out, metadata shown."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from processing.demo import DemoError, read_demo
from processing.recording import SUFFIX, Recording, RecordingError, shown, write_recording


def process(demos: list[Path], out: Path, force: bool) -> int:
    """Process each demo into ``out``; a bad file is reported and the others still processed."""
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for demo in demos:
        target = out / (demo.stem + SUFFIX)
        if target.exists() and not force:
            print(f"{demo.name}: {target} exists, skipped (use --force to redo)")
            continue
        started = time.perf_counter()
        try:
            match = read_demo(demo)
            with tqdm(
                total=match.frame_count, desc=demo.name, unit="tick", leave=False,
                disable=None, file=sys.stderr,
            ) as bar:  # fmt: skip
                meta = write_recording(target, match.info, match.frames, on_frame=bar.update)
        except (DemoError, OSError, ValueError) as exc:
            failures += 1
            print(f"{shown(demo.name)}: FAILED: {exc}", file=sys.stderr)
            continue
        except Exception as exc:  # a crafted demo meeting a parser bug: fail it, go on
            failures += 1
            print(
                f"{shown(demo.name)}: FAILED, unexpected {type(exc).__name__}: {exc}"
                " (please report it with the demo)",
                file=sys.stderr,
            )
            continue
        elapsed = time.perf_counter() - started
        size = target.stat().st_size
        print(
            f"{demo.name}: {meta['frame_count']} ticks ({meta['first_tick']}..{meta['last_tick']}),"
            f" {len(meta['roster'])} players, {size / 1e6:.2f} MB -> {target} in {elapsed:.1f} s"
        )
    if failures:
        print(f"{failures} of {len(demos)} files failed", file=sys.stderr)
    return 1 if failures else 0


def inspect(path: Path, as_json: bool) -> int:
    try:
        recording = Recording.open(path)
    except RecordingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    meta = dict(recording.meta, file_size=recording.size)
    if as_json:
        print(json.dumps(meta, indent=2))
        return 0
    for key, value in meta.items():
        if key == "roster":
            value = ", ".join(f"{p['name']} ({p['team']})" for p in value)
        elif key == "round_starts":
            value = f"{len(value)} rounds: " + ", ".join(map(str, value))
        print(f"{key:>15}: {value}")
    return 0
