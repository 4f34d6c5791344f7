"""The live stream logic, driven by a fake clock and fake sinks: no sockets, no sleeping."""

from __future__ import annotations

import msgpack
import pytest

from server.metrics import Metrics
from server.protocol import CLOSE_SLOW_CONSUMER, ProtocolError
from server.streams.live import BLOCKED_POLL_S, FlowLimits, LiveStream
from server.streams.timeline import Timeline
from server.transport import perform

RATE = 64.0


class FakeSink:
    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.backlog = 0  # bytes "not yet sent"; tests raise it to simulate a slow client
        self.closed: tuple[int, str] | None = None
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.messages.append(msgpack.unpackb(data))
        self.writes += 1

    def buffered(self) -> int:
        return self.backlog

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    @property
    def is_open(self) -> bool:
        return self.closed is None

    def ticks(self) -> list[int]:
        return [f["tick"] for m in self.messages if m["type"] == "ticks" for f in m["frames"]]

    def seqs(self) -> list[int]:
        out = []
        for m in self.messages:
            if m["type"] == "ticks":
                out.extend(range(m["seq"], m["seq"] + len(m["frames"])))
        return out


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Driven:
    """A LiveStream whose decisions are performed on fake sinks at once, as the driver does."""

    def __init__(self, stream: LiveStream, clock: Clock) -> None:
        self.stream, self.clock = stream, clock
        self.timeline = stream.feed

    def subscribe(self, sink, buffer, resume_seq=None):
        sub, output = self.stream.subscribe(sink, buffer, self.clock.now, resume_seq)
        perform(output)
        return sub

    def step(self, now):
        perform(self.stream.step(now))

    def __getattr__(self, name):
        return getattr(self.stream, name)


def make_stream(recording, clock, loop=False, every=1, limits=None, burst=8):
    timeline = Timeline(recording, epoch=clock.now, every=every, loop=loop)
    return Driven(LiveStream("s", timeline, Metrics(), burst=burst, limits=limits), clock)


def advance(stream, clock, frames: int) -> None:
    for _ in range(frames):
        clock.now += 1 / RATE
        stream.step(clock.now)


def test_subscriber_gets_consecutive_frames_never_beyond_its_buffer(make_recording):
    rec, clock = make_recording(1000), Clock()
    stream = make_stream(rec, clock)
    sink = FakeSink()
    stream.subscribe(sink, buffer=32)
    for _ in range(300):
        clock.now += 1 / RATE
        stream.step(clock.now)
        playhead = stream.timeline.playhead(clock.now)
        assert max(sink.seqs()) <= playhead + 32
    seqs = sink.seqs()
    assert seqs == list(range(len(seqs)))
    assert len(seqs) >= 300 + 32 - 8  # kept filled to within one burst
    assert sink.ticks() == [int(t) for t in rec.ticks[: len(seqs)]]


@pytest.mark.parametrize("new_buffer", [16, 17, 40, 0])
def test_a_buffer_change_never_sends_a_frame_twice(make_recording, new_buffer):
    """Changing the buffer reschedules the subscriber, once: the same buffer again (the same
    due step) or another one, it gets every frame exactly once."""
    rec, clock = make_recording(1000), Clock()
    stream = make_stream(rec, clock)
    sink = FakeSink()
    sub = stream.subscribe(sink, buffer=16)
    for i in range(200):
        clock.now += 1 / RATE
        if i in (10, 90):
            perform(stream.set_buffer(sub, new_buffer if i == 10 else 16, clock.now))
        stream.step(clock.now)
    seqs = sink.seqs()
    assert seqs == list(range(len(seqs))) and len(seqs) >= 200


@pytest.mark.parametrize(("buffer", "burst"), [(32, 8), (64, 16)])
def test_bursts_are_shared_bytes_and_aligned(make_recording, buffer, burst):
    """Bursts of 8; of 16 for a subscriber that holds a second or more."""
    rec, clock = make_recording(1000), Clock()
    stream = make_stream(rec, clock)
    sinks = [FakeSink() for _ in range(3)]
    for sink in sinks:
        stream.subscribe(sink, buffer=buffer)
    advance(stream, clock, 100)
    first = [m for m in sinks[0].messages if m["type"] == "ticks"]
    assert all(m["seq"] % burst == 0 and len(m["frames"]) == burst for m in first[1:])
    assert len(first) > 3
    assert sinks[0].messages == sinks[1].messages == sinks[2].messages
    assert len(stream._cache) <= 256


def test_late_joiner_starts_at_the_live_edge(make_recording):
    rec, clock = make_recording(1000), Clock()
    stream = make_stream(rec, clock)
    advance(stream, clock, 205)
    sink = FakeSink()
    stream.subscribe(sink, buffer=0)
    assert sink.seqs() == [205]  # the current frame at once, even with no buffer
    advance(stream, clock, 20)
    assert sink.seqs() == list(range(205, 224))  # then bursts as each becomes due


