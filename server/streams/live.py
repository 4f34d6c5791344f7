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
from dataclasses import dataclass, field, replace
from typing import Any

from server import protocol
from server.config import MAX_BUFFER_S
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

    # Bytes queued in user space for a client before it is considered blocked (the kernel's
    # socket buffer holds the rest): two bursts of 16 plain frames, bounding a slow client's
    # memory (docs/deploy.md, "Sizing").
    high_water: int = 128 * 1024
    low_water: int = 32 * 1024  # a blocked client resumes below this
    skip_behind_s: float = 1.0  # a client this far behind once it drains jumps to the edge
    close_after_s: float = 10.0  # a client blocked this long is closed
    max_buffer_s: float = MAX_BUFFER_S  # largest buffer a client may ask for
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
    variant: int = 0  # the stream's number for its options: equal options, equal number
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
        self.closed = False  # this incarnation is over (close_all)
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

    def burst_for(self, buffer: int) -> int:
        """Frames per message for a subscriber ``buffer`` frames ahead: twice ``burst`` for one
        that holds a second or more of a recorded stream (half the messages and writes, and
        compression works on twice the frames; it waits for them anyway). A live match keeps
        ``burst``: there every frame is as new as the game, and waiting adds delay."""
        if self.feed.pushed or buffer < self.feed.rate:
            return self.burst
        return 2 * self.burst

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
        playhead = max(0, self.feed.oldest(), self.feed.playhead(now))
        options = options or PLAIN
        variant = self._variants.setdefault(options, len(self._variants))
        sub = LiveSubscriber(sink, buffer, playhead, options, variant)
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
        self.closed = True  # for readers that are not subscribers (the legacy adapter)
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
            due = self._due.pop(key, None)
            if due:
                self._serve_due(key, due, playhead, now)
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

    def _serve_due(self, key: int, subs: list[LiveSubscriber], playhead: int, now: float) -> None:
        """Serve the subscribers due at ``key``. Those in the same state (next seq, buffer and
        options; neither fresh nor blocked) get the same bursts, so the bursts are planned once
        per group and what each member costs is a look at its socket and an append."""
        groups: dict[tuple[int, int, int], list[LiveSubscriber]] = {}
        for sub in subs:
            if sub.due != key or sub.done:
                continue  # rescheduled since (a buffer change), or gone
            sub.due = -1  # taken: a second entry for it in this bucket is passed over
            if sub.fresh or sub.blocked_since is not None:
                self._service(sub, playhead, now)
            else:  # the variant, not the options: hashing those per subscriber costs more
                groups.setdefault((sub.next_seq, sub.buffer, sub.variant), []).append(sub)
        for (next_seq, buffer, _), members in groups.items():
            options = members[0].options
            if len(members) == 1 or not self._serve_group(
                members, next_seq, buffer, options, playhead, now
            ):
                for sub in members:
                    self._service(sub, playhead, now)

    def _serve_group(
        self,
        members: list[LiveSubscriber],
        next_seq: int,
        buffer: int,
        options: ConnectionOptions,
        playhead: int,
        now: float,
    ) -> bool:
        """What ``_service`` does, once for subscribers in one state. Returns False, having done
        nothing, when the group has a skip or the end ahead (the per-subscriber path handles
        those); a member that would block on the way goes through ``_service`` alone."""
        feed = self.feed
        if next_seq < feed.oldest():
            return False
        end, available = feed.end(), feed.available()
        allowed = playhead + 1 + buffer
        if available is not None:
            allowed = min(allowed, available)
        seq, messages, total = next_seq, [], 0
        burst = self.burst_for(buffer)
        while seq < allowed:
            stop = (seq // burst + 1) * burst
            if end is not None:
                stop = min(stop, end)
            if stop > allowed:
                break
            data, frames = self.burst_bytes(seq, stop, options)
            if frames:
                messages.append((seq, stop, data, frames))
                total += len(data)
            seq = stop
        if end is not None and seq >= end:
            return False
        next_stop = (seq // burst + 1) * burst
        if end is not None:
            next_stop = min(next_stop, end)
        due = max(playhead + 1, self._last_step + 1, next_stop - 1 - buffer)
        room = self.limits.high_water - total  # below it, no burst of the plan blocks a member
        served: list[LiveSubscriber] = []
        for sub in members:
            sink = sub.sink
            if not sink.is_open:
                self.unsubscribe(sub)
            elif total and sink.buffered() >= room:
                self._service(sub, playhead, now)
            else:
                sub.next_seq, sub.due = seq, due
                served.append(sub)
        if not served:
            return True
        self._due.setdefault(due, []).extend(served)
        sinks = [sub.sink for sub in served]
        count = len(served)
        variant = self._variants.setdefault(options, len(self._variants))
        for start, stop, data, frames in messages:
            key = (start, _BURST, stop, variant)
            entry = self._outbox.get(key)
            if entry is None:
                self._outbox[key] = (data, sinks.copy())
            else:
                entry[1].extend(sinks)
            self.metrics.sent(self.id, frames * count, len(data) * count, count)
            due_time = feed.time_of(max(start, stop - 1 - buffer))
            self.metrics.observe_lag(max(0.0, now - due_time), count)
            depicted = feed.depicted_time(stop - 1)
            if depicted is not None:
                self.metrics.observe_delivery_delay(max(0.0, now - depicted), count)
        return True

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
        burst = self.burst_for(sub.buffer)
        sent_any = False
        if sub.fresh and sub.options.shape.every > 1 and sub.next_seq < allowed:
            # The current frame at once whatever its seq: every-Nth starts from full state.
            queued += self._send(sub, sub.next_seq, sub.next_seq + 1, now, whole=True)
            sent_any = True
        while sub.next_seq < allowed:
            stop = (sub.next_seq // burst + 1) * burst
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
        next_stop = (sub.next_seq // burst + 1) * burst
        if end is not None:
            next_stop = min(next_stop, end)
        # Never at or before the last step: those buckets are not visited again.
        sub.due = max(playhead + 1, self._last_step + 1, next_stop - 1 - sub.buffer)
        self._due.setdefault(sub.due, []).append(sub)

    def _send(
        self, sub: LiveSubscriber, start: int, stop: int, now: float, whole: bool = False
    ) -> int:
        """Queue frames [start, stop) for ``sub``; returns the message size. ``whole``: every
        frame of the range, whatever the subscriber's every-Nth."""
        options = sub.options
        if whole:
            options = replace(options, shape=replace(options.shape, every=1))
        data, frames = self.burst_bytes(start, stop, options)
        sub.next_seq = stop
        if frames == 0:  # every Nth frame: none of these
            return 0
        variant = self._variants.setdefault(options, len(self._variants))
        self._queue((start, _BURST, stop, variant), data, sub.sink)
        self.metrics.sent(self.id, frames, len(data))
        due_time = self.feed.time_of(max(start, stop - 1 - sub.buffer))
        self.metrics.observe_lag(max(0.0, now - due_time))
        depicted = self.feed.depicted_time(stop - 1)
        if depicted is not None:
            self.metrics.observe_delivery_delay(max(0.0, now - depicted))
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
        return protocol.pack(
            {"type": "stale", "stream": self.id, "stale": feed.stale, "since": feed.stale_since,
             "at": now}
        )  # fmt: skip

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
