"""The recording file: frames msgpack-encoded once, zstd-compressed in ~1 s chunks, indexed by tick.

A server slices any tick range out of a recording with one index lookup and at most a couple of
chunk decompressions, never decoding a frame. Layout and guarantees: docs/recording-format.md.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import stat
import struct
import threading
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import msgpack
import numpy as np
import zstandard

from processing.frames import Frame, RosterEntry
from processing.source import SourceInfo

MAGIC = b"EEICTREC"
END_MAGIC = b"EEICTEND"
FORMAT_VERSION = 1
SCHEMA_VERSION = 3  # version of the frame fields (processing/frames.py); 2: client names,
# switch/is_halftime/nade_events, bomb without a position, settings and events metadata;
# 3: demos read with their string tables restored (weapons, inventories, positions, grenades)
SUFFIX = ".eeict"

_HEAD = struct.Struct("<8sHHI")  # magic, format version, flags, reserved
_FOOT = struct.Struct("<QQQQIQ8s")  # meta off/len, index off/len, crc32(meta+index), frames, magic
_ZSTD_LEVEL = 3  # level 9 costs ~2x the time for ~10% smaller files


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
            # Totals are by side. On a switch frame the teams swap sides, so each total is
            # compared with the other side's before; a round won on that same frame (the
            # team's side then was the one before the switch) is still one round.
            t_wins, ct_wins = (state[5], state[4]) if frame.get("switch") else state[4:6]
            t_won, ct_won = t_wins - prev[4], ct_wins - prev[5]
            if sorted((t_won, ct_won)) == [0, 1]:
                out.append(
                    {
                        "tick": tick,
                        "type": "round_end",
                        "winner": "T" if t_won > 0 else "CT",
                        "t_wins": t_wins,
                        "ct_wins": ct_wins,
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


# -- reading -------------------------------------------------------------------------------
#
# A recording may come from anyone who can write into the recordings folder, so every number in
# it is checked before it sizes an allocation or a decompression: sizes are bounded by the
# file's own size, zstd's declared sizes must equal the sizes the index implies, and the file is
# read with pread (a file truncated under us is a short read, where a memory map gives SIGBUS).

_MAX_FRAME_BYTES = 1 << 20  # one frame's msgpack; real ones are 1-10 KiB
_MAX_CHUNK_BYTES = 4 << 20  # one decompressed chunk; real ones are <= ~600 KiB
_MAX_FRAMES_PER_CHUNK = 1 << 16  # the writer uses the tickrate (64 or 128)
_MAX_RATIO = 256  # decompressed/compressed beyond _RATIO_FLOOR; real chunks and indexes <= ~100
_RATIO_FLOOR = 4 << 20  # any part may decompress to this much whatever its compressed size
# Decompressed chunks kept for every open recording together (~25-80 real chunks); at least
# twice the largest chunk, so any chunk can be cached rather than decompressed on every read.
CHUNK_CACHE_BYTES = 16 << 20
CHUNK_CACHE_CHUNKS = 4096  # tiny chunks: the entries' own overhead stays bounded too
_MAX_META_BYTES = 16 << 20  # the metadata map; a real match's is ~50-300 KiB (its events)
_MAX_META_DEPTH = 8  # nesting of metadata values; the writer's deepest is 3 (events' fields)
_MAX_META_VALUES = 1 << 20  # values in the metadata, all levels together


def _allowed_output(compressed: int) -> int:
    """Most bytes a zstd part of ``compressed`` bytes may decompress to (zstd bombs refused)."""
    return max(_RATIO_FLOOR, _MAX_RATIO * compressed)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def _map_of(fields: dict[str, Callable[[Any], bool]]) -> Callable[[Any], bool]:
    """A map having at least ``fields``, each passing its check (other keys allowed)."""
    return lambda value: (
        isinstance(value, dict)
        and all(key in value and check(value[key]) for key, check in fields.items())
    )


def _str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _str_map_or_nil(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in value.items()
    )


def _exactly(fields: dict[str, Callable[[Any], bool]]) -> Callable[[Any], bool]:
    """A map having exactly ``fields`` (no other key), each passing its check."""
    return lambda value: (
        isinstance(value, dict)
        and value.keys() == fields.keys()
        and all(check(value[key]) for key, check in fields.items())
    )


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


_roster_entry = _exactly({"sid": _is_int, "name": _is_str, "team": _is_str})

# Each event type and the details it may carry (EventIndex; docs/recording-format.md). Details
# are optional (nil where unknown), other keys are refused: events are served as they are.
_name = _optional(_is_str)
EVENT_DETAILS: dict[str, dict[str, Callable[[Any], bool]]] = {
    "kill": {"killer": _name, "victim": _name, "weapon": _name, "is_hs": _optional(_is_bool)},
    "plant": {"player": _name},
    "defuse": {"player": _name},
    "explode": {"player": _name},
    "round_start": {},
    "freeze_end": {},
    "round_end": {
        "winner": lambda v: v in ("T", "CT"),
        "t_wins": _is_int,
        "ct_wins": _is_int,
    },
}


def _event(value: Any) -> bool:
    if not (isinstance(value, dict) and _is_int(value.get("tick"))):
        return False
    details = EVENT_DETAILS.get(value.get("type"))  # type: ignore[arg-type]
    return details is not None and all(
        key in ("tick", "type") or (key in details and details[key](item))
        for key, item in value.items()
    )


def json_safe_problem(value: Any, max_depth: int, max_values: int) -> str | None:
    """What makes ``value`` unfit to serve as JSON, or None: only string keys, strings, ints,
    finite floats, booleans, nil, lists and maps, nested at most ``max_depth`` levels, at most
    ``max_values`` values in all. Iterative: no depth can exhaust Python's stack."""
    stack, seen = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > max_values:
            return f"more than {max_values} values"
        if item is None or isinstance(item, str | int):  # bool is an int
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"a number that is not finite ({item})"
            continue
        if not isinstance(item, list | dict):
            kind = type(item).__name__
            return f"a value of type {kind} (only strings, numbers, booleans, nil, lists, maps)"
        if depth >= max_depth:
            return f"values nested deeper than {max_depth} levels"
        if isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                return "a map key that is not a string"
            stack.extend((v, depth + 1) for v in item.values())
        else:
            stack.extend((v, depth + 1) for v in item)
    return None


