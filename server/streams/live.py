"""Live streams: one shared playhead, encode once, send many, with per-subscriber flow control.

``LiveStream`` is the whole stream logic as a state machine: every call takes ``now`` and
returns an ``Output`` (which bytes go to which subscribers, in order, and which connections to
close), the way websockets' protocol core returns data to send. It never touches a socket, a
clock or an event loop; server/live_driver.py performs the output and owns the timer.

Each subscriber says how many frames ahead of the playhead it wants (its buffer); the stream
sends aligned bursts of ``burst`` frames as soon as they fit in that window, so subscribers with
the same buffer share the very same bytes object. Frames come from a ``LiveFeed``: a recording
on a clock or a match in play.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from server import protocol
from server.metrics import Metrics
from server.streams.encoding import (
    DEFLATE_LEVEL,
    PLAIN,
    BurstCache,
    ConnectionOptions,
    encode_ticks,
    first_kept,
    shape_frames,
)
from server.streams.feed import LiveFeed
from server.streams.sink import Sink

log = logging.getLogger(__name__)

BLOCKED_POLL_S = 0.05  # how often blocked subscribers are checked for having drained

# Outbox order within one output: stale notices, then by seq (a skip before the bursts that
# follow it, bursts, then the end).
_NOTICE, _SKIP, _BURST, _END = range(4)


@dataclass(frozen=True)
class FlowLimits:
    """Bounds that keep one slow client from costing memory or anyone else's pace."""

    high_water: int = 256 * 1024  # bytes queued for a client before it is considered blocked
    low_water: int = 64 * 1024  # a blocked client resumes below this
    skip_behind_s: float = 1.0  # a client this far behind once it drains jumps to the edge
    close_after_s: float = 10.0  # a client blocked this long is closed
    max_buffer_s: float = 30.0  # largest buffer a client may ask for
    resume_window_s: float = 30.0  # how far back a reconnecting subscriber can resume


@dataclass
class Output:
    """What one call decided: messages for groups of sinks in send order, and closes."""

    sends: list[tuple[bytes, list[Sink]]] = field(default_factory=list)
    closes: list[tuple[Sink, int, str]] = field(default_factory=list)


@dataclass(eq=False)
class LiveSubscriber:
    sink: Sink
    buffer: int  # frames ahead of the playhead this client accepts
    next_seq: int  # first seq not yet sent
    options: ConnectionOptions = PLAIN  # encoding and shape of its ticks
    fresh: bool = True  # just joined or skipped: deliver the current frame at once
    catch_up_to: int = -1  # resuming: lag up to this seq is expected, not a reason to skip
    blocked_since: float | None = None
    due: int = -1  # playhead at which this subscriber is next looked at
    done: bool = False


