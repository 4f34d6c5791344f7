"""The frames of a stream so far: one narrow interface for finished recordings and live matches.

Live fan-out, the legacy adapter, replay and range fetch all read frames through ``FrameStore``.
A ``processing.recording.Recording`` is a complete store; ``GrowingStore`` is a match still being
played, appended to as frames are made and read the same way while its end moves.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol

import msgpack
import numpy as np
import zstandard

from processing.frames import Frame


class FrameStore(Protocol):
    """Frames in increasing tick order, addressed by index, as msgpack bytes encoded once."""

    name: str
    meta: dict[str, Any]  # map, tickrate, teams, roster, round_starts, first/last tick, ...

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


_ZSTD_LEVEL = 3
_CACHED_CHUNKS = 8


class GrowingStore:
    """A live match's frames in memory: sealed ~1 s chunks kept zstd-compressed, like a recording.

    A 30-minute match at 64 frames/s is ~115,000 frames of ~3 KB; compressed chunks keep that
    near 25 MB instead of 350 MB. Only the newest, unsealed chunk is held as plain bytes.
    """

    def __init__(self, name: str, meta: dict[str, Any], frames_per_chunk: int = 64) -> None:
        self.name = name
        self.meta = {
            **meta,
            "first_tick": None,
            "last_tick": None,
            "frame_count": 0,
            "duration_s": 0.0,
            "round_starts": [],
            "roster": [],
        }
        self.frames_per_chunk = frames_per_chunk
        self._ticks = np.zeros(4096, dtype=np.int64)
        self._lengths = np.zeros(4096, dtype=np.int64)
        self._count = 0
        self._sealed: list[bytes] = []  # compressed chunks of frames_per_chunk frames each
        self._open: list[bytes] = []  # frames of the chunk being filled
        self._roster: dict[int, dict[str, Any]] = {}
        self._compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
        self._decompressor = zstandard.ZstdDecompressor()
        self._cache: OrderedDict[int, list[bytes]] = OrderedDict()
        self._complete = False

    # -- writing ---------------------------------------------------------------------------

    def append(self, frame: Frame) -> bytes | None:
        """Add the next frame; returns a chunk's compressed bytes when this frame sealed one."""
        if self._complete:
            raise ValueError(f"{self.name}: the match has ended; no more frames")
        tick = int(frame["tick"])
        if self._count and tick <= self._ticks[self._count - 1]:
            raise ValueError(f"frames out of order: tick {tick} after {self.meta['last_tick']}")
        encoded = msgpack.packb(frame)
        if self._count == len(self._ticks):
            self._ticks = np.concatenate((self._ticks, np.zeros_like(self._ticks)))
            self._lengths = np.concatenate((self._lengths, np.zeros_like(self._lengths)))
        self._ticks[self._count] = tick
        self._lengths[self._count] = len(encoded)
        self._count += 1
        self._open.append(encoded)
        self._describe(frame, tick)
        if len(self._open) < self.frames_per_chunk:
            return None
        chunk = self._compressor.compress(b"".join(self._open))
        self._sealed.append(chunk)
        self._open = []
        return chunk

    def _describe(self, frame: Frame, tick: int) -> None:
        meta = self.meta
        if meta["first_tick"] is None:
            meta["first_tick"] = tick
        meta["last_tick"] = tick
        meta["frame_count"] = self._count
        meta["duration_s"] = round((tick - meta["first_tick"]) / float(meta["tickrate"]), 3)
        if frame.get("round_start"):
            meta["round_starts"].append(tick)
        for player in frame.get("players") or ():
            if player["sid"] not in self._roster:
                entry = {"sid": player["sid"], "name": player["name"], "team": player["team"]}
                self._roster[player["sid"]] = entry
                meta["roster"].append(entry)

    def finish(self) -> None:
        """No more frames: readers see a complete store (its end stops moving)."""
        self._complete = True

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

    def frames_bytes(self, start: int, stop: int) -> bytes:
        start, stop = max(0, start), min(stop, self._count)
        per, parts = self.frames_per_chunk, []
        index = start
        while index < stop:
            chunk, offset = divmod(index, per)
            frames = self._chunk_frames(chunk)
            take = min(stop - index, per - offset)
            parts.extend(frames[offset : offset + take])
            index += take
        return b"".join(parts)

    def frames_within(self, start: int, max_frames: int, max_bytes: int) -> int:
        sizes = np.cumsum(self._lengths[start : min(start + max_frames, self._count)])
        return max(1, int(np.searchsorted(sizes, max_bytes, side="right")))

    def index_at_or_after(self, tick: int) -> int:
        return int(np.searchsorted(self.ticks, tick, side="left"))

    def frame(self, index: int) -> Frame:
        return msgpack.unpackb(self.frames_bytes(index, index + 1))

    def frames(self, start: int, stop: int) -> list[Frame]:
        unpacker = msgpack.Unpacker()
        unpacker.feed(self.frames_bytes(start, stop))
        return list(unpacker)

    def sealed_chunks(self) -> list[bytes]:
        """The compressed chunks so far (for the journal that survives a restart)."""
        return list(self._sealed)