def test_every_nth_frame_keeps_real_time(make_recording):
    rec, clock = make_recording(1000), Clock()
    stream = make_stream(rec, clock, every=4)
    sink = FakeSink()
    stream.subscribe(sink, buffer=0)
    advance(stream, clock, 64)  # one second: 16 frames at rate 16/s
    assert sink.ticks()[:3] == [int(rec.ticks[0]), int(rec.ticks[4]), int(rec.ticks[8])]
    assert stream.timeline.playhead(clock.now) == 16


def test_end_of_stream_and_loop(make_recording):
    rec, clock = make_recording(100), Clock()
    once, looping = make_stream(rec, clock), make_stream(rec, clock, loop=True)
    a, b = FakeSink(), FakeSink()
    once.subscribe(a, buffer=16)
    looping.subscribe(b, buffer=16)
    for _ in range(150):
        clock.now += 1 / RATE
        once.step(clock.now)
        looping.step(clock.now)
    assert a.seqs() == list(range(100)) and a.messages[-1]["type"] == "end"
    assert b.ticks()[:150] == [int(t) for t in rec.ticks] + [int(t) for t in rec.ticks[:50]]


def test_slow_client_is_skipped_then_closed_without_slowing_others(make_recording):
    rec, clock = make_recording(5000), Clock()
    limits = FlowLimits(high_water=1000, low_water=100, skip_behind_s=1.0, close_after_s=5.0)
    stream = make_stream(rec, clock, limits=limits)
    slow, fast = FakeSink(), FakeSink()
    stream.subscribe(slow, buffer=16)
    stream.subscribe(fast, buffer=16)
    slow.backlog = 5000  # stops reading
    advance(stream, clock, 3 * 64)
    writes_while_blocked = slow.writes
    advance(stream, clock, 64)
    assert slow.writes == writes_while_blocked  # nothing more queued for it
    slow.backlog = 0  # drains: it is behind by > 1 s, so it jumps to the live edge
    advance(stream, clock, 1)
    skip = next(m for m in slow.messages if m["type"] == "skip")
    assert skip["reason"] == "slow_consumer" and skip["skipped"] > 64
    assert slow.seqs()[-1] >= stream.timeline.playhead(clock.now)
    slow.backlog = 5000  # and gets stuck for good
    advance(stream, clock, int(6 * RATE))
    assert slow.closed is not None and slow.closed[0] == CLOSE_SLOW_CONSUMER
    # The fast client was never held back: consecutive, and filled to its buffer.
    seqs = fast.seqs()
    assert seqs == list(range(len(seqs)))
    assert seqs[-1] >= stream.timeline.playhead(clock.now) + 16 - 8


def test_resume_within_window_replays_missed_frames(make_recording):
    rec, clock = make_recording(5000), Clock()
    stream = make_stream(rec, clock)
    first = FakeSink()
    sub = stream.subscribe(first, buffer=16)
    advance(stream, clock, 100)
    stream.unsubscribe(sub)
    last_seq = first.seqs()[-1]
    advance(stream, clock, 300)  # disconnected for ~5 s
    second = FakeSink()
    stream.subscribe(second, buffer=16, resume_seq=last_seq + 1)
    advance(stream, clock, 10)
    assert first.seqs() + second.seqs() == list(range(len(first.seqs() + second.seqs())))


def test_resume_beyond_window_reports_lost_frames(make_recording):
    rec, clock = make_recording(5000), Clock()
    stream = make_stream(rec, clock, limits=FlowLimits(resume_window_s=2.0))
    advance(stream, clock, 400)
    sink = FakeSink()
    stream.subscribe(sink, buffer=16, resume_seq=10)
    skip = sink.messages[0]
    assert skip["type"] == "skip" and skip["reason"] == "resume_window_exceeded"
    assert skip["skipped"] == 400 - 10
    assert sink.seqs()[0] == 400


def test_buffer_limits_are_enforced(make_recording):
    rec, clock = make_recording(100), Clock()
    stream = make_stream(rec, clock)
    with pytest.raises(ProtocolError):
        stream.subscribe(FakeSink(), buffer=-1)
    with pytest.raises(ProtocolError):
        stream.subscribe(FakeSink(), buffer=stream.max_buffer + 1)


def test_resume_from_another_epoch_starts_at_the_live_edge(make_recording):
    rec, clock = make_recording(5000), Clock()
    stream = make_stream(rec, clock)
    advance(stream, clock, 100)
    sink = FakeSink()
    stream.subscribe(sink, buffer=16, resume_seq=10**6)  # a seq this timeline never reached
    skip = sink.messages[0]
    assert (skip["type"], skip["reason"], skip["skipped"]) == ("skip", "resume_unknown", None)
    assert sink.seqs()[0] == 100
    with pytest.raises(ProtocolError):
        stream.subscribe(FakeSink(), buffer=16, resume_seq=-5)


