"""Where a live stream's frames come from, by seq: a recording on a clock, or a match in play.

``LiveStream`` (fan-out) and the legacy adapter only see this interface. ``Timeline``
(server/streams/timeline.py) plays a finished recording against the clock; ``GrowingFeed``
serves a match whose frames are appended as they are made (GSI ingest, or a broker reader on
another replica). Both are pure: time comes in as ``now``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from processing.frames import Frame
from server.streams.store import FrameStore, GrowingStore, room_for


class LiveFeed(Protocol):
    store: FrameStore
    epoch: float | str  # names the stream's incarnation (a recording's: the Unix time of seq 0)
    pushed: bool  # frames arrive by push (wake the driver), not due by the clock

    @property
    def rate(self) -> float:
        """Frames per second the stream plays at."""

    def playhead(self, now: float) -> int:
        """Seq of the frame on screen now (the live edge); -1 before the first frame."""

    def available(self) -> int | None:
        """One past the newest seq that exists now (None: every seq exists, a looping clock)."""

    def oldest(self) -> int:
        """The first seq that exists (frames before it were never had, or were lost)."""

    def end(self) -> int | None:
        """One past the last seq once the stream is over, else None."""

    def time_of(self, seq: int) -> float:
        """Unix time frame ``seq`` is (or was) due on screen."""

    def frames_bytes(self, start: int, stop: int) -> bytes:
        """Msgpack bytes of seqs [start, stop), concatenated."""

    def frame(self, seq: int) -> Frame: ...

    def tick_of(self, seq: int) -> int:
        """Game tick of the frame at ``seq`` (which must exist)."""

    @property
    def stale(self) -> bool:
        """The source stopped sending (a live feed that went quiet)."""

    @property
    def stale_since(self) -> float | None:
        """Unix time the source stopped sending, while it is stale; else None."""

    def depicted_time(self, seq: int) -> float | None:
        """When (Unix time) the moment frame ``seq`` shows happened: a match in play's frames
        trail the game, which the end-to-end delay measures. None when that means nothing (a
        recording on a clock)."""

    def describe(self) -> dict[str, Any]:
        """Source-specific fields for the catalog and ``hello``."""


class GrowingFeed:
    """A match in play: frames pushed as they are made, seq = ``base_seq`` + store index.

    Frames are pushed by whoever makes them (``append``); the playhead is the newest frame, so
    a subscriber's buffer cannot run ahead of the game. A replica that joins a match late (or
    after its broker lost frames) starts at ``base_seq`` > 0, so every replica numbers a frame
    alike. ``depicted_time`` is the moment (on the ingest's clock) a frame shows, for the
    end-to-end delay.

    A store that already holds frames (a replica seeded with the match so far) gives them the
    times the epoch promises: frame ``s`` due at ``epoch + s / rate``.
    """

    pushed = True

    def __init__(self, store: GrowingStore, epoch: float | str, base_seq: int = 0) -> None:
        self.store = store
        self.epoch = epoch
        self.base_seq = base_seq
        size = max(4096, store.frame_count)
        self._made_at = np.zeros(size, dtype=np.float64)
        self._depicts = np.zeros(size, dtype=np.float64)
        if store.frame_count and isinstance(epoch, float | int):
            seqs = np.arange(base_seq, base_seq + store.frame_count, dtype=np.float64)
            self._made_at[: store.frame_count] = float(epoch) + seqs / self.rate
            self._depicts[: store.frame_count] = self._made_at[: store.frame_count]
        self.stale_since: float | None = None

    @property
    def rate(self) -> float:
        return float(self.store.meta["tickrate"])

    def append(self, frame: Frame, made_at: float, depicts: float) -> bytes | None:
        """Add the next frame (see ``GrowingStore.append`` for the return value)."""
        index = self.store.frame_count
        self._made_at = room_for(self._made_at, index + 1)
        self._depicts = room_for(self._depicts, index + 1)
        chunk = self.store.append(frame)
        self._made_at[index], self._depicts[index] = made_at, depicts
        return chunk

    def set_stale(self, stale: bool, now: float) -> bool:
        """Mark the feed quiet or back; True when that changed."""
        if stale == self.stale:
            return False
        self.stale_since = now if stale else None
        return True

    @property
    def stale(self) -> bool:
        return self.stale_since is not None

    def playhead(self, now: float) -> int:
        count = self.store.frame_count
        return self.base_seq + (count if self.store.complete else count - 1)  # at the end once over

    def available(self) -> int:
        return self.base_seq + self.store.frame_count

    def oldest(self) -> int:
        return self.base_seq

    def end(self) -> int | None:
        return self.available() if self.store.complete else None

    def time_of(self, seq: int) -> float:
        index = min(max(seq - self.base_seq, 0), max(self.store.frame_count - 1, 0))
        return float(self._made_at[index])

    def depicted_time(self, seq: int) -> float | None:
        return float(self._depicts[seq - self.base_seq])

    def frames_bytes(self, start: int, stop: int) -> bytes:
        return self.store.frames_bytes(start - self.base_seq, stop - self.base_seq)

    def frame(self, seq: int) -> Frame:
        return self.store.frame(seq - self.base_seq)

    def tick_of(self, seq: int) -> int:
        return int(self.store.ticks[seq - self.base_seq])

    def describe(self) -> dict[str, Any]:
        return {
            "source": "gsi",  # a match being played, ingested from the game's GSI posts
            "stale": self.stale,
            "stale_since": self.stale_since,
            "ended": self.store.complete,
        }
