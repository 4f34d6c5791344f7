"""Replay sessions and range fetch as pure state machines: a fake clock, no sockets."""

from __future__ import annotations

import random

import msgpack
import pytest

from server.protocol import ProtocolError
from server.streams.fetch import Fetch
from server.streams.playback import Playback


def decode(messages: list[bytes]) -> list[dict]:
    return [msgpack.unpackb(m) for m in messages]


def frames_of(messages: list[bytes]) -> list[dict]:
    return [f for m in decode(messages) if m["type"] == "ticks" for f in m["frames"]]


def play_for(playback: Playback, start: float, seconds: float, step: float = 0.005):
    """Poll like the session loop does; return (time, frame) pairs."""
    out, now = [], start
    while now < start + seconds:
        messages, _ = playback.poll(now)
        out.extend((now, f) for f in frames_of(messages))
        now += step
    return out


def test_seek_to_random_ticks_returns_exactly_that_tick(make_recording):
    rec = make_recording(2000, step=2)  # ticks 100, 102, ...
    playback = Playback("r", rec, buffer=64, now=0.0)
    rng = random.Random(7)
    for _ in range(50):
        index = rng.randrange(rec.frame_count)
        tick = int(rec.ticks[index])
        messages = decode(playback.seek_tick(tick, now=1.0))
        state, first = messages[0], messages[1]
        assert state["type"] == "state" and state["tick"] == tick
        assert first["frames"][0]["tick"] == tick and first["gen"] == state["gen"]


def test_seek_between_ticks_shows_the_frame_before(make_recording):
    rec = make_recording(100, step=2)
    playback = Playback("r", rec, buffer=0, now=0.0)
    messages = decode(playback.seek_tick(int(rec.ticks[10]) + 1, now=0.0))
    assert messages[1]["frames"][0]["tick"] == int(rec.ticks[10])


def test_speed_changes_the_pace(make_recording):
    rec = make_recording(3000)
    rates = {}
    for speed in (0.5, 1.0, 2.0, 8.0):
        playback = Playback("r", rec, buffer=0, now=0.0)
        playback.set_speed(speed, 0.0)
        got = frames_of(playback.play(0.0)) + [f for _, f in play_for(playback, 0.0, 1.0)]
        rates[speed] = len(got)
    for speed, count in rates.items():
        assert count == pytest.approx(64 * speed, abs=8 + 0.1 * 64 * speed)


def test_pause_stops_frames_and_resume_continues(make_recording):
    rec = make_recording(3000)
    playback = Playback("r", rec, buffer=8, now=0.0)
    ticks = [f["tick"] for f in frames_of(playback.play(0.0))]
    ticks += [f["tick"] for _, f in play_for(playback, 0.0, 0.5)]
    assert frames_of(playback.pause(0.5)) == []
    assert play_for(playback, 0.5, 1.0) == []
    ticks += [f["tick"] for f in frames_of(playback.play(1.5))]
    ticks += [f["tick"] for _, f in play_for(playback, 1.5, 0.5)]
    assert ticks == list(range(100, 100 + len(ticks)))  # nothing lost or repeated
    assert len(ticks) == pytest.approx(64 + 8, abs=4)


def test_never_more_than_the_buffer_ahead(make_recording):
    rec = make_recording(3000)
    playback = Playback("r", rec, buffer=20, now=0.0)
    playback.play(0.0)
    for now, frame in play_for(playback, 0.0, 2.0):
        on_screen = playback.ticks[0] + now * 64
        assert frame["tick"] <= on_screen + 20 + 1


def test_step_and_round_seek_and_errors(make_recording):
    rec = make_recording(1200)  # round starts every 500 frames: ticks 100, 600, 1100
    playback = Playback("r", rec, buffer=0, now=0.0)
    assert decode(playback.seek_round(2, 0.0))[0]["tick"] == 600
    assert frames_of(playback.step(1, 0.0))[0]["tick"] == 601
    assert frames_of(playback.step(-2, 0.0))[0]["tick"] == 599
    assert decode(playback.seek_time(2.0, 0.0))[0]["tick"] == 100 + 128
    for bad in (lambda: playback.seek_tick(5, 0.0), lambda: playback.seek_round(9, 0.0)):
        with pytest.raises(ProtocolError) as err:
            bad()
        assert err.value.code == "out_of_range"
    for speed in (-1.0, 0.0, 0.1, 16.0):
        with pytest.raises(ProtocolError) as err:
            playback.set_speed(speed, 0.0)
        assert err.value.code == "bad_speed"


def test_playing_to_the_end_ends_and_pauses(make_recording):
    rec = make_recording(64)
    playback = Playback("r", rec, buffer=16, now=0.0)
    messages = decode(playback.play(0.0))[1:]
    now = 0.0
    while now < 2.0:
        messages.extend(decode(playback.poll(now)[0]))
        now += 0.01
    assert [f["tick"] for m in messages if m["type"] == "ticks" for f in m["frames"]] == [
        int(t) for t in rec.ticks
    ]
    assert messages[-2]["type"] == "end" and messages[-1]["state"] == "ended"


def test_fetch_respects_credit_and_matches_the_recording(make_recording):
    rec = make_recording(3000, step=3)
    rng = random.Random(3)
    for _ in range(20):
        a, b = sorted(rng.randrange(rec.frame_count) for _ in range(2))
        fetch = Fetch("r", rec, int(rec.ticks[a]), int(rec.ticks[b]), credit=100)
        got, in_flight = [], 0
        while not fetch.done:
            message = fetch.next_message()
            if message is None:  # out of credit: the client consumed and grants more
                assert in_flight <= 100
                fetch.add_credit(in_flight)
                in_flight = 0
                continue
            frames = msgpack.unpackb(message)["frames"]
            in_flight += len(frames)
            got.extend(frames)
        assert got == rec.frames(a, b + 1)
        end = msgpack.unpackb(fetch.end_message())
        assert end["count"] == b + 1 - a and end["last_tick"] == int(rec.ticks[b])


def test_fetch_resume_after_continues_exactly_once(make_recording):
    rec = make_recording(1000)
    fetch = Fetch("r", rec, 100, 1099, credit=10_000, resume_after=499)
    first = msgpack.unpackb(fetch.next_message())["frames"][0]
    assert first["tick"] == 500


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ((5000, 6000, 10), "out_of_range"),
        ((600, 500, 10), "bad_range"),
        ((100, 200, 0), "bad_field"),
    ],
)
def test_fetch_bad_requests(make_recording, args, code):
    rec = make_recording(1000)
    with pytest.raises(ProtocolError) as err:
        Fetch("r", rec, *args)
    assert err.value.code == code
