"""The frames of a stream so far: one narrow interface for finished recordings and live matches.

Live fan-out, the legacy adapter, replay and range fetch all read frames through ``FrameStore``.
A ``processing.recording.Recording`` is a complete store; ``GrowingStore`` is a match still being
played, appended to as frames are made and read the same way while its end moves.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Protocol

import msgpack
import numpy as np
import zstandard

from processing.frames import Frame
from processing.recording import EventIndex


class FrameStore(Protocol):
    """Frames in increasing tick order, addressed by index, as msgpack bytes encoded once."""

    name: str
    meta: dict[str, Any]  # map, tickrate, teams, roster, round_starts, events, first/last tick..

    @property
    def ticks(self) -> np.ndarray: ...

    @property
    def frame_count(self) -> int: ...

    @property
    def complete(self) -> bool:
        """False while frames are still being appended (a live match)."""

    def frames_bytes(self, start: int, stop: int) -> bytes: ...

    def frames_within(self, start: int, max_frames: int, max_bytes: int) -> int: ...

    def index_at_or_after(self, tick: int) -> int: ...

    def frame(self, index: int) -> Frame: ...

    def overwritten(self) -> bool:
        """Whether the file behind the frames was changed in place (never, for frames held in
        memory)."""


FRAMES_PER_CHUNK = 64  # ~1 s at 64 frames/s: what a journal loses at most
_ZSTD_LEVEL = 3
_CACHED_CHUNKS = 8


def room_for(values: np.ndarray, count: int) -> np.ndarray:
    """``values`` with room for ``count`` items: itself, or a copy twice as long (or ``count``
    long, if more) with zeros after, for a column that grows one frame at a time."""
    if count <= len(values):
        return values
    grown = np.zeros(max(count, 2 * len(values)), dtype=values.dtype)
    grown[: len(values)] = values
    return grown


class GrowingStore:
    """A live match's frames in memory: sealed ~1 s chunks kept zstd-compressed, like a recording.

    A 30-minute match at 64 frames/s is ~115,000 frames of ~3 KB; compressed chunks keep that
    near 25 MB instead of 350 MB. Only the newest, unsealed chunk is held as plain bytes.
    What a recording's metadata says (first/last tick, round starts, roster, the events index)
    is kept current as frames arrive, so a match in play is described like a recording.
    """

    def __init__(
        self, name: str, meta: dict[str, Any], frames_per_chunk: int = FRAMES_PER_CHUNK
    ) -> None:
        self.name = name
        self._events = EventIndex()
        self.meta = {
            **meta,
            "first_tick": None,
            "last_tick": None,
            "frame_count": 0,
            "duration_s": 0.0,
            "round_starts": [],
            "roster": [],
            "events": self._events.entries,  # the same list: current as frames arrive
        }
        self.frames_per_chunk = frames_per_chunk
        self._ticks = np.zeros(4096, dtype=np.int64)
        self._lengths = np.zeros(4096, dtype=np.int64)
        self._count = 0
        self._sealed: list[bytes] = []  # compressed chunks of frames_per_chunk frames each
        self._open: list[bytes] = []  # frames of the chunk being filled
        self._roster_seen: dict[int, int] = {}  # sid -> index of the frame that showed it first
        self._compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
        self._decompressor = zstandard.ZstdDecompressor()
        self._cache: OrderedDict[int, list[bytes]] = OrderedDict()
        # A finished match is written to its recording in a worker thread while the event loop
        # may still read the store: the decompressor and the cache are used under this lock.
        self._chunk_lock = threading.Lock()
        self._complete = False

    # -- writing ---------------------------------------------------------------------------

    def append(self, frame: Frame) -> bytes | None:
        """Add the next frame; returns a chunk's compressed bytes when this frame sealed one."""
        self._check_open()
        encoded = msgpack.packb(frame)
        self._add(frame, encoded)
        self._open.append(encoded)
        if len(self._open) < self.frames_per_chunk:
            return None
        chunk = self._compressor.compress(b"".join(self._open))
        self._sealed.append(chunk)
        self._open = []
        return chunk

    def add_sealed_chunk(self, chunk: bytes) -> None:
        """Add a whole sealed chunk as it was made (from a journal): its compressed bytes are
        kept as they are; its frames are read once to index and describe them.

        Raises ValueError (the store unchanged) for a chunk that is not ``frames_per_chunk``
        whole frames in order after the last one, or while a chunk is being filled.
        """
        self._check_open()
        if self._open:
            raise ValueError(f"{self.name}: a sealed chunk cannot follow a partial one")
        try:
            with self._chunk_lock:
                data = self._decompressor.decompress(chunk)
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(data)
            frames, ends = [], []
            for frame in unpacker:
                frames.append(frame)
                ends.append(unpacker.tell())
        except (zstandard.ZstdError, ValueError, msgpack.UnpackException) as exc:
            raise ValueError(f"{self.name}: a damaged chunk ({exc})") from exc
        if len(frames) != self.frames_per_chunk or not all(isinstance(f, dict) for f in frames):
            raise ValueError(f"{self.name}: a chunk of {len(frames)} frames, not a sealed one")
        ticks = [f.get("tick") for f in frames]
        last = self._ticks[self._count - 1] if self._count else None
        if not all(isinstance(t, int) for t in ticks) or any(
            b <= a for a, b in zip([last, *ticks[:-1]], ticks, strict=True) if a is not None
        ):
            raise ValueError(f"{self.name}: a chunk whose ticks are out of order")
        for frame, start, end in zip(frames, [0, *ends[:-1]], ends, strict=True):
            self._add(frame, data[start:end])
        self._sealed.append(chunk)

    def _check_open(self) -> None:
        if self._complete:
            raise ValueError(f"{self.name}: the match has ended; no more frames")

    def _add(self, frame: Frame, encoded: bytes) -> None:
        tick = int(frame["tick"])
        if self._count and tick <= self._ticks[self._count - 1]:
            raise ValueError(f"frames out of order: tick {tick} after {self.meta['last_tick']}")
        self._ticks = room_for(self._ticks, self._count + 1)
        self._lengths = room_for(self._lengths, self._count + 1)
        self._ticks[self._count] = tick
        self._lengths[self._count] = len(encoded)
        self._describe(frame, tick, self._count)
        self._count += 1
        self.meta["frame_count"] = self._count

    def _describe(self, frame: Frame, tick: int, index: int) -> None:
        meta = self.meta
        if meta["first_tick"] is None:
            meta["first_tick"] = tick
        meta["last_tick"] = tick
        meta["duration_s"] = round((tick - meta["first_tick"]) / float(meta["tickrate"]), 3)
        if frame.get("round_start"):
            meta["round_starts"].append(tick)
        self._events.add(frame)
        for player in frame.get("players") or ():
            if player["sid"] not in self._roster_seen:
                self._roster_seen[player["sid"]] = index
                entry = {"sid": player["sid"], "name": player["name"], "team": player["team"]}
                meta["roster"].append(entry)

    def finish(self) -> None:
        """No more frames: readers see a complete store (its end stops moving)."""
        self._complete = True

    def head(self, count: int) -> GrowingStore:
        """A new store holding this one's first ``count`` frames, to be appended to from there.

        Whole sealed chunks are shared as they are (no decoding): a copy of a whole match costs
        only its index. What the metadata says is cut back to those frames.
        """
        count = min(count, self._count)
        copy = GrowingStore(self.name, self.meta, self.frames_per_chunk)
        whole = count // self.frames_per_chunk
        shared = whole * self.frames_per_chunk
        if shared:
            copy._ticks = self._ticks[: max(shared, 4096)].copy()
            copy._lengths = self._lengths[: max(shared, 4096)].copy()
            copy._sealed = self._sealed[:whole]
            copy._count = shared
            last = int(self._ticks[shared - 1])
            copy._restate(self, shared, last)
        for frame in self.frames(shared, count):
            copy.append(frame)
        return copy

    def _restate(self, source: GrowingStore, count: int, last_tick: int) -> None:
        """The metadata of ``source``'s first ``count`` frames (the last of them at
        ``last_tick``), taken from what ``source`` says rather than by reading the frames."""
        meta = self.meta
        meta["first_tick"], meta["last_tick"], meta["frame_count"] = (
            source.meta["first_tick"], last_tick, count
        )  # fmt: skip
        meta["duration_s"] = round((last_tick - meta["first_tick"]) / float(meta["tickrate"]), 3)
        meta["round_starts"] = [t for t in source.meta["round_starts"] if t <= last_tick]
        self._roster_seen = {sid: i for sid, i in source._roster_seen.items() if i < count}
        meta["roster"] = [r for r in source.meta["roster"] if r["sid"] in self._roster_seen]
        # The index compares each frame with the one before: it starts from frame count - 1.
        self._events.add(source.frame(count - 1))
        self._events.entries[:] = [e for e in source.meta["events"] if e["tick"] <= last_tick]

    # -- reading (the FrameStore interface) ------------------------------------------------

    @property
    def ticks(self) -> np.ndarray:
        return self._ticks[: self._count]

    @property
    def frame_count(self) -> int:
        return self._count

    @property
    def complete(self) -> bool:
        return self._complete

    def _chunk_frames(self, chunk: int) -> list[bytes]:
        if chunk == len(self._sealed):
            return self._open
        with self._chunk_lock:
            frames = self._cache.get(chunk)
            if frames is None:
                data = self._decompressor.decompress(self._sealed[chunk])
                base = chunk * self.frames_per_chunk
                ends = np.cumsum(self._lengths[base : base + self.frames_per_chunk])
                frames = [data[a:b] for a, b in zip((0, *ends[:-1]), ends, strict=True)]
                self._cache[chunk] = frames
                if len(self._cache) > _CACHED_CHUNKS:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(chunk)
            return frames

    def encoded(self, start: int, stop: int) -> list[bytes]:
        """The msgpack bytes of frames [start, stop), one item per frame."""
        start, stop = max(0, start), min(stop, self._count)
        per, parts = self.frames_per_chunk, []
        index = start
        while index < stop:
            chunk, offset = divmod(index, per)
            take = min(stop - index, per - offset)
            parts.extend(self._chunk_frames(chunk)[offset : offset + take])
            index += take
        return parts

    def frames_bytes(self, start: int, stop: int) -> bytes:
        return b"".join(self.encoded(start, stop))

    def frames_within(self, start: int, max_frames: int, max_bytes: int) -> int:
        sizes = np.cumsum(self._lengths[start : min(start + max_frames, self._count)])
        return max(1, int(np.searchsorted(sizes, max_bytes, side="right")))

    def index_at_or_after(self, tick: int) -> int:
        return int(np.searchsorted(self.ticks, tick, side="left"))

    def frame(self, index: int) -> Frame:
        return msgpack.unpackb(self.frames_bytes(index, index + 1))

    def overwritten(self) -> bool:
        return False  # held in memory

    def frames(self, start: int, stop: int) -> list[Frame]:
        unpacker = msgpack.Unpacker()
        unpacker.feed(self.frames_bytes(start, stop))
        return list(unpacker)

    @property
    def sealed_count(self) -> int:
        """How many chunks are sealed (each ``frames_per_chunk`` frames, never changed again)."""
        return len(self._sealed)

    def sealed_chunk(self, index: int) -> bytes:
        """A sealed chunk's compressed bytes, as a journal keeps them."""
        return self._sealed[index]
