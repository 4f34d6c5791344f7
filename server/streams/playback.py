"""A per-client playback of a stream's frames: play, pause, speed, seek, step, with a buffer.

Pure state machine: every method takes ``now`` and returns the messages to send, so it runs in
tests without sockets or sleeping. Position moves in tick space (``tick = anchor_tick +
elapsed * tickrate * speed``), so gaps in a demo's ticks keep their real duration. ``gen``
grows on every seek or step: frames of an older generation in a client's buffer are stale.

The frames may still be growing (a live match opened for replay): playing into the newest
frame holds the position at that live edge, and play goes on as new frames arrive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from server import protocol
from server.streams.encoding import (
    PLAIN,
    ConnectionOptions,
    encode_ticks,
    first_kept,
    shape_frames,
)
from server.streams.store import FrameStore

MIN_SPEED, MAX_SPEED = 0.25, 8.0
BURST = 8
EDGE_POLL_S = 0.05  # at the live edge of a growing store, look for new frames this often


class Playback:
    def __init__(
        self,
        stream_id: str,
        store: FrameStore,
        buffer: int,
        now: float,
        on_frames: Callable[[int], None] = lambda frames: None,
        options: ConnectionOptions = PLAIN,
    ) -> None:
        self.id = stream_id
        self.store = store
        self.rate = float(store.meta["tickrate"])
        self.buffer = buffer
        self.speed = 1.0
        self.paused = True
        self.gen = 0
        self.next = 0  # first frame index not yet sent in this generation
        self.on_frames = on_frames  # told how many frames each message carries
        self.options = options  # encoding and shape of this client's ticks
        self.ended = False  # played to the last frame (seeking there is not ending)
        self.at_edge = False  # holding at the newest frame of a growing store
        self._anchor_tick = float(self.ticks[0])
        self._anchor_time = now

    @property
    def ticks(self):
        return self.store.ticks  # re-read: a growing store's array is replaced as it grows

    # -- position --------------------------------------------------------------------------

    def position_tick(self, now: float) -> float:
        if self.paused:
            return self._anchor_tick
        return self._anchor_tick + (now - self._anchor_time) * self.rate * self.speed

    def current(self, now: float) -> int:
        """Index of the frame on screen now: the last one whose tick has been reached."""
        index = int(np.searchsorted(self.ticks, self.position_tick(now), side="right")) - 1
        return min(max(index, 0), len(self.ticks) - 1)

    def _anchor(self, index: int, now: float) -> None:
        self._anchor_tick = float(self.ticks[index])
        self._anchor_time = now

    def state(self, now: float) -> bytes:
        index = self.current(now)
        return protocol.pack(
            {
                "type": "state",
                "stream": self.id,
                "state": "ended" if self.ended else "paused" if self.paused else "playing",
                "speed": self.speed,
                "tick": int(self.ticks[index]),
                "seq": index,
                "gen": self.gen,
                "buffer": self.buffer,
                "last_tick": int(self.ticks[-1]),
                "live": not self.store.complete,
                "live_edge": self.at_edge,
            }
        )

    # -- commands --------------------------------------------------------------------------

    def play(self, now: float) -> list[bytes]:
        if self.ended:
            return self.seek_index(0, now, keep_paused=False)  # play again from the start
        if self.paused:
            self._anchor_tick = self.position_tick(now)
            self._anchor_time = now
            self.paused = False
        return [self.state(now), *self.poll(now)[0]]

    def pause(self, now: float) -> list[bytes]:
        if not self.paused:
            self._anchor_tick = self.position_tick(now)
            self._anchor_time = now
            self.paused = True
        return [self.state(now)]

    def set_speed(self, speed: float, now: float) -> list[bytes]:
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise protocol.ProtocolError(
                "bad_speed", f"speed must be {MIN_SPEED} to {MAX_SPEED}, got {speed}"
            )
        self._anchor_tick = self.position_tick(now)
        self._anchor_time = now
        self.speed = float(speed)
        return [self.state(now)]

    def set_buffer(self, buffer: int, now: float) -> list[bytes]:
        self.buffer = buffer
        return [self.state(now), *self.poll(now)[0]]

    def seek_tick(self, tick: int, now: float) -> list[bytes]:
        meta = self.store.meta
        if not meta["first_tick"] <= tick <= meta["last_tick"]:
            raise protocol.ProtocolError(
                "out_of_range",
                f"tick {tick} is outside the recording ({meta['first_tick']}..{meta['last_tick']})",
            )
        # The frame on screen at ``tick`` is the last one at or before it.
        index = int(np.searchsorted(self.ticks, tick, side="right")) - 1
        return self.seek_index(index, now, keep_paused=True)

    def seek_time(self, seconds: float, now: float) -> list[bytes]:
        meta = self.store.meta
        duration = (meta["last_tick"] - meta["first_tick"]) / self.rate
        if not 0 <= seconds <= duration:  # checked before rounding: 1e308 s has no tick
            raise protocol.ProtocolError(
                "out_of_range", f"time {seconds} s is outside the recording (0..{duration:.3f} s)"
            )
        return self.seek_tick(
            min(meta["first_tick"] + round(seconds * self.rate), meta["last_tick"]), now
        )

    def seek_round(self, number: int, now: float) -> list[bytes]:
        starts = self.store.meta["round_starts"]
        if not 1 <= number <= len(starts):
            raise protocol.ProtocolError(
                "out_of_range", f"round {number} does not exist (1..{len(starts)})"
            )
        return self.seek_tick(starts[number - 1], now)

    def step(self, delta: int, now: float) -> list[bytes]:
        index = min(max(self.current(now) + delta, 0), len(self.ticks) - 1)
        self.paused = True
        return self.seek_index(index, now, keep_paused=True)

    def seek_index(self, index: int, now: float, keep_paused: bool) -> list[bytes]:
        """Jump to frame ``index``: a new generation whose first frame goes out at once."""
        self.gen += 1
        self.ended = self.at_edge = False
        self.paused = self.paused if keep_paused else False
        self._anchor(index, now)
        self.next = index
        messages = [self.state(now)]
        if self.paused:
            messages.append(self._frames(index, index + 1, whole=True))
        else:
            messages.extend(self.poll(now)[0])
        return messages

    # -- pacing ----------------------------------------------------------------------------

    def poll(self, now: float) -> tuple[list[bytes], float | None]:
        """Frames now allowed into the client's buffer, and when to poll again (None: idle)."""
        count = len(self.ticks)
        if self.paused:
            return [], None
        current = self.current(now)
        allowed = min(count, current + 1 + self.buffer)
        messages = []
        while self.next < allowed:
            stop = min(allowed, self.next + 4 * BURST)
            message = self._frames(self.next, stop)
            if message:
                messages.append(message)
        if self.next >= count:
            if current == count - 1 and not self.store.complete:  # at the live edge: hold
                return messages + self._hold_at_edge(count - 1, now), now + EDGE_POLL_S
            if current == count - 1:  # played to the end
                self.paused = self.ended = True
                self._anchor(count - 1, now)
                messages.append(protocol.pack({"type": "end", "stream": self.id, "seq": count}))
                messages.append(self.state(now))
                return messages, None
            return messages, self._due(count - 1)
        if self.at_edge:
            self.at_edge = False
            messages.append(self.state(now))
        # Wake when a whole burst fits: when frame ``next + BURST - 1 - buffer`` is on screen.
        wake_index = min(count - 1, max(current + 1, self.next + BURST - 1 - self.buffer))
        return messages, self._due(wake_index)

    def _hold_at_edge(self, index: int, now: float) -> list[bytes]:
        """Keep the position on the newest frame until the next one arrives."""
        if self.position_tick(now) > float(self.ticks[index]):
            self._anchor(index, now)
        if self.at_edge:
            return []
        self.at_edge = True
        return [self.state(now)]

    def _due(self, index: int) -> float:
        return self._anchor_time + (float(self.ticks[index]) - self._anchor_tick) / (
            self.rate * self.speed
        )

    def _frames(self, start: int, stop: int, whole: bool = False) -> bytes:
        """The ``ticks`` message of frames [start, stop) in this client's shape and encoding
        (b"" when its every-Nth shape keeps none); ``whole``: the frame a seek lands on, sent
        whatever the every-Nth."""
        self.next = max(self.next, stop)
        shape = self.options.shape
        if whole and shape.every > 1:
            shape = replace(shape, every=1)
        first = first_kept(start, shape.every)
        count = len(range(first, stop, shape.every))
        if count == 0:
            return b""
        self.on_frames(count)
        frames, _ = shape_frames(self.store.frames_bytes(start, stop), stop - start, shape, start)
        fields = {"stream": self.id, "seq": first, "gen": self.gen}
        if shape.every > 1:
            fields["every"] = shape.every
        return encode_ticks(fields, count, frames, self.options.encoding)
