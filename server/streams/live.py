"""Live streams: one shared playhead, encode once, send many, with per-subscriber flow control.

``LiveStream.step(now)`` is the whole stream logic and touches no socket or clock itself: it
writes to Sinks and is driven by ``run()`` (one asyncio task per stream) or, in tests, by a fake
clock. Each subscriber says how many frames ahead of the playhead it wants (its buffer); the
stream sends aligned bursts of ``burst`` frames as soon as they fit in that window, so
subscribers with the same buffer share the very same bytes object.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server import protocol
from server.metrics import Metrics
from server.streams.sink import Sink, write_all
from server.streams.timeline import Timeline

log = logging.getLogger(__name__)

BLOCKED_POLL_S = 0.05  # how often blocked subscribers are checked for having drained


@dataclass(frozen=True)
class FlowLimits:
    """Bounds that keep one slow client from costing memory or anyone else's pace."""

    high_water: int = 256 * 1024  # bytes queued for a client before it is considered blocked
    low_water: int = 64 * 1024  # a blocked client resumes below this
    skip_behind_s: float = 1.0  # a client this far behind once it drains jumps to the edge
    close_after_s: float = 10.0  # a client blocked this long is closed
    max_buffer_s: float = 30.0  # largest buffer a client may ask for
    resume_window_s: float = 30.0  # how far back a reconnecting subscriber can resume


@dataclass(eq=False)
class LiveSubscriber:
    sink: Sink
    buffer: int  # frames ahead of the playhead this client accepts
    next_seq: int  # first seq not yet sent
    fresh: bool = True  # just joined or skipped: deliver the current frame at once
    catch_up_to: int = -1  # resuming: lag up to this seq is expected, not a reason to skip
    blocked_since: float | None = None
    due: int = -1  # playhead at which this subscriber is next looked at
    done: bool = False


