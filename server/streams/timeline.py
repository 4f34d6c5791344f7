"""A recorded match played as a live stream: which frame is "now", derived from wall time alone.

The playhead is ``floor((now - epoch) * rate)``, so every subscriber (and every server process
started with the same recording and epoch) agrees on it without talking to anyone.
Sequence numbers (``seq``) count frames since the epoch and keep growing across loops.
Implements ``LiveFeed`` (server/streams/feed.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from processing.frames import Frame
from processing.recording import Recording


@dataclass(frozen=True)
class Timeline:
    store: Recording
    epoch: float  # Unix time of seq 0
    every: int = 1  # play every Nth recorded frame (the old ``-p``)
    loop: bool = False
    pushed = False  # every frame exists already; each is due at its time

    @property
    def rate(self) -> float:
        """Frames per second this stream plays at; real time is preserved when ``every`` > 1."""
        return float(self.store.meta["tickrate"]) / self.every

    @property
    def lap_length(self) -> int:
        """Frames in one pass through the recording."""
        return math.ceil(self.store.frame_count / self.every)

    @property
    def stale(self) -> bool:
        return False  # a recording never goes quiet

    @property
    def stale_since(self) -> float | None:
        return None

    def depicted_time(self, seq: int) -> float | None:
        return None  # a recording shows the past: no end-to-end delay to measure

    def playhead(self, now: float) -> int:
        """Seq of the frame whose time has come (lap_length once a non-looping stream ended)."""
        seq = max(0, math.floor((now - self.epoch) * self.rate))
        return seq if self.loop else min(seq, self.lap_length)

    def ended(self, seq: int) -> bool:
        return not self.loop and seq >= self.lap_length

    def end(self) -> int | None:
        """Seq one past the last frame, or None for a looping stream."""
        return None if self.loop else self.lap_length

    def available(self) -> int | None:
        return self.end()  # every frame of a recording exists already

    def oldest(self) -> int:
        return 0

    def index(self, seq: int) -> int:
        """Recording frame index played at ``seq``."""
        return (seq % self.lap_length) * self.every

    def time_of(self, seq: int) -> float:
        return self.epoch + seq / self.rate

    def frames_bytes(self, start: int, stop: int) -> bytes:
        recording = self.store
        if self.every == 1:
            parts, seq = [], start
            while seq < stop:  # split where a looping stream wraps around
                index = self.index(seq)
                run = min(stop - seq, recording.frame_count - index)
                parts.append(recording.frames_bytes(index, index + run))
                seq += run
            return b"".join(parts)
        return b"".join(recording.frame_bytes(self.index(s)) for s in range(start, stop))

    def frame(self, seq: int) -> Frame:
        return self.store.frame(self.index(seq))

    def tick_of(self, seq: int) -> int:
        return int(self.store.ticks[self.index(seq)])

    def describe(self) -> dict[str, Any]:
        return {
            "source": "recording",
            "recording": self.store.name.rsplit("/", 1)[-1],
            "every": self.every,
            "loop": self.loop,
            "stale": False,
        }
