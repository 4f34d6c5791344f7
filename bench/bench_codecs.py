#!/usr/bin/env python3
"""Compression of ticks messages: ratio and cost of zstd and raw DEFLATE on real frames.

Measures, per unit the server sends (a live burst of 8 or 16 frames, a fetch message of 256),
how much smaller each codec makes one msgpack array of the frames and what compressing and
decompressing it costs, on the shared demos (processed into a temporary folder) and on the
generated match. It also measures sending a recording's stored zstd chunks as they are for
fetch ranges that line up with them. The codec choice is in docs/protocol.md.

    python bench/bench_codecs.py            # demos from ../shared/demos + the generated match
    python bench/bench_codecs.py --recordings DIR --json codecs.json
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import msgpack
import zstandard
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processing.recording import SUFFIX, Recording, write_recording  # noqa: E402

UNITS = {"burst 8": 8, "burst 16": 16, "fetch 256": 256}
FETCH = 256
Codec = tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]


def raw_deflate(level: int) -> Codec:
    def compress(data: bytes) -> bytes:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
        return compressor.compress(data) + compressor.flush()

    return compress, lambda data: zlib.decompress(data, wbits=-15)


def zstd(level: int) -> Codec:
    compressor = zstandard.ZstdCompressor(level=level)
    decompressor = zstandard.ZstdDecompressor()
    return compressor.compress, decompressor.decompress


CODECS: dict[str, Codec] = {
    "zstd-1": zstd(1),
    "zstd-3": zstd(3),
    "deflate-1": raw_deflate(1),
    "deflate-6": raw_deflate(6),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--demos", type=Path, default=ROOT.parent / "shared" / "demos",
        help="folder of .dem files to process first (default ../shared/demos)",
    )  # fmt: skip
    parser.add_argument(
        "--recordings", type=Path,
        help="use the .eeict recordings in this folder instead of processing --demos",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=24, help="rounds of the generated match (default 24)"
    )
    parser.add_argument(
        "--samples", type=int, default=400,
        help="units of each size measured per source, spread over it (default 400)",
    )  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return parser.parse_args(argv)


def demo_recordings(args: argparse.Namespace, work: Path) -> list[Recording]:
    """The demos' recordings: from --recordings, or processed from --demos into ``work``."""
    if args.recordings is not None:
        paths = sorted(args.recordings.glob(f"*{SUFFIX}"))
    else:
        from processing.demo import read_demo

        paths = []
        for demo in tqdm(sorted(args.demos.glob("*.dem")), desc="processing demos", unit="demo"):
            match = read_demo(demo)
            paths.append(work / f"{demo.stem}{SUFFIX}")
            write_recording(paths[-1], match.info, match.frames)
    if not paths:
        raise SystemExit("no demos or recordings found; pass --demos or --recordings")
    return [Recording.open(path) for path in paths]


def generated_recording(rounds: int) -> Recording:
    """The generated match (processing.synthetic.generate_match), cached like the server's."""
    from server.builtin import load_builtin

    return load_builtin(rounds)


