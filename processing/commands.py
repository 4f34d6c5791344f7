"""``eeict process`` and ``eeict inspect``: demos in, recordings out, metadata shown."""

from __future__ import annotations

import json
import sys
import time
import zlib
from pathlib import Path

from tqdm import tqdm

from processing.recording import SUFFIX, Recording, RecordingError, shown, write_recording

# What to install when the demo parser is missing (the serving image leaves it out).
PROCESSING_EXTRA = "pip install 'eeict-stream[processing]'"


class Shard:
    """One of ``count`` disjoint shares of a batch of demos (``--shard INDEX/COUNT``).

    A demo belongs to the shard its recording's name hashes to, not to a position in the list:
    every pod of an Indexed Job then agrees on who processes which demo even when the folder
    changes between their starts, and two demos that would write the same recording always
    land in the same pod, so no two pods ever write one file.
    """

    def __init__(self, index: int, count: int) -> None:
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"shard {index}/{count}: need 0 <= INDEX < COUNT")
        self.index = index
        self.count = count

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"INDEX/COUNT"``, e.g. ``"0/4"``; ValueError with what was wrong otherwise."""
        index, slash, count = text.partition("/")
        if not slash or not index.strip().isdigit() or not count.strip().isdigit():
            raise ValueError(f"{text!r} is not INDEX/COUNT (e.g. 0/4)")
        return cls(int(index), int(count))

    def owns(self, demo: Path) -> bool:
        return zlib.crc32(demo.stem.encode()) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def process(demos: list[Path], out: Path, force: bool, shard: Shard | None = None) -> int:
    """Process each demo into ``out``; a bad file is reported and the others still processed.

    With ``shard``, only that shard's demos; the others are left to the other shards.
    """
    try:
        from processing.demo import DemoError, read_demo
    except ModuleNotFoundError as exc:
        print(
            f"error: `eeict process` needs the demo parser ({exc.name} is not installed): "
            f"{PROCESSING_EXTRA}, or use the processing image",
            file=sys.stderr,
        )
        return 2
    if shard is not None:
        mine = [demo for demo in demos if shard.owns(demo)]
        print(f"shard {shard}: {len(mine)} of {len(demos)} demos")
        demos = mine
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
            text = ", ".join(f"{shown(p['name'])} ({shown(p['team'])})" for p in value)
        elif key == "round_starts":
            text = f"{len(value)} rounds: " + ", ".join(map(str, value))
        else:
            text = _one_line(value)
        print(f"{key:>15}: {text}")
    return 0


def _one_line(value: object) -> str:
    """A metadata value on one line: names come from the file, so a string that is not
    printable is shown as its repr, and maps and lists as JSON (control characters escaped)."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
