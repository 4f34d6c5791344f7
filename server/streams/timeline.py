"""A live stream's clock: which frame of the recording is "now", derived from wall time alone.

The playhead is ``floor((now - epoch) * rate)``, so every subscriber (and every server process
started with the same recording and epoch) agrees on it without talking to anyone.
Sequence numbers (``seq``) count frames since the epoch and keep growing across loops.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from processing.recording import Recording


@dataclass(frozen=True)
class Timeline:
    recording: Recording
    epoch: float  # Unix time of seq 0
    every: int = 1  # play every Nth recorded frame (the old ``-p``)
    loop: bool = False

    @property
    def rate(self) -> float:
        """Frames per second this stream plays at; real time is preserved when ``every`` > 1."""
        return float(self.recording.meta["tickrate"]) / self.every

    @property
    def lap_length(self) -> int:
        """Frames in one pass through the recording."""
        return math.ceil(self.recording.frame_count / self.every)

    def playhead(self, now: float) -> int:
        """Seq of the frame whose time has come (lap_length once a non-looping stream ended)."""
        seq = max(0, math.floor((now - self.epoch) * self.rate))
        return seq if self.loop else min(seq, self.lap_length)

    def ended(self, seq: int) -> bool:
        return not self.loop and seq >= self.lap_length

    def end(self) -> int | None:
        """Seq one past the last frame, or None for a looping stream."""
        return None if self.loop else self.lap_length

    def index(self, seq: int) -> int:
        """Recording frame index played at ``seq``."""
        return (seq % self.lap_length) * self.every

    def time_of(self, seq: int) -> float:
        return self.epoch + seq / self.rate


def steady_wall_clock() -> Callable[[], float]:
    """Unix time that never jumps: read once, then advanced by the monotonic clock.

    An NTP step would otherwise move every playhead at once (backwards: streams stall).
    """
    wall0, mono0 = time.time(), time.monotonic()
    return lambda: wall0 + (time.monotonic() - mono0)