def units(recordings: list[Recording], size: int, samples: int) -> list[tuple[Recording, int]]:
    """(recording, first frame) of ``samples`` units of ``size`` frames spread over all sources,
    aligned on ``size`` like the server's bursts."""
    slots = [(r, start) for r in recordings for start in range(0, r.frame_count - size + 1, size)]
    step = max(1, len(slots) // samples)
    return slots[::step][:samples]


def payload(recording: Recording, start: int, size: int) -> bytes:
    """What a compressed message carries: one msgpack array of the frames."""
    return msgpack.Packer().pack_array_header(size) + recording.frames_bytes(start, start + size)


def timed(function: Callable[[bytes], bytes], data: bytes, repeat: int = 3) -> tuple[bytes, float]:
    """The result and the fastest of ``repeat`` calls, in microseconds (a noisy shared machine:
    the minimum is the cost, the rest is other work)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        out = function(data)
        best = min(best, time.perf_counter() - started)
    return out, best * 1e6


def measure(source: str, recordings: list[Recording], samples: int) -> list[dict]:
    rows = []
    for unit, size in UNITS.items():
        chosen = units(recordings, size, samples if size < FETCH else max(1, samples // 4))
        datas = [payload(r, start, size) for r, start in chosen]
        plain = sum(map(len, datas))
        for name, (compress, decompress) in tqdm(
            CODECS.items(), desc=f"{source}: {unit}", unit="codec", leave=False
        ):
            packed, compress_us, decompress_us = 0, [], []
            for data in datas:
                out, cost = timed(compress, data)
                back, back_cost = timed(decompress, out)
                if back != data:
                    raise AssertionError(f"{name} did not round-trip")
                packed += len(out)
                compress_us.append(cost)
                decompress_us.append(back_cost)
            rows.append(
                {
                    "source": source, "unit": unit, "codec": name, "units": len(datas),
                    "plain_bytes_per_frame": round(plain / len(datas) / size),
                    "bytes_per_frame": round(packed / len(datas) / size, 1),
                    "ratio": round(plain / packed, 1),
                    "compress_us": round(statistics.median(compress_us)),
                    "decompress_us": round(statistics.median(decompress_us)),
                }
            )  # fmt: skip
    return rows


def stored_chunks(source: str, recordings: list[Recording], samples: int) -> list[dict]:
    """Fetch messages of 256 frames lined up with the stored chunks: the chunks as they are
    (zstd-3, one zstd frame per chunk of ``frames_per_chunk``), against recompressing."""
    chosen = units(recordings, FETCH, max(1, samples // 4))
    compress, _ = CODECS["deflate-6"]
    fast, _ = CODECS["deflate-1"]
    plain = stored = d6 = d1 = 0
    read_us, d6_us, d1_us, inflate_zstd_us = [], [], [], []
    for recording, start in chosen:
        per = recording.frames_per_chunk
        first, last = start // per, (start + FETCH) // per  # FETCH is a multiple of 64
        bounds = recording._chunk_bounds  # the file layout (docs/recording-format.md)
        raw = bytes(recording.raw_bytes(int(bounds[first]), int(bounds[last])))
        stored += len(raw)
        started = time.perf_counter()
        frames = b"".join(
            zstandard.ZstdDecompressor().decompress(
                recording.raw_bytes(int(bounds[c]), int(bounds[c + 1]))
            )
            for c in range(first, last)
        )  # what the server does today before sending plain frames
        read_us.append((time.perf_counter() - started) * 1e6)
        inflate_zstd_us.append(read_us[-1])  # the client's cost for the stored chunks: the same
        data = msgpack.Packer().pack_array_header(FETCH) + frames
        plain += len(data)
        out6, cost6 = timed(compress, data)
        out1, cost1 = timed(fast, data)
        d6 += len(out6)
        d1 += len(out1)
        d6_us.append(cost6)
        d1_us.append(cost1)
    n = len(chosen)
    return [
        {
            "source": source, "fetch_messages": n, "plain_kb": round(plain / n / 1024, 1),
            "stored_zstd_kb": round(stored / n / 1024, 1),
            "deflate6_kb": round(d6 / n / 1024, 1), "deflate1_kb": round(d1 / n / 1024, 1),
            "server_us_stored": 0, "server_us_zstd_read": round(statistics.median(read_us)),
            "server_us_deflate6": round(statistics.median(d6_us)),
            "server_us_deflate1": round(statistics.median(d1_us)),
            "client_us_zstd": round(statistics.median(inflate_zstd_us)),
        }
    ]  # fmt: skip


RADAR = "players.x,players.y,players.view_x,players.hp,players.team,bomb,nades,infernos"


def shaped(source: str, recordings: list[Recording], samples: int) -> list[dict]:
    """What building a radar-shaped burst of 8 costs (decode, keep the fields, re-encode,
    deflate) and how small it gets, against the full burst."""
    from server.streams.encoding import ConnectionOptions, encode_ticks, shape_frames

    shape = ConnectionOptions.parse({"fields": RADAR}).shape
    chosen = units(recordings, 8, samples)
    full = radar = 0
    shape_us, deflate_us = [], []
    for recording, start in chosen:
        frames = recording.frames_bytes(start, start + 8)
        (data, count), cost = timed(lambda f: shape_frames(f, 8, shape), frames)
        shape_us.append(cost)
        envelope = {"stream": "s", "seq": start}
        message, cost = timed(
            functools.partial(encode_ticks, envelope, count, encoding="deflate"), data
        )
        deflate_us.append(cost)
        radar += len(message)
        full += len(encode_ticks({"stream": "s", "seq": start}, 8, frames, "deflate"))
    n = len(chosen)
    return [
        {
            "source": source, "bursts": n, "full_deflate_bytes_per_frame": round(full / n / 8),
            "radar_deflate_bytes_per_frame": round(radar / n / 8),
            "shape_us": round(statistics.median(shape_us)),
            "deflate_us": round(statistics.median(deflate_us)),
        }
    ]  # fmt: skip


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(str(row[key]) for key in keys) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="eeict-codecs-") as work:
        sources = {
            "demos": demo_recordings(args, Path(work)),
            "generated": [generated_recording(args.rounds)],
        }
        rows, chunk_rows, shape_rows = [], [], []
        for source, recordings in sources.items():
            rows += measure(source, recordings, args.samples)
            chunk_rows += stored_chunks(source, recordings, args.samples)
            shape_rows += shaped(source, recordings, args.samples)
    print("Ratio (plain / compressed) and median cost per unit, microseconds:\n")
    print(table(rows))
    print("\nFetch messages of 256 frames lined up with the stored chunks (per message):\n")
    print(table(chunk_rows))
    print(f"\nRadar-shaped bursts of 8 (fields={RADAR}), per burst:\n")
    print(table(shape_rows))
    if args.json:
        results = {"codecs": rows, "stored_chunks": chunk_rows, "radar_shape": shape_rows}
        Path(args.json).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
