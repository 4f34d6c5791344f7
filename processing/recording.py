"""The recording file: frames msgpack-encoded once, zstd-compressed in ~1 s chunks, indexed by tick.

A server slices any tick range out of a recording with one index lookup and at most a couple of
chunk decompressions, never decoding a frame. Layout and guarantees: docs/recording-format.md.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zstandard

from processing.frames import Frame, RosterEntry
from processing.source import SourceInfo

MAGIC = b"EEICTREC"
END_MAGIC = b"EEICTEND"
FORMAT_VERSION = 1
SCHEMA_VERSION = 2  # version of the frame fields (processing/frames.py); 2: client names,
# switch/is_halftime/nade_events, bomb without a position, settings and events metadata
SUFFIX = ".eeict"

_HEAD = struct.Struct("<8sHHI")  # magic, format version, flags, reserved
_FOOT = struct.Struct("<QQQQIQ8s")  # meta off/len, index off/len, crc32(meta+index), frames, magic
_ZSTD_LEVEL = 3  # level 9 costs ~2x the time for ~10% smaller files
_CHUNK_CACHE = 16


class RecordingError(Exception):
    """A recording that cannot be used; the message names the file and what is wrong."""


def write_recording(
    path: Path,
    source: SourceInfo,
    frames: Iterable[Frame],
    on_frame: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Write frames to ``path`` atomically and return the metadata written.

    Frames must come in increasing tick order. The file appears under its name only once
    complete and fsynced; any failure removes the temporary file and re-raises.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            meta = _write(out, source, frames, on_frame)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return meta


def _write(out, source: SourceInfo, frames: Iterable[Frame], on_frame) -> dict[str, Any]:
    chunk_frames = max(1, round(source.tickrate))
    compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_checksum=True)
    packer = msgpack.Packer()
    ticks: list[int] = []
    lengths: list[int] = []
    chunk_offsets: list[int] = []
    pending: list[bytes] = []
    roster: dict[int, RosterEntry] = {}
    round_starts: list[int] = []
    events = EventIndex()
    last_tick: int | None = None

    out.write(_HEAD.pack(MAGIC, FORMAT_VERSION, 0, 0))

    def flush_chunk() -> None:
        chunk_offsets.append(out.tell())
        out.write(compressor.compress(b"".join(pending)))
        pending.clear()

    for frame in frames:
        tick = int(frame["tick"])
        if last_tick is not None and tick <= last_tick:
            raise ValueError(f"frames out of order: tick {tick} after {last_tick}")
        last_tick = tick
        encoded = packer.pack(frame)
        ticks.append(tick)
        lengths.append(len(encoded))
        pending.append(encoded)
        if frame.get("round_start"):
            round_starts.append(tick)
        events.add(frame)
        for p in frame["players"]:
            if p["sid"] not in roster:
                roster[p["sid"]] = {"sid": p["sid"], "name": p["name"], "team": p["team"]}
        if len(pending) == chunk_frames:
            flush_chunk()
        if on_frame is not None:
            on_frame()
    if pending:
        flush_chunk()
    if not ticks:
        raise ValueError("no frames to write")

    meta = {
        "format_version": FORMAT_VERSION,
        "schema_version": SCHEMA_VERSION,
        "map": source.map_name,
        "tickrate": source.tickrate,
        "first_tick": ticks[0],
        "last_tick": ticks[-1],
        "frame_count": len(ticks),
        "duration_s": round((ticks[-1] - ticks[0]) / source.tickrate, 3),
        "frames_per_chunk": chunk_frames,
        "teams": source.team_names,
        "roster": sorted(roster.values(), key=lambda r: (r["team"], r["name"])),
        "round_starts": round_starts,
        "events": events.entries,
        **{name: value.get("seconds") for name, value in source.settings.items()},
        "settings_from": {name: value.get("from") for name, value in source.settings.items()},
        "source_file": source.source_file,
        "source_sha256": source.source_sha256,
        "parser": source.parser,
        "synthetic": source.synthetic,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    meta_bytes = msgpack.packb(meta)
    index_bytes = compressor.compress(
        np.asarray(ticks, dtype="<i8").tobytes()
        + np.asarray(lengths, dtype="<u4").tobytes()
        + np.asarray(chunk_offsets, dtype="<u8").tobytes()
    )
    meta_offset = out.tell()
    out.write(meta_bytes)
    index_offset = out.tell()
    out.write(index_bytes)
    footer = [
        meta_offset,
        len(meta_bytes),
        index_offset,
        len(index_bytes),
        0,
        len(ticks),
        END_MAGIC,
    ]
    footer[4] = _checksum(meta_bytes, index_bytes, footer)
    out.write(_FOOT.pack(*footer))
    return meta


class EventIndex:
    """The match's events for timelines and seeking, read off the frames as they are written.

    Made here rather than by each source so demos, the generated match and live matches all
    get the same index: kills, bomb plant/defuse/explosion, round start/end, freeze end.
    """

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._prev: tuple | None = None  # (is_freeze, planted, defused, exploded, t, ct wins)

    def add(self, frame: Frame) -> None:
        bomb = frame.get("bomb") or {}
        state = (
            bool(frame.get("is_freeze")),
            bool(bomb.get("planted")),
            bool(bomb.get("defused")),
            bool(bomb.get("exploded")),
            int(frame.get("t_wins") or 0),
            int(frame.get("ct_wins") or 0),
        )
        prev, self._prev = self._prev, state
        kills = frame.get("kills")
        if not (frame.get("round_start") or kills or (prev is not None and prev != state)):
            return  # nothing happened: most frames
        tick, out = int(frame["tick"]), self.entries
        if frame.get("round_start"):
            out.append({"tick": tick, "type": "round_start"})
        if prev is not None and prev[0] and not state[0]:
            out.append({"tick": tick, "type": "freeze_end"})
        for kill in kills or ():
            out.append(
                {
                    "tick": tick,
                    "type": "kill",
                    "killer": kill.get("killer"),
                    "victim": kill.get("victim"),
                    "weapon": kill.get("weapon"),
                    "is_hs": kill.get("is_hs"),
                }
            )
        before = prev or (False,) * 4
        for i, kind, who in ((1, "plant", "planted_by"), (2, "defuse", "defused_by")):
            if state[i] and not before[i]:
                out.append({"tick": tick, "type": kind, "player": bomb.get(who)})
        if state[3] and not before[3]:
            out.append({"tick": tick, "type": "explode", "player": None})
        if prev is not None:
            t_won, ct_won = state[4] - prev[4], state[5] - prev[5]
            # One more round won by exactly one side (a side switch swaps the totals instead).
            if sorted((t_won, ct_won)) == [0, 1] and not frame.get("switch"):
                out.append(
                    {
                        "tick": tick,
                        "type": "round_end",
                        "winner": "T" if t_won > 0 else "CT",
                        "t_wins": state[4],
                        "ct_wins": state[5],
                    }
                )


def _checksum(meta: bytes | memoryview, index: bytes | memoryview, footer) -> int:
    """CRC-32 of metadata, index and the footer's numbers (all but the CRC itself)."""
    numbers = struct.pack("<QQQQQ", *footer[:4], footer[5])
    return zlib.crc32(numbers, zlib.crc32(index, zlib.crc32(meta)))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Recording:
    """A read-only view of a recording: metadata, tick index, and frame bytes by range.

    The file is memory-mapped; opening reads only the header, footer, metadata and index.
    Chunks are decompressed on demand (zstd verifies each chunk's checksum) and a few are cached.
    """

    def __init__(self, buffer: mmap.mmap | bytes, name: str) -> None:
        self.name = name
        self._buf = memoryview(buffer)
        self._mmap = buffer if isinstance(buffer, mmap.mmap) else None
        self._decompressor = zstandard.ZstdDecompressor()
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self.meta, self.ticks, self._lengths, self._frame_offsets, self._chunk_bounds = (
            self._parse()
        )
        self.frames_per_chunk: int = self.meta["frames_per_chunk"]

    @classmethod
    def open(cls, path: Path) -> Recording:
        path = Path(path)
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size == 0:
                    raise RecordingError(f"{path}: empty file, not a recording")
                buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise RecordingError(f"{path}: cannot open recording: {exc.strerror}") from exc
        return cls(buffer, str(path))

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> Recording:
        return cls(data, name)

    @property
    def size(self) -> int:
        """Size of the whole file in bytes."""
        return len(self._buf)

    def raw_bytes(self, start: int = 0, stop: int | None = None) -> memoryview:
        """The file's own bytes (for downloads), without copying."""
        return self._buf[start:stop]

    def _fail(self, what: str) -> RecordingError:
        return RecordingError(f"{self.name}: {what}; re-create it with `eeict process`")

    def _parse(self):
        buf = self._buf
        if len(buf) < _HEAD.size + _FOOT.size:
            raise self._fail("file too short to be a recording (truncated?)")
        magic, version, _flags, _ = _HEAD.unpack_from(buf, 0)
        if magic != MAGIC:
            raise self._fail("not a recording (bad magic)")
        if version != FORMAT_VERSION:
            raise self._fail(f"format version {version}, this server reads {FORMAT_VERSION}")
        footer = _FOOT.unpack_from(buf, len(buf) - _FOOT.size)
        meta_off, meta_len, index_off, index_len, crc, count, end = footer
        if end != END_MAGIC:
            raise self._fail("footer missing (truncated or still being written)")
        if not (_HEAD.size <= meta_off and meta_off + meta_len == index_off) or (
            index_off + index_len != len(buf) - _FOOT.size
        ):
            raise self._fail("footer offsets do not match the file size (corrupt)")
        meta_bytes = buf[meta_off:index_off]
        index_bytes = buf[index_off : index_off + index_len]
        if _checksum(meta_bytes, index_bytes, footer) != crc:
            raise self._fail("metadata/index checksum mismatch (corrupt)")
        try:
            return self._parse_index(meta_bytes, index_bytes, count, meta_off)
        except RecordingError:
            raise
        except Exception as exc:  # anything odd in a file whose checksum matched
            raise self._fail(
                f"inconsistent metadata or index ({type(exc).__name__}: {exc})"
            ) from exc

    def _parse_index(self, meta_bytes, index_bytes, count: int, meta_off: int):
        meta = msgpack.unpackb(meta_bytes)
        schema = meta.get("schema_version")
        if schema != SCHEMA_VERSION:
            raise RecordingError(
                f"{self.name}: frame schema version {schema}, this server reads "
                f"{SCHEMA_VERSION}; run `eeict process` again on its source to re-create it"
            )
        per_chunk = meta["frames_per_chunk"]
        if count < 1 or count != meta["frame_count"] or per_chunk < 1:
            raise self._fail("frame count or chunk size does not add up (corrupt)")
        chunks = -(-count // per_chunk)
        raw = self._decompressor.decompress(bytes(index_bytes))
        if len(raw) != 12 * count + 8 * chunks:
            raise self._fail("index size does not match the frame count (corrupt)")
        ticks = np.frombuffer(raw, dtype="<i8", count=count)
        lengths = np.frombuffer(raw, dtype="<u4", count=count, offset=8 * count)
        chunk_offsets = np.frombuffer(raw, dtype="<u8", count=chunks, offset=12 * count)
        chunk_bounds = np.append(chunk_offsets.astype(np.int64), meta_off)
        if chunk_bounds[0] < _HEAD.size or np.any(np.diff(chunk_bounds) <= 0):
            raise self._fail("chunk offsets out of order (corrupt)")
        if np.any(np.diff(ticks) <= 0):
            raise self._fail("ticks not strictly increasing (corrupt)")
        # Offset of each frame inside its decompressed chunk.
        starts = np.concatenate(([0], np.cumsum(lengths.astype(np.int64))[:-1]))
        frame_offsets = starts - np.repeat(starts[::per_chunk], per_chunk)[:count]
        return meta, ticks, lengths, frame_offsets, chunk_bounds

    # -- reading -------------------------------------------------------------------------

    @property
    def frame_count(self) -> int:
        return len(self.ticks)

    def index_at_or_after(self, tick: int) -> int:
        """Index of the first frame whose tick is >= ``tick`` (frame_count when past the end)."""
        return int(np.searchsorted(self.ticks, tick, side="left"))

    def _chunk(self, chunk: int) -> bytes:
        data = self._cache.get(chunk)
        if data is not None:
            self._cache.move_to_end(chunk)
            return data
        lo, hi = int(self._chunk_bounds[chunk]), int(self._chunk_bounds[chunk + 1])
        try:
            data = self._decompressor.decompress(self._buf[lo:hi])
        except zstandard.ZstdError as exc:
            raise self._fail(f"chunk {chunk} is corrupt ({exc})") from exc
        self._cache[chunk] = data
        if len(self._cache) > _CHUNK_CACHE:
            self._cache.popitem(last=False)
        return data

    def frames_bytes(self, start: int, stop: int) -> bytes:
        """The msgpack bytes of frames [start, stop) by index, concatenated, not decoded."""
        start, stop = max(0, start), min(stop, self.frame_count)
        if start >= stop:
            return b""
        per = self.frames_per_chunk
        parts = []
        for chunk in range(start // per, (stop - 1) // per + 1):
            data = self._chunk(chunk)
            first = max(start, chunk * per)
            last = min(stop, (chunk + 1) * per)  # exclusive
            lo = int(self._frame_offsets[first])
            hi = int(self._frame_offsets[last - 1]) + int(self._lengths[last - 1])
            parts.append(data[lo:hi] if (lo, hi) != (0, len(data)) else data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def frames_within(self, start: int, max_frames: int, max_bytes: int) -> int:
        """How many frames from ``start`` fit in ``max_bytes`` (at least 1, at most max_frames)."""
        sizes = np.cumsum(self._lengths[start : start + max_frames], dtype=np.int64)
        return max(1, int(np.searchsorted(sizes, max_bytes, side="right")))

    def frame_bytes(self, index: int) -> bytes:
        return self.frames_bytes(index, index + 1)

    def frame(self, index: int) -> Frame:
        """One frame decoded; for tests, tools and the legacy JSON adapter, not the hot path."""
        return msgpack.unpackb(self.frame_bytes(index))

    def frames(self, start: int, stop: int) -> list[Frame]:
        unpacker = msgpack.Unpacker()
        unpacker.feed(self.frames_bytes(start, stop))
        return list(unpacker)