class LiveStream:
    def __init__(
        self,
        stream_id: str,
        timeline: Timeline,
        metrics: Metrics,
        burst: int = 8,
        limits: FlowLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.id = stream_id
        self.timeline = timeline
        self.metrics = metrics
        self.burst = burst
        self.limits = limits or FlowLimits()
        self.clock = clock
        self.subscribers: set[LiveSubscriber] = set()
        self._due: dict[int, list[LiveSubscriber]] = {}
        self._blocked: set[LiveSubscriber] = set()
        self._last_step = -1
        self._cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        # Messages of the current step, by seq range: (bytes, the sinks they go to).
        self._outbox: dict[tuple[int, int], tuple[bytes, list[Sink]]] = {}
        end = timeline.end()
        self._end_message = protocol.pack({"type": "end", "stream": stream_id, "seq": end})
        self._wake = asyncio.Event()

    # -- catalog ---------------------------------------------------------------------------

    def describe(self, now: float) -> dict[str, Any]:
        meta = self.timeline.recording.meta
        playhead = self.timeline.playhead(now)
        current = None
        if not self.timeline.ended(playhead):
            current = int(self.timeline.recording.ticks[self.timeline.index(playhead)])
        return {
            "id": self.id,
            "kind": "live",
            "path": f"/live/{self.id}",
            "recording": self.timeline.recording.name.rsplit("/", 1)[-1],
            "map": meta["map"],
            "tickrate": meta["tickrate"],
            "rate": self.timeline.rate,
            "every": self.timeline.every,
            "loop": self.timeline.loop,
            "first_tick": meta["first_tick"],
            "last_tick": meta["last_tick"],
            "frame_count": meta["frame_count"],
            "current_tick": current,
            "playhead_seq": playhead,
            "epoch": self.timeline.epoch,
            "burst": self.burst,
            "synthetic": meta["synthetic"],
            "subscribers": len(self.subscribers),
        }

    def hello(self, now: float) -> bytes:
        meta = self.timeline.recording.meta
        return protocol.pack(
            {
                "type": "hello",
                "server": protocol.SERVER_NAME,
                "protocol": protocol.PROTOCOL_VERSION,
                "server_time": now,
                "stream": self.describe(now),
                "teams": meta["teams"],
                "roster": meta["roster"],
                "round_starts": meta["round_starts"],
                "max_buffer": self.max_buffer,
            }
        )

    @property
    def max_buffer(self) -> int:
        return int(self.limits.max_buffer_s * self.timeline.rate)

    # -- subscribers -----------------------------------------------------------------------

    def subscribe(self, sink: Sink, buffer: int, resume_seq: int | None = None) -> LiveSubscriber:
        """Add a subscriber at the live edge, or at ``resume_seq`` when that is still possible.

        A ``resume_seq`` older than the resume window, or one this stream's timeline never
        reached (the server restarted with a new epoch), starts at the live edge with a skip.
        """
        self.check_request(buffer, resume_seq)
        now = self.clock()
        playhead = self.timeline.playhead(now)
        sub = LiveSubscriber(sink=sink, buffer=buffer, next_seq=playhead)
        if resume_seq is not None:
            window = int(self.limits.resume_window_s * self.timeline.rate)
            if resume_seq > playhead + self.max_buffer + 1:
                self._notify_skip(sub, resume_seq, playhead, "resume_unknown")
            elif playhead - resume_seq > window:
                self._notify_skip(sub, resume_seq, playhead, "resume_window_exceeded")
            else:
                sub.next_seq, sub.catch_up_to, sub.fresh = resume_seq, playhead, False
        self.subscribers.add(sub)
        self._service(sub, playhead, now)
        self._flush()
        self._wake.set()
        return sub

    def check_request(self, buffer: int, resume_seq: int | None = None) -> None:
        """Refuse a bad buffer or resume_seq before anything about the subscription changes."""
        if not 0 <= buffer <= self.max_buffer:
            raise protocol.ProtocolError(
                "bad_field", f"buffer must be 0..{self.max_buffer} frames, got {buffer}"
            )
        if resume_seq is not None and resume_seq < 0:
            raise protocol.ProtocolError("bad_field", f"resume_seq must be >= 0, got {resume_seq}")

    def set_buffer(self, sub: LiveSubscriber, buffer: int) -> None:
        self.check_request(buffer)
        sub.buffer = buffer
        now = self.clock()
        self._service(sub, self.timeline.playhead(now), now)
        self._flush()

    def unsubscribe(self, sub: LiveSubscriber) -> None:
        sub.done = True
        self.subscribers.discard(sub)
        self._blocked.discard(sub)

    # -- the stream logic ------------------------------------------------------------------

    def step(self, now: float) -> None:
        """Serve every subscriber whose next burst became due by ``now``."""
        playhead = self.timeline.playhead(now)
        if playhead < self._last_step:  # the clock went backwards; wait for it
            return
        blocked = list(self._blocked)  # before the buckets: a sub blocked now waits a step
        if playhead - self._last_step > 4 * len(self._due) + 64:
            keys = sorted(k for k in self._due if k <= playhead)
        else:
            keys = range(self._last_step + 1, playhead + 1)
        self._last_step = playhead
        for sub in blocked:
            self._service(sub, playhead, now)
        for key in keys:
            for sub in self._due.pop(key, ()):
                if sub.due == key and not sub.done:
                    self._service(sub, playhead, now)
        self._flush()

    def _flush(self) -> None:
        """Write this step's bursts: each to all its subscribers at once, in seq order.

        Every subscriber's bursts are in increasing seq order, so sorting by seq keeps each
        connection's messages in order while one ``broadcast()`` serves a whole group.
        """
        for key in sorted(self._outbox):
            data, sinks = self._outbox[key]
            write_all(sinks, data)
        self._outbox.clear()

    def _service(self, sub: LiveSubscriber, playhead: int, now: float) -> None:
        limits = self.limits
        if sub.done:
            return
        if not sub.sink.is_open:
            self.unsubscribe(sub)
            return
        if sub.blocked_since is not None:
            if sub.sink.buffered() > limits.low_water:
                if now - sub.blocked_since > limits.close_after_s:
                    self._close_slow(sub)
                return
            sub.blocked_since = None
            self._blocked.discard(sub)
            behind = playhead - sub.next_seq
            if behind > limits.skip_behind_s * self.timeline.rate and (
                sub.next_seq >= sub.catch_up_to
            ):
                self._notify_skip(sub, sub.next_seq, playhead, "slow_consumer")
        end = self.timeline.end()
        allowed = playhead + 1 + sub.buffer
        if end is not None:
            allowed = min(allowed, end)
        queued = sub.sink.buffered()  # plus what this call adds to the outbox
        sent_any = False
        while sub.next_seq < allowed:
            stop = (sub.next_seq // self.burst + 1) * self.burst
            if end is not None:
                stop = min(stop, end)
            if stop > allowed:
                if sent_any or not sub.fresh:
                    break
                stop = allowed
            queued += self._send(sub, sub.next_seq, stop, now)
            sent_any = True
            if queued >= limits.high_water:
                sub.blocked_since = now
                self._blocked.add(sub)
                return
        sub.fresh = False
        if end is not None and sub.next_seq >= end:
            self._queue((end, end), self._end_message, sub.sink)  # after its last burst
            self.unsubscribe(sub)
            return
        next_stop = (sub.next_seq // self.burst + 1) * self.burst
        if end is not None:
            next_stop = min(next_stop, end)
        # Never at or before the last step: those buckets are not visited again.
        sub.due = max(playhead + 1, self._last_step + 1, next_stop - 1 - sub.buffer)
        self._due.setdefault(sub.due, []).append(sub)

    def _send(self, sub: LiveSubscriber, start: int, stop: int, now: float) -> int:
        """Queue frames [start, stop) for ``sub``; returns the message size."""
        data = self.burst_bytes(start, stop)
        self._queue((start, stop), data, sub.sink)
        sub.next_seq = stop
        self.metrics.sent(self.id, stop - start, len(data))
        due_time = self.timeline.time_of(max(start, stop - 1 - sub.buffer))
        self.metrics.observe_lag(max(0.0, now - due_time))
        return len(data)

    def _queue(self, key: tuple[int, int], data: bytes, sink: Sink) -> None:
        entry = self._outbox.get(key)
        if entry is None:
            self._outbox[key] = (data, [sink])
        else:
            entry[1].append(sink)

    def _notify_skip(self, sub: LiveSubscriber, from_seq: int, to_seq: int, reason: str) -> None:
        """Move ``sub`` to ``to_seq`` and tell it how many frames it will never get."""
        skipped = None if reason == "resume_unknown" else to_seq - from_seq
        sub.sink.write(
            protocol.pack(
                {
                    "type": "skip",
                    "stream": self.id,
                    "from_seq": from_seq,
                    "to_seq": to_seq,
                    "skipped": skipped,
                    "reason": reason,
                }
            )
        )
        sub.next_seq, sub.fresh = to_seq, True
        self.metrics.skips[self.id] += 1
        self.metrics.skipped_frames[self.id] += skipped or 0

    def _close_slow(self, sub: LiveSubscriber) -> None:
        log.info(
            "stream %s: closing a subscriber stuck for %.0f s", self.id, self.limits.close_after_s
        )
        self.metrics.slow_disconnects[self.id] += 1
        self.unsubscribe(sub)
        sub.sink.close(protocol.CLOSE_SLOW_CONSUMER, "too slow: could not keep up with the stream")

    # -- encode once -----------------------------------------------------------------------

    def burst_bytes(self, start: int, stop: int) -> bytes:
        """The ``ticks`` message for seqs [start, stop), built once and shared by everyone."""
        key = (start, stop)
        data = self._cache.get(key)
        if data is None:
            data = protocol.ticks_envelope(self.id, start, stop - start, self._frames(start, stop))
            self._cache[key] = data
            if len(self._cache) > 256:
                self._cache.popitem(last=False)
        return data

    def _frames(self, start: int, stop: int) -> bytes:
        recording, timeline = self.timeline.recording, self.timeline
        if timeline.every == 1:
            parts, seq = [], start
            while seq < stop:  # split where a looping stream wraps around
                index = timeline.index(seq)
                run = min(stop - seq, recording.frame_count - index)
                parts.append(recording.frames_bytes(index, index + run))
                seq += run
            return b"".join(parts)
        return b"".join(recording.frame_bytes(timeline.index(s)) for s in range(start, stop))

    # -- driver ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Step at every frame time until cancelled."""
        timeline = self.timeline
        while True:
            now = self.clock()
            self.step(now)
            playhead = timeline.playhead(now)
            if timeline.ended(playhead) and not self._blocked:
                self._wake.clear()
                await self._wake.wait()  # a finished stream sleeps until someone subscribes
                continue
            if timeline.ended(playhead):  # only blocked subscribers are left to look after
                delay = BLOCKED_POLL_S
            else:
                delay = timeline.time_of(playhead + 1) - self.clock()
                if self._blocked:
                    delay = min(delay, BLOCKED_POLL_S)
            await asyncio.sleep(max(0.0, delay))