class LiveStream:
    def __init__(
        self,
        stream_id: str,
        feed: LiveFeed,
        metrics: Metrics,
        burst: int = 8,
        limits: FlowLimits | None = None,
    ) -> None:
        self.id = stream_id
        self.feed = feed
        self.metrics = metrics
        self.burst = burst
        self.limits = limits or FlowLimits()
        self.subscribers: set[LiveSubscriber] = set()
        self._due: dict[int, list[LiveSubscriber]] = {}
        self._blocked: set[LiveSubscriber] = set()
        self._last_step = -1
        self._stale_told = False
        self._cache = BurstCache()
        self._variants: dict[ConnectionOptions, int] = {}  # outbox keys per message variant
        self._outbox: dict[tuple[int, ...], tuple[bytes, list[Sink]]] = {}
        self._closes: list[tuple[Sink, int, str]] = []

    # -- catalog ---------------------------------------------------------------------------

    def describe(self, now: float) -> dict[str, Any]:
        feed = self.feed
        meta = feed.store.meta
        playhead = feed.playhead(now)
        available, end = feed.available(), feed.end()
        current = None
        if playhead >= 0 and (available is None or playhead < available):
            current = feed.tick_of(playhead)
        return {
            "id": self.id,
            "kind": "live",
            "path": f"/live/{self.id}",
            "map": meta["map"],
            "tickrate": meta["tickrate"],
            "rate": feed.rate,
            "first_tick": meta["first_tick"],
            "last_tick": meta["last_tick"],
            "frame_count": meta["frame_count"],
            "current_tick": current,
            "playhead_seq": playhead,
            "end_seq": end,
            "epoch": feed.epoch,
            "burst": self.burst,
            "synthetic": meta.get("synthetic", False),
            "subscribers": len(self.subscribers),
            **feed.describe(),
        }

    def hello(self, now: float) -> bytes:
        meta = self.feed.store.meta
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
        return int(self.limits.max_buffer_s * self.feed.rate)

    # -- subscribers -----------------------------------------------------------------------

    def subscribe(
        self,
        sink: Sink,
        buffer: int,
        now: float,
        resume_seq: int | None = None,
        epoch: float | str | None = None,
        options: ConnectionOptions | None = None,
    ) -> tuple[LiveSubscriber, Output]:
        """Add a subscriber at the live edge, or at ``resume_seq`` when that is still possible.

        A ``resume_seq`` older than the resume window, one this stream never reached, or one
        from another ``epoch`` (the stream restarted) starts at the live edge with a skip.
        """
        self.check_request(buffer, resume_seq)
        playhead = max(0, self.feed.playhead(now))
        sub = LiveSubscriber(sink, buffer, playhead, options or PLAIN)
        if resume_seq is not None:
            window = int(self.limits.resume_window_s * self.feed.rate)
            newest = self.feed.available()
            reached = playhead + self.max_buffer + 1 if newest is None else newest
            if (epoch is not None and epoch != self.feed.epoch) or resume_seq > reached:
                self._notify_skip(sub, resume_seq, playhead, "resume_unknown")
            elif playhead - resume_seq > window or resume_seq < self.feed.oldest():
                self._notify_skip(sub, resume_seq, playhead, "resume_window_exceeded")
            else:
                sub.next_seq, sub.catch_up_to, sub.fresh = resume_seq, playhead, False
        self.subscribers.add(sub)
        if self.feed.stale:
            self._queue((-1, _NOTICE, 0, 0), self._stale_message(now), sink)
        self._service(sub, self.feed.playhead(now), now)
        return sub, self._take_output()

    def check_request(self, buffer: int, resume_seq: int | None = None) -> None:
        """Refuse a bad buffer or resume_seq before anything about the subscription changes."""
        if not 0 <= buffer <= self.max_buffer:
            raise protocol.ProtocolError(
                "bad_field", f"buffer must be 0..{self.max_buffer} frames, got {buffer}"
            )
        if resume_seq is not None and resume_seq < 0:
            raise protocol.ProtocolError("bad_field", f"resume_seq must be >= 0, got {resume_seq}")

    def set_buffer(self, sub: LiveSubscriber, buffer: int, now: float) -> Output:
        self.check_request(buffer)
        sub.buffer = buffer
        self._service(sub, self.feed.playhead(now), now)
        return self._take_output()

    def unsubscribe(self, sub: LiveSubscriber) -> None:
        sub.done = True
        self.subscribers.discard(sub)
        self._blocked.discard(sub)

    def close_all(self, code: int, reason: str) -> Output:
        """Close every subscriber (the stream's incarnation is over)."""
        for sub in list(self.subscribers):
            self.unsubscribe(sub)
            self._closes.append((sub.sink, code, reason))
        return self._take_output()

    def replace_feed(self, feed: LiveFeed) -> None:
        """Continue from another feed of the same incarnation (a replica that lost frames starts
        a new segment); subscribers before its first frame are told what they lost."""
        self.feed = feed
        self._cache = BurstCache()  # bursts of the old feed's seqs are no longer its frames

    # -- the stream logic ------------------------------------------------------------------

    def step(self, now: float) -> Output:
        """Serve every subscriber whose next burst became due by ``now``."""
        feed = self.feed
        playhead = feed.playhead(now)
        if feed.stale != self._stale_told:
            self._stale_told = feed.stale
            notice = self._stale_message(now)
            for sub in self.subscribers:
                self._queue((-1, _NOTICE, 0, 0), notice, sub.sink)
        if playhead < self._last_step:  # the clock went backwards; wait for it
            return self._take_output()
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
        return self._take_output()

    def next_wake(self, now: float) -> float | None:
        """When ``step`` has work next: a Unix time, or None until something changes.

        A feed that grows by pushes (a match in play) wakes its driver itself; a recording on a
        clock is due at its next frame time.
        """
        feed = self.feed
        playhead = feed.playhead(now)
        end = feed.end()
        wake = None
        if not feed.pushed and (end is None or playhead < end):
            wake = feed.time_of(playhead + 1)
        if self._blocked:
            wake = now + BLOCKED_POLL_S if wake is None else min(wake, now + BLOCKED_POLL_S)
        return wake

    def _take_output(self) -> Output:
        output = Output(
            sends=[self._outbox[key] for key in sorted(self._outbox)], closes=self._closes
        )
        self._outbox, self._closes = {}, []
        return output

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
            if behind > limits.skip_behind_s * self.feed.rate and (sub.next_seq >= sub.catch_up_to):
                self._notify_skip(sub, sub.next_seq, playhead, "slow_consumer")
        oldest = self.feed.oldest()
        if sub.next_seq < oldest:  # those frames are gone (a broker lost them)
            self._notify_skip(sub, sub.next_seq, oldest, "frames_lost")
        end, available = self.feed.end(), self.feed.available()
        allowed = playhead + 1 + sub.buffer
        if available is not None:
            allowed = min(allowed, available)
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
        if sent_any:
            sub.fresh = False
        if end is not None and sub.next_seq >= end:
            self._queue((end, _END, 0, 0), self._end_message(end), sub.sink)  # after its last burst
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
        data, frames = self.burst_bytes(start, stop, sub.options)
        sub.next_seq = stop
        if frames == 0:  # every Nth frame: none of these
            return 0
        variant = self._variants.setdefault(sub.options, len(self._variants))
        self._queue((start, _BURST, stop, variant), data, sub.sink)
        self.metrics.sent(self.id, frames, len(data))
        due_time = self.feed.time_of(max(start, stop - 1 - sub.buffer))
        self.metrics.observe_lag(max(0.0, now - due_time))
        depicted = getattr(self.feed, "depicted_time", None)
        if depicted is not None:
            self.metrics.observe_delivery_delay(max(0.0, now - depicted(stop - 1)))
        return len(data)

    def _queue(self, key: tuple[int, ...], data: bytes, sink: Sink) -> None:
        entry = self._outbox.get(key)
        if entry is None:
            self._outbox[key] = (data, [sink])
        else:
            entry[1].append(sink)

    def _notify_skip(self, sub: LiveSubscriber, from_seq: int, to_seq: int, reason: str) -> None:
        """Move ``sub`` to ``to_seq`` and tell it how many frames it will never get."""
        skipped = None if reason == "resume_unknown" else to_seq - from_seq
        message = protocol.pack(
            {
                "type": "skip",
                "stream": self.id,
                "from_seq": from_seq,
                "to_seq": to_seq,
                "skipped": skipped,
                "reason": reason,
            }
        )
        self._queue((to_seq, _SKIP, id(sub), 0), message, sub.sink)
        sub.next_seq, sub.fresh = to_seq, True
        self.metrics.skips[self.id] += 1
        self.metrics.skipped_frames[self.id] += skipped or 0

    def _close_slow(self, sub: LiveSubscriber) -> None:
        log.info(
            "stream %s: closing a subscriber stuck for %.0f s", self.id, self.limits.close_after_s
        )
        self.metrics.slow_disconnects[self.id] += 1
        self.unsubscribe(sub)
        self._closes.append(
            (sub.sink, protocol.CLOSE_SLOW_CONSUMER, "too slow: could not keep up with the stream")
        )

    def _stale_message(self, now: float) -> bytes:
        feed = self.feed
        since = getattr(feed, "stale_since", None)
        return protocol.pack(
            {"type": "stale", "stream": self.id, "stale": feed.stale, "since": since, "at": now}
        )

    def _end_message(self, end: int) -> bytes:
        return protocol.pack({"type": "end", "stream": self.id, "seq": end})

    # -- encode once -----------------------------------------------------------------------

    def burst_bytes(
        self, start: int, stop: int, options: ConnectionOptions = PLAIN
    ) -> tuple[bytes, int]:
        """The ``ticks`` message for seqs [start, stop) in ``options``' encoding and shape, and
        how many frames it holds: built once and shared by every subscriber that asked alike."""
        shape, encoding = options.shape, options.encoding
        first = first_kept(start, shape.every)
        count = len(range(first, stop, shape.every))
        if count == 0:
            return b"", 0

        def build() -> bytes:
            frames, _ = shape_frames(
                self.feed.frames_bytes(start, stop), stop - start, shape, start
            )
            fields = {"stream": self.id, "seq": first}
            if shape.every > 1:
                fields["every"] = shape.every
            return encode_ticks(fields, count, frames, encoding, DEFLATE_LEVEL)

        return self._cache.get((start, stop, shape, encoding), build), count
