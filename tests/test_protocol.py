"""Client messages as a hostile client sends them: each gets a clear error, nothing else breaks."""

from __future__ import annotations

import asyncio
import math
import random

import msgpack
import pytest
from websockets.asyncio.client import connect

from server import protocol
from server.protocol import ProtocolError, decode_request
from server.streams.playback import Playback

REPLAY = frozenset(protocol.REQUEST_FIELDS) - {"subscribe", "unsubscribe"}


def nested(depth: int, leaf=0):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def refusal(message, allowed=REPLAY) -> ProtocolError:
    data = message if isinstance(message, bytes | str) else msgpack.packb(message)
    with pytest.raises(ProtocolError) as caught:
        decode_request(data, allowed)
    error = msgpack.unpackb(caught.value.reply())  # the reply always packs
    assert error["type"] == "error" and error["code"] == caught.value.code
    return caught.value


def deep_call(depth: int, function):
    """``function()`` called ``depth`` frames down, as a handler runs inside asyncio."""
    return function() if depth == 0 else deep_call(depth - 1, function)


def test_a_value_nested_980_deep_gets_bad_field_with_a_short_message():
    error = deep_call(60, lambda: refusal({"type": "seek", "tick": nested(980)}))
    assert error.code == "bad_field"
    assert "'tick' must be int" in error.message
    assert len(error.message) < 200


def test_a_long_or_deep_unknown_type_gets_a_short_message():
    assert len(refusal({"type": "x" * 15000}).message) < 400


def test_an_id_that_cannot_be_echoed_is_refused_without_echoing_it():
    for bad_id in (nested(980), {"a": 1}, [1, 2], "x" * 1000):
        error = deep_call(60, lambda bad_id=bad_id: refusal({"type": "ping", "id": bad_id}))
        assert error.code == "bad_field" and error.request_id is None
    for good_id in (None, 7, -(2**63), 2**64 - 1, 1.5, "req-1", b"\x00" * 16, True):
        assert decode_request(msgpack.packb({"type": "ping", "id": good_id}), REPLAY).id == good_id


@pytest.mark.parametrize("tick", [2**63, 2**64 - 1])  # msgpack ints end at -(2**63)
def test_ints_beyond_64_bits_get_bad_field(tick):
    assert refusal({"type": "seek", "tick": tick}).code == "bad_field"


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_numbers_get_bad_field(value):
    assert refusal({"type": "seek", "time": value}).code == "bad_field"


def test_messages_nested_past_msgpacks_limit_get_bad_message():
    too_deep = b"\x91" * 5000 + b"\x00"
    assert refusal(too_deep).code == "bad_message"


@pytest.mark.parametrize("seconds", [1e308, -1e308, 1e19, -0.001])
def test_seek_far_outside_the_recording_gets_out_of_range(make_recording, seconds):
    playback = Playback("m", make_recording(640), buffer=0, now=0.0)
    request = decode_request(msgpack.packb({"type": "seek", "time": seconds}), REPLAY)
    with pytest.raises(ProtocolError) as caught:
        playback.seek_time(request["time"], 0.0)
    assert caught.value.code == "out_of_range"


def test_seek_to_the_very_end_by_time_lands_on_the_last_frame(make_recording):
    recording = make_recording(640)
    playback = Playback("m", recording, buffer=0, now=0.0)
    duration = (recording.meta["last_tick"] - recording.meta["first_tick"]) / 64
    state = msgpack.unpackb(playback.seek_time(duration, 0.0)[0])
    assert state["tick"] == recording.meta["last_tick"]


def test_internal_error_reply():
    reply = msgpack.unpackb(protocol.internal_error(request=12))
    assert reply["type"] == "error" and reply["code"] == "internal_error"
    assert reply["request"] == 12 and reply["message"]
    assert "request" not in msgpack.unpackb(protocol.internal_error())


def test_random_and_mutated_messages_only_ever_raise_protocol_errors():
    rng = random.Random(12)
    seeds = [msgpack.packb(m) for m in (
        {"type": "seek", "time": 2.5, "id": 1}, {"type": "fetch", "from_tick": 1, "to_tick": 9},
        {"type": "speed", "value": 2}, {"type": "credit", "frames": 64}, {"type": "ping"},
    )]  # fmt: skip
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            if not data:
                break
            kind = rng.randrange(3)
            at = rng.randrange(len(data))
            if kind == 0:
                data[at] = rng.randrange(256)
            elif kind == 1:
                del data[at:]
            else:
                data[at:at] = rng.randbytes(rng.randrange(1, 8))
        try:
            request = decode_request(bytes(data), REPLAY)
        except ProtocolError as exc:
            msgpack.unpackb(exc.reply())
        else:
            assert request.type in REPLAY


def test_legacy_text_that_is_not_a_request_parses_to_none():
    assert protocol.decode_legacy('{"request": "more ticks"}') == {"request": "more ticks"}
    deep = "[" * 100_000 + "]" * 100_000
    for text in ("[" * 5000 + "]" * 5000, deep[:16000], "{", b"\xff", " " * 20_000):
        assert deep_call(60, lambda text=text: protocol.decode_legacy(text)) is None


# -- over a real server ------------------------------------------------------------------------


async def test_a_replay_session_answers_each_hostile_request_and_goes_on(start_app, write_tiny):
    write_tiny("match", count=640)
    app = await start_app(live=["match"])
    async with connect(f"ws://127.0.0.1:{app.port}/replay/match") as ws:
        for message, code in [
            ({"type": "seek", "time": 1e308}, "out_of_range"),
            ({"type": "seek", "tick": nested(980)}, "bad_field"),
            ({"type": "speed", "value": nested(980, 1.0)}, "bad_field"),
            ({"type": "seek", "tick": 2**64 - 1}, "bad_field"),
            ({"type": "ping", "id": nested(980)}, "bad_field"),
        ]:
            await ws.send(msgpack.packb(message))
            await ws.send(msgpack.packb({"type": "ping", "id": "after"}))
            got = [await _until(ws, "error"), await _until(ws, "pong")]
            assert got[0]["code"] == code
            assert got[1]["id"] == "after"


async def _until(ws, kind: str) -> dict:
    while True:
        message = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5.0))
        if message["type"] == kind:
            return message