def test_a_clock_stepping_back_does_not_lose_subscribers(make_recording):
    rec, clock = make_recording(5000), Clock()
    stream = make_stream(rec, clock)
    advance(stream, clock, 100)
    clock.now -= 1.0  # the wall clock steps back a second
    sink = FakeSink()
    stream.subscribe(sink, buffer=16)
    advance(stream, clock, 200)
    seqs = sink.seqs()
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert seqs[-1] >= stream.timeline.playhead(clock.now) + 16 - 8


def test_an_ended_stream_sleeps_and_polls_only_blocked_subscribers(make_recording):
    rec, clock = make_recording(64), Clock()
    stream = make_stream(rec, clock, limits=FlowLimits(close_after_s=60))
    sink = FakeSink()
    stream.subscribe(sink, buffer=8)
    sink.backlog = 10**9  # blocked for good
    advance(stream, clock, 80)  # the 64-frame stream ends after 1 s
    assert stream.feed.ended(stream.feed.playhead(clock.now))
    assert stream.next_wake(clock.now) == pytest.approx(clock.now + BLOCKED_POLL_S)
    stream.unsubscribe(next(iter(stream.subscribers)))
    assert stream.next_wake(clock.now) is None  # nothing to do until someone subscribes


def test_a_live_feed_wakes_nobody_by_the_clock_and_ends_its_subscribers():
    from server.streams.feed import GrowingFeed
    from server.streams.store import GrowingStore

    clock = Clock()
    store = GrowingStore("m", {"map": "de_mirage", "tickrate": RATE, "teams": {}})
    feed = GrowingFeed(store, epoch=clock.now)
    stream = Driven(LiveStream("m", feed, Metrics(), burst=8), clock)
    early = FakeSink()
    stream.subscribe(early, buffer=64)  # before the first frame: waits for it
    for tick in range(20):
        clock.now += 1 / RATE
        feed.append({"tick": tick, "players": []}, clock.now, clock.now - 0.5)
        stream.step(clock.now)
        assert stream.next_wake(clock.now) is None  # frames come by push, not by the clock
    assert early.seqs() == list(range(16))  # whole bursts only, as they fill
    late = FakeSink()
    stream.subscribe(late, buffer=64)
    assert late.seqs() == [19]  # joins at the newest frame at once
    feed.set_stale(True, clock.now)
    stream.step(clock.now)
    assert [m["stale"] for m in early.messages if m["type"] == "stale"] == [True]
    store.finish()
    stream.step(clock.now)
    assert early.seqs() == list(range(20)) and early.messages[-1] == {
        "type": "end", "stream": "m", "seq": 20
    }  # fmt: skip
    assert not stream.subscribers


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 300_000])
def test_prepared_frames_match_what_websockets_would_send(size):
    from websockets.frames import Frame, Opcode

    from server.protocol import binary_frame

    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    assert binary_frame(payload) == Frame(Opcode.BINARY, payload).serialize(mask=False)


def test_the_stream_logic_knows_no_sockets_clocks_or_event_loops():
    from pathlib import Path

    import server.streams

    for module in Path(server.streams.__file__).parent.glob("*.py"):
        source = module.read_text()
        for banned in ("import asyncio", "import websockets", "from websockets", "import time"):
            assert banned not in source, f"{module.name} uses {banned!r}"


def test_a_new_segment_tells_subscribers_what_was_lost():
    """A replica whose broker lost frames continues from a feed that starts later."""
    from server.streams.feed import GrowingFeed
    from server.streams.store import GrowingStore

    def feed_from(first: int, count: int) -> GrowingFeed:
        store = GrowingStore("m", {"map": "de_mirage", "tickrate": RATE, "teams": {}})
        feed = GrowingFeed(store, epoch=1.0, base_seq=first)
        for seq in range(first, first + count):
            feed.append({"tick": seq, "players": []}, 0.0, 0.0)
        return feed

    clock = Clock()
    stream = Driven(LiveStream("m", feed_from(0, 16), Metrics(), burst=8), clock)
    sink = FakeSink()
    stream.subscribe(sink, buffer=64)
    assert sink.seqs() == [15]  # joined at the newest frame
    stream.replace_feed(feed_from(40, 16))  # seqs 16..39 never reached this replica
    stream.step(clock.now)
    (skip,) = [m for m in sink.messages if m["type"] == "skip"]
    assert (skip["reason"], skip["from_seq"], skip["to_seq"], skip["skipped"]) == (
        "frames_lost", 16, 40, 24
    )  # fmt: skip
    assert sink.seqs()[1:] == list(range(40, 56)) and sink.ticks()[1:] == list(range(40, 56))
    late = FakeSink()
    stream.subscribe(late, buffer=64)
    assert not [m for m in late.messages if m["type"] == "skip"]  # a newcomer lost nothing