class MetaField(NamedTuple):
    key: str
    check: Callable[[Any], bool]
    expected: str  # what the check accepts, for the refusal message
    required: bool = True


# What a recording's metadata must hold before anything uses it (docs/recording-format.md).
# Keys not listed are kept if JSON-safe (json_safe_problem); a new key is one line here.
META_FIELDS: tuple[MetaField, ...] = (
    MetaField("format_version", _is_int, "an integer"),
    MetaField("schema_version", _is_int, "an integer"),
    MetaField("map", _is_str, "a string"),
    MetaField("tickrate", lambda v: _is_number(v) and 1 <= v <= 1024, "a number in 1..1024"),
    MetaField("first_tick", _is_int, "an integer"),
    MetaField("last_tick", _is_int, "an integer"),
    MetaField("frame_count", _is_int, "an integer"),
    MetaField("duration_s", lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    MetaField(
        "frames_per_chunk",
        lambda v: _is_int(v) and 1 <= v <= _MAX_FRAMES_PER_CHUNK,
        f"an integer in 1..{_MAX_FRAMES_PER_CHUNK}",
    ),
    MetaField("teams", _str_map, "a map of strings to strings"),
    MetaField(
        "settings_from", _str_map_or_nil, "a map of strings to strings or nil", required=False
    ),
    MetaField(
        "roster", _list_of(_roster_entry), "a list of {sid: int, name: str, team: str}, no more"
    ),
    MetaField("round_starts", _list_of(_is_int), "a list of integers"),
    MetaField("source_file", _is_str, "a string"),
    MetaField("source_sha256", _is_str, "a string"),
    MetaField("parser", _is_str, "a string"),
    MetaField("synthetic", lambda v: isinstance(v, bool), "true or false"),
    MetaField("created_at", _is_str, "a string"),
    MetaField(
        "events",
        _list_of(_event),
        "a list of {tick: int, type: str} plus that type's details (docs/recording-format.md)",
    ),
    *(
        MetaField(
            name,
            lambda v: v is None or (_is_number(v) and v >= 0),
            "seconds (a number >= 0) or nil",
            required=False,
        )
        for name in ("freeze_time", "round_time", "bomb_time")
    ),
)


def shown(text: str) -> str:
    """``text`` as is when printable, else its repr: file and map names come from files."""
    return text if text.isprintable() else repr(text)


class _FileBytes:
    """Bytes of an open file by offset, with pread: no shared position, safe across threads."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``; fewer means the file changed (EOFError)."""
        data = os.pread(self.fd, length, offset)
        while len(data) < length:  # a regular file reads short only at its end
            more = os.pread(self.fd, length - len(data), offset + len(data))
            if not more:
                raise EOFError(f"{length - len(data)} bytes missing at offset {offset}")
            data += more
        return data


class _MemoryBytes:
    """A recording held in memory (a download, a test)."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.size = len(self.data)

    def read(self, offset: int, length: int) -> bytes:
        data = self.data[offset : offset + length]
        if len(data) < length:
            raise EOFError(f"{length - len(data)} bytes missing at offset {offset}")
        return data


class ChunkCache:
    """Decompressed chunks of every open recording, least recently used first out, bounded by
    bytes and by count for the whole process (not per recording: a server may hold many).

    Keyed by (recording, chunk index); a closed recording's chunks are dropped with it. Reads
    run on the event loop and in worker threads (downloads, tools), hence the lock.
    """

    def __init__(self, max_bytes: int = CHUNK_CACHE_BYTES, max_chunks: int = CHUNK_CACHE_CHUNKS):
        self.max_bytes, self.max_chunks = max_bytes, max_chunks
        self._chunks: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0

    def get(self, key: tuple[int, int]) -> bytes | None:
        with self._lock:
            data = self._chunks.get(key)
            if data is not None:
                self._chunks.move_to_end(key)
            return data

    def put(self, key: tuple[int, int], data: bytes) -> None:
        """Keep ``data``, evicting the oldest; a chunk over half the bound is not kept (it would
        push out everything else)."""
        with self._lock:
            if 2 * len(data) > self.max_bytes or key in self._chunks:
                return
            self._chunks[key] = data
            self.bytes += len(data)
            while self.bytes > self.max_bytes or len(self._chunks) > self.max_chunks:
                self.bytes -= len(self._chunks.popitem(last=False)[1])

    def drop(self, owner: int) -> None:
        """Forget one recording's chunks (it was closed, or a tool wants cold reads)."""
        with self._lock:
            for key in [key for key in self._chunks if key[0] == owner]:
                self.bytes -= len(self._chunks.pop(key))

    def owners(self) -> set[int]:
        with self._lock:
            return {owner for owner, _ in self._chunks}

    def resize(self, max_bytes: int) -> None:
        """A new bound (tests, or a server sized to its pod), evicting down to it at once."""
        with self._lock:
            self.max_bytes = max_bytes
            while self.bytes > self.max_bytes:
                self.bytes -= len(self._chunks.popitem(last=False)[1])


CHUNK_CACHE = ChunkCache()
_owners = itertools.count()


class _RecordingChunks:
    """One recording's view of CHUNK_CACHE."""

    def __init__(self, cache: ChunkCache) -> None:
        self.owner = next(_owners)
        self._cache = cache

    def get(self, chunk: int) -> bytes | None:
        return self._cache.get((self.owner, chunk))

    def put(self, chunk: int, data: bytes) -> None:
        self._cache.put((self.owner, chunk), data)

    def clear(self) -> None:
        self._cache.drop(self.owner)


class Recording:
    """A read-only view of a recording: metadata, tick index, and frame bytes by range.

    Opening reads only the header, footer, metadata and index, and checks all of them. Chunks
    are read from the open file and decompressed on demand (zstd verifies each chunk's
    checksum); recent ones are cached. A file changed under an open recording makes reads
    raise RecordingError, never crash the process.
    """

    def __init__(
        self, source: _FileBytes | _MemoryBytes, name: str, stamp: tuple[int, int]
    ) -> None:
        self.name = name
        self.stamp = stamp  # (size, mtime_ns) of the file when opened; (size, 0) in memory
        self._source = source
        self._decompressor = zstandard.ZstdDecompressor()
        self._cache = _RecordingChunks(CHUNK_CACHE)
        weakref.finalize(self, CHUNK_CACHE.drop, self._cache.owner)
        parsed = self._parse()
        self.meta, self.ticks, self._lengths, self._frame_offsets = parsed[:4]
        self._chunk_bounds, self._chunk_sizes = parsed[4:]
        self.frames_per_chunk: int = self.meta["frames_per_chunk"]

    @classmethod
    def open(cls, path: Path) -> Recording:
        """Open a regular file, never following a symlink nor blocking on a FIFO or device."""
        path = Path(path)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            link = exc.errno == errno.ELOOP
            reason = "a symbolic link (put the file itself there)" if link else exc.strerror
            raise RecordingError(f"{shown(str(path))}: cannot open recording: {reason}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise RecordingError(f"{shown(str(path))}: not a regular file, not a recording")
            if info.st_size == 0:
                raise RecordingError(f"{shown(str(path))}: empty file, not a recording")
            recording = cls(
                _FileBytes(fd, info.st_size), str(path), (info.st_size, info.st_mtime_ns)
            )
        except BaseException:
            os.close(fd)
            raise
        weakref.finalize(recording, os.close, fd)
        return recording

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> Recording:
        return cls(_MemoryBytes(data), name, (len(data), 0))

    @property
    def size(self) -> int:
        """Size of the whole file in bytes (when opened)."""
        return self._source.size

    def file_status(self) -> os.stat_result | None:
        """``fstat`` of the open file (what it is now, not what a path names); None in memory."""
        return os.fstat(self._source.fd) if isinstance(self._source, _FileBytes) else None

    def overwritten(self) -> bool:
        """Whether the open file was changed in place since it was opened (its size or
        modification time differ): reads may then meet bytes of another file."""
        status = self.file_status()
        return status is not None and (status.st_size, status.st_mtime_ns) != self.stamp

    def _read(self, offset: int, length: int) -> bytes:
        try:
            return self._source.read(offset, length)
        except (EOFError, OSError) as exc:
            raise self._fail(f"file changed or unreadable while open ({exc})") from exc

    def raw_bytes(self, start: int = 0, stop: int | None = None) -> bytes:
        """The file's own bytes [start, stop) (for downloads)."""
        stop = self.size if stop is None else min(stop, self.size)
        return self._read(start, stop - start) if start < stop else b""

    def iter_raw(self, block: int = 1 << 20) -> Iterator[bytes]:
        """The whole file in blocks: hashing or sending it holds one block at a time."""
        for start in range(0, self.size, block):
            yield self.raw_bytes(start, start + block)

    def _fail(self, what: str) -> RecordingError:
        return RecordingError(f"{shown(self.name)}: {what}; re-create it with `eeict process`")

    def _parse(self):
        size = self.size
        if size < _HEAD.size + _FOOT.size:
            raise self._fail("file too short to be a recording (truncated?)")
        magic, version, _flags, _ = _HEAD.unpack(self._read(0, _HEAD.size))
        if magic != MAGIC:
            raise self._fail("not a recording (bad magic)")
        if version != FORMAT_VERSION:
            raise self._fail(f"format version {version}, this server reads {FORMAT_VERSION}")
        footer = _FOOT.unpack(self._read(size - _FOOT.size, _FOOT.size))
        meta_off, meta_len, index_off, index_len, crc, count, end = footer
        if end != END_MAGIC:
            raise self._fail("footer missing (truncated or still being written)")
        if not (_HEAD.size <= meta_off and meta_off + meta_len == index_off) or (
            index_off + index_len != size - _FOOT.size
        ):
            raise self._fail("footer offsets do not match the file size (corrupt)")
        if meta_len > _MAX_META_BYTES:
            raise self._fail(f"metadata of {meta_len} bytes, over {_MAX_META_BYTES} (corrupt)")
        meta_bytes = self._read(meta_off, meta_len)  # both bounded by the file's size now
        index_bytes = self._read(index_off, index_len)
        if _checksum(meta_bytes, index_bytes, footer) != crc:
            raise self._fail("metadata/index checksum mismatch (corrupt)")
        try:
            meta = self._parse_meta(meta_bytes, count)
            return (meta, *self._parse_index(meta, index_bytes, count, meta_off))
        except RecordingError:
            raise
        except Exception as exc:  # anything odd in a file whose checksum matched
            raise self._fail(
                f"inconsistent metadata or index ({type(exc).__name__}: {exc})"
            ) from exc

    def _parse_meta(self, meta_bytes: bytes, count: int) -> dict[str, Any]:
        meta = msgpack.unpackb(meta_bytes)
        if not isinstance(meta, dict):
            raise self._fail("metadata is not a map (corrupt)")
        for field in META_FIELDS:
            if field.key not in meta:
                if field.required:
                    raise self._fail(f"metadata lacks {field.key!r}")
            elif not field.check(meta[field.key]):
                raise self._fail(f"metadata {field.key!r} must be {field.expected}")
        for key, value in meta.items():  # served as JSON (/recordings, events): all of it
            if not isinstance(key, str):
                raise self._fail("a metadata key is not a string")
            problem = json_safe_problem(value, _MAX_META_DEPTH, _MAX_META_VALUES)
            if problem is not None:
                raise self._fail(f"metadata {key[:60]!r} holds {problem}")
        if count < 1 or count != meta["frame_count"]:
            raise self._fail("frame count does not add up (corrupt)")
        schema = meta["schema_version"]
        if schema != SCHEMA_VERSION:
            raise RecordingError(
                f"{shown(self.name)}: frame schema version {schema}, this server reads "
                f"{SCHEMA_VERSION}; run `eeict process` again on its source to re-create it"
            )
        return meta

    def _parse_index(self, meta: dict[str, Any], index_bytes: bytes, count: int, meta_off: int):
        per_chunk = meta["frames_per_chunk"]
        chunks = -(-count // per_chunk)
        expected = 12 * count + 8 * chunks
        if expected > _allowed_output(len(index_bytes)):
            raise self._fail(f"index claims {count} frames, too many for its size (corrupt)")
        raw = self._decompress(index_bytes, expected, "index")
        ticks = np.frombuffer(raw, dtype="<i8", count=count)
        lengths = np.frombuffer(raw, dtype="<u4", count=count, offset=8 * count)
        chunk_offsets = np.frombuffer(raw, dtype="<u8", count=chunks, offset=12 * count)
        if chunk_offsets[0] < _HEAD.size or np.any(chunk_offsets >= meta_off):
            raise self._fail("chunk offsets outside the file (corrupt)")
        chunk_bounds = np.append(chunk_offsets.astype(np.int64), meta_off)
        if np.any(np.diff(chunk_bounds) <= 0):
            raise self._fail("chunk offsets out of order (corrupt)")
        if np.any(np.diff(ticks) <= 0):
            raise self._fail("ticks not strictly increasing (corrupt)")
        if (meta["first_tick"], meta["last_tick"]) != (int(ticks[0]), int(ticks[-1])):
            raise self._fail("first_tick/last_tick do not match the index (corrupt)")
        rounds = meta["round_starts"]
        if rounds and not ticks[0] <= min(rounds) <= max(rounds) <= ticks[-1]:
            raise self._fail("round_starts outside the recording's ticks (corrupt)")
        if lengths.min() < 1 or lengths.max() > _MAX_FRAME_BYTES:
            raise self._fail(f"a frame length outside 1..{_MAX_FRAME_BYTES} bytes (corrupt)")
        sizes = lengths.astype(np.int64)
        chunk_sizes = np.add.reduceat(sizes, np.arange(0, count, per_chunk))
        limits = np.minimum(
            _MAX_CHUNK_BYTES, np.maximum(_RATIO_FLOOR, _MAX_RATIO * np.diff(chunk_bounds))
        )
        if np.any(chunk_sizes > limits):
            raise self._fail("a chunk's frames are too large for its size (corrupt)")
        # Offset of each frame inside its decompressed chunk.
        starts = np.cumsum(sizes) - sizes
        frame_offsets = starts - starts[np.arange(count) // per_chunk * per_chunk]
        return ticks, lengths, frame_offsets, chunk_bounds, chunk_sizes

    def _decompress(self, data: bytes, expected: int, what: str) -> bytes:
        """``data`` decompressed, refused before any work unless it declares ``expected`` bytes.

        zstd allocates what a frame declares (max_output_size does not apply then), so the
        declared size is the one to check.
        """
        try:
            declared = zstandard.get_frame_parameters(data).content_size
            if declared != expected:
                raise self._fail(f"{what} declares {declared} bytes, expected {expected} (corrupt)")
            out = self._decompressor.decompress(data)
        except zstandard.ZstdError as exc:
            raise self._fail(f"{what} is corrupt ({exc})") from exc
        if len(out) != expected:
            raise self._fail(f"{what} decompressed to {len(out)} bytes, expected {expected}")
        return out

    # -- frames --------------------------------------------------------------------------

    @property
    def frame_count(self) -> int:
        return len(self.ticks)

    @property
    def complete(self) -> bool:
        """A recording file never grows (see server/streams/store.py's FrameStore)."""
        return True

    def index_at_or_after(self, tick: int) -> int:
        """Index of the first frame whose tick is >= ``tick`` (frame_count when past the end)."""
        return int(np.searchsorted(self.ticks, tick, side="left"))

    def _chunk(self, chunk: int) -> bytes:
        data = self._cache.get(chunk)
        if data is not None:
            return data
        lo, hi = int(self._chunk_bounds[chunk]), int(self._chunk_bounds[chunk + 1])
        data = self._decompress(
            self._read(lo, hi - lo), int(self._chunk_sizes[chunk]), f"chunk {chunk}"
        )
        self._cache.put(chunk, data)
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
